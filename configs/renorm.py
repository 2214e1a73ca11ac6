r"""Batch renormalization (Ioffe 2017), pre-activation, with the paper's r_max /
d_max schedule scaled to the run (configs/default.py).

  python main.py --config=configs/renorm.py --workdir=runs/renorm

Measured: ema eval accuracy .0881 / .1151; PreciseBN eval accuracy .3837 /
.3501 after epochs 1-2 on CIFAR-10 (README, "The other normalizers").
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.norm = 'batch_renorm'
  config.model.placement = 'pre_act'
  config.eval_stats = 'ema,precise'
  return config
