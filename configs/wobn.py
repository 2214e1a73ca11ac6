r"""The seed CNN on CIFAR-10 without BatchNorm.

  python main.py --config=configs/wobn.py --workdir=runs/wobn

Measured: MEASURED_WOBN
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.norm = 'none'
  return config
