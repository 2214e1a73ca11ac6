r"""Layer norm, pre-activation: statistics per example over (H, W, C).

  python main.py --config=configs/layer.py --workdir=runs/layer

Measured (docs/results/first_runs/README.md; 2 epochs on a 2-core CPU):
eval accuracy 0.317 after 2 epochs.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.norm = 'layer'
  config.model.placement = 'pre_act'
  return config
