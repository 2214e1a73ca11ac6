r"""Ghost batch norm (Hoffer et al. 2017): the seed's batch of 2500 normalized
in ghost batches of 250, pre-activation; eval with running averages and
PreciseBN.

  python main.py --config=configs/ghost.py --workdir=runs/ghost

Measured: ema eval accuracy .1326 / .1213; PreciseBN eval accuracy .5371 /
.5969 after epochs 1-2 on CIFAR-10 (README, "The other normalizers").
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.norm = 'ghost_batch'
  config.model.placement = 'pre_act'
  config.model.virtual_batch_size = 250
  config.eval_stats = 'ema,precise'
  return config
