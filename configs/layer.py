r"""Layer norm, pre-activation: statistics per example over (H, W, C).

  python main.py --config=configs/layer.py --workdir=runs/layer

Measured: ema eval accuracy .1639 / .3061 after epochs 1-2 on CIFAR-10 (README,
"The other normalizers").
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.norm = 'layer'
  config.model.placement = 'pre_act'
  return config
