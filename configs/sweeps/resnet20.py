r"""ResNet-20 (configs/resnet20.py) with BN and without any norm, 15 epochs.

  python -m bn_study.sweep --sweep=configs/sweeps/resnet20.py --workdir=runs/resnet20 --parallel=2
  python -m bn_study.report runs/resnet20 --out=docs/results/resnet20/report

He et al.'s recipe compressed into `epochs` (its lr steps at 50% and 75% of
the run). Without a norm the network diverged within its first 50 steps at
the paper's 0.1 (docs/results/resnet20/README.md), so that arm runs at 0.01,
which it survives. `resnet20.py:epochs=N,seeds=N` changes the budget.
"""

from bn_study import sweep

CONFIG = 'configs/resnet20.py'


def get_sweep(arg=''):
  args = sweep.parse_arg(arg, {'epochs': 15, 'seeds': 1}, 'resnet20')
  arms = sweep.zipped(sweep.values('model.norm', ['batch', 'none']),
                      sweep.values('learning_rate', [0.1, 0.01]))
  return sweep.product(arms, sweep.values('num_epochs', [args['epochs']]),
                       sweep.values('seed', list(range(args['seeds']))))
