r"""The seed CNN with BN where Ioffe & Szegedy put it: conv/dense (no bias) ->
BN -> ReLU, no BN on the raw image or before the logits.

  python main.py --config=configs/wbn_pre_act.py --workdir=runs/wbn_pre_act

Measured: ema eval accuracy .1208 / .1358; PreciseBN eval accuracy .5394 /
.5974 after epochs 1-2 on CIFAR-10 (README, "The other normalizers").
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.norm = 'batch'
  config.model.placement = 'pre_act'
  config.eval_stats = 'ema,precise'
  return config
