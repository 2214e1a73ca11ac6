r"""What sweep files use, and `python -m bn_study.sweep`.

  from bn_study import sweep

  def get_sweep(arg=None):
    return sweep.product(sweep.values('model.norm', ['none', 'batch']),
                         sweep.values('seed', [0, 1, 2]))

  python -m bn_study.sweep --sweep=configs/sweeps/X.py --workdir=runs/X

The grid API lives in bn_study/studies/grid.py, the program in
bn_study/studies/cli.py. Importing this module defines no flags and starts
nothing.
"""

from bn_study.studies.grid import chain
from bn_study.studies.grid import choice
from bn_study.studies.grid import Distribution
from bn_study.studies.grid import loguniform
from bn_study.studies.grid import parse_arg
from bn_study.studies.grid import Point
from bn_study.studies.grid import product
from bn_study.studies.grid import randint
from bn_study.studies.grid import run_names
from bn_study.studies.grid import sample
from bn_study.studies.grid import SweepError
from bn_study.studies.grid import uniform
from bn_study.studies.grid import values
from bn_study.studies.grid import zipped

__all__ = ['chain', 'choice', 'Distribution', 'loguniform', 'parse_arg',
           'Point', 'product', 'randint', 'run_names', 'sample', 'SweepError',
           'uniform', 'values', 'zipped']

if __name__ == '__main__':
  from bn_study.studies import cli  # pylint: disable=g-import-not-at-top
  cli.program()
