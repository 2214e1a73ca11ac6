r"""Group norm (Wu & He 2018), pre-activation, 10 groups (the paper's 32 divides
none of the seed's widths). No running statistics: train and eval agree.

  python main.py --config=configs/group.py --workdir=runs/group

Measured (docs/results/first_runs/README.md; 2 epochs on a 2-core CPU):
eval accuracy 0.363 after 2 epochs.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.norm = 'group'
  config.model.placement = 'pre_act'
  config.model.num_groups = 10
  return config
