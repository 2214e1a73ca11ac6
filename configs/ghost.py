r"""Ghost batch norm (Hoffer et al. 2017): the seed's batch of 2500 normalized
in ghost batches of 250, pre-activation; eval with running averages and
PreciseBN.

  python main.py --config=configs/ghost.py --workdir=runs/ghost

Measured (docs/results/first_runs/README.md; 2 epochs on a 2-core CPU):
eval accuracy after 2 epochs 0.100 with the running averages, 0.593 with
PreciseBN.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.norm = 'ghost_batch'
  config.model.placement = 'pre_act'
  config.model.virtual_batch_size = 250
  config.eval_stats = 'ema,precise'
  return config
