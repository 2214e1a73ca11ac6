r"""Group norm (Wu & He 2018), pre-activation, 10 groups (the paper's 32 divides
none of the seed's widths). No running statistics: train and eval agree.

  python main.py --config=configs/group.py --workdir=runs/group

Measured: ema eval accuracy .1863 / .3680 after epochs 1-2 on CIFAR-10 (README,
"The other normalizers").
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.norm = 'group'
  config.model.placement = 'pre_act'
  config.model.num_groups = 10
  return config
