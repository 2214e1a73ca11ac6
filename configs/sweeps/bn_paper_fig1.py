r"""Both arms of the BN paper's Figure 1 (configs/bn_paper_fig1.py), 3 random
seeds.

  python -m bn_study.sweep --sweep=configs/sweeps/bn_paper_fig1.py --workdir=runs/bn_paper_fig1 --parallel=2
  python -m bn_study.report runs/bn_paper_fig1 --out=docs/results/bn_paper_fig1/report

`bn_paper_fig1.py:seeds=N` changes the number of random seeds.
"""

from bn_study import sweep

CONFIG = 'configs/bn_paper_fig1.py'


def get_sweep(arg=''):
  seeds = sweep.parse_arg(arg, {'seeds': 3}, 'bn_paper_fig1')['seeds']
  return sweep.product(sweep.values('model.norm', ['none', 'batch']),
                       sweep.values('seed', list(range(seeds))))
