r"""The seed's eval failure fixed in the running averages themselves: the
seed (configs/wbn.py: BN momentum 0.99, 20 steps an epoch) with plain and
zero-debiased running averages, evaluated with them alone after each epoch.

  python -m bn_study.sweep --sweep=configs/sweeps/zero_debias.py --workdir=runs/zero_debias
  python -m bn_study.report runs/zero_debias --out=docs/results/zero_debias/report

Measured in docs/results/zero_debias/README.md. `zero_debias.py:epochs=N`
changes the budget.
"""

from bn_study import sweep

CONFIG = 'configs/wbn.py'


def get_sweep(arg=''):
  args = sweep.parse_arg(arg, {'epochs': 3}, 'zero_debias')
  return sweep.product(sweep.values('model.zero_debias', [False, True]),
                       sweep.values('num_epochs', [args['epochs']]))
