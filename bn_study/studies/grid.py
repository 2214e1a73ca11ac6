r"""The sweep-file library: a grid of config overrides, or a sample of one.

A sweep file (configs/sweeps/*.py) names its base config and returns the grid:

  from bn_study import sweep

  CONFIG = 'configs/wbn.py'

  def get_sweep(arg=None):
    return sweep.product(
        sweep.zipped(sweep.values('model.norm', ['none', 'batch']),
                     sweep.values('eval_stats', ['ema', 'ema,precise'])),
        sweep.values('seed', [0, 1, 2]))

Besides lists, a sweep may sample: sweep.sample({'learning_rate':
sweep.loguniform(1e-3, 1e-1)}, num_samples=8) is 8 points, the same ones at
every launch. Each point is a dict of overrides {field: value}, and its run
is named after the fields whose values differ between points
(`norm=batch,seed=1`: run_names).

bn_study.sweep re-exports this module for sweep files; bn_study/studies/cli.py
runs them. Nothing here imports JAX.
"""

import dataclasses
import itertools
import math
import random
from typing import Any, Dict, List, Sequence

from bn_study.studies import values as values_lib

Point = Dict[str, Any]


class SweepError(ValueError):
  """A sweep file or grid that cannot run; the message says why."""


# Grid building. Each returns a list of override dicts (points).


def values(field: str, vals: Sequence[Any]) -> List[Point]:
  """One point per value of `field`."""
  if isinstance(vals, (str, bytes)) or not len(vals):
    raise SweepError(f'values({field!r}, ...) needs a non-empty list of '
                     f'values, got {vals!r}.')
  return [{field: v} for v in vals]


def product(*grids: List[Point]) -> List[Point]:
  """Every combination of one point from each grid (the first varies slowest)."""
  return [_merged(combo) for combo in itertools.product(*grids)]


def zipped(*grids: List[Point]) -> List[Point]:
  """Point i of every grid together; the grids must be equally long."""
  lengths = {len(g) for g in grids}
  if len(lengths) != 1:
    raise SweepError(f'zipped() needs grids of equal length, got lengths '
                     f'{[len(g) for g in grids]}.')
  return [_merged(combo) for combo in zip(*grids)]


def chain(*grids: List[Point]) -> List[Point]:
  """The points of each grid, one grid after another."""
  return [dict(p) for g in grids for p in g]


# Search spaces: distributions, sampled here and now, with a fixed seed, so
# that every launch of a sweep has the same points, names and runs (and so
# they skip and resume as a grid's do), on either engine.


@dataclasses.dataclass(frozen=True)
class Distribution:
  """A field's values to sample from, as Tune names them."""
  kind: str  # uniform | loguniform | randint | choice
  args: tuple

  def sample(self, rng: random.Random):
    if self.kind == 'choice':
      return rng.choice(self.args)
    low, high = self.args
    if self.kind == 'randint':
      return rng.randrange(low, high)
    while True:
      if self.kind == 'loguniform':
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
      else:
        value = rng.uniform(low, high)
      value = float(f'{value:.4g}')  # As the run's name shows it.
      if low <= value < high:  # Rounding can reach either end.
        return value


def _bounds(kind, low, high, positive=False):
  if not low < high or (positive and low <= 0):
    raise SweepError(f'{kind}({low!r}, {high!r}) needs low < high' +
                     (' and low > 0.' if positive else '.'))
  return Distribution(kind, (low, high))


def uniform(low: float, high: float) -> Distribution:
  """Floats evenly in [low, high), to 4 significant digits."""
  return _bounds('uniform', low, high)


def loguniform(low: float, high: float) -> Distribution:
  """Floats evenly in log scale in [low, high) (learning rates)."""
  return _bounds('loguniform', low, high, positive=True)


def randint(low: int, high: int) -> Distribution:
  """Integers in [low, high)."""
  return _bounds('randint', low, high)


def choice(vals: Sequence[Any]) -> Distribution:
  """One of `vals`, each equally likely."""
  if isinstance(vals, (str, bytes)) or not len(vals):
    raise SweepError(f'choice() needs a non-empty list, got {vals!r}.')
  return Distribution('choice', tuple(vals))


def sample(space: Dict[str, Any], num_samples: int, seed: int = 0
           ) -> List[Point]:
  """`num_samples` points; each field drawn from its distribution (a plain
  value is the same in every point). The same space and seed give the same
  points; a field added to the space changes them all."""
  if num_samples < 1:
    raise SweepError(f'sample() needs num_samples >= 1, got {num_samples}.')
  rng = random.Random(seed)
  return [{k: v.sample(rng) if isinstance(v, Distribution) else v
           for k, v in space.items()} for _ in range(num_samples)]


def _merged(parts) -> Point:
  point = {}
  for part in parts:
    for key, value in part.items():
      if key in point and point[key] != value:
        raise SweepError(f'Field {key!r} is set twice in one point '
                         f'({point[key]!r} and {value!r}).')
      point[key] = value
  return point


def parse_arg(arg: str, defaults: Dict[str, int], sweep_name: str
              ) -> Dict[str, int]:
  """A sweep file's `:key=N,key=N` argument (positive integers) over defaults."""
  opts = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, _, value = item.partition('=')
    if key not in opts or not value.isdigit() or int(value) < 1:
      raise SweepError(
          f'{sweep_name} argument {item!r}: expected ' +
          ' and/or '.join(f'{k}=N' for k in opts) + ' with N >= 1.')
    opts[key] = int(value)
  return opts


def run_names(points: Sequence[Point]) -> List[str]:
  """Stable, unique names from the fields that vary between points.

  A field uses its last dotted component (`model.norm` -> `norm`) unless two
  varying fields share it. Fields the same in every point do not appear.
  """
  keys = []
  for p in points:
    keys += [k for k in p if k not in keys]
  varying = [k for k in keys
             if len({repr(p.get(k, '<base>')) for p in points}) > 1]
  if not varying:
    varying = keys
  short = values_lib.short_names(varying)
  names = []
  for p in points:
    # A comma inside a value (eval_stats=ema,precise) would read as a separator.
    name = ','.join(
        f'{short[k]}={values_lib.config_value(p[k]).replace(",", "+")}'
        for k in varying if k in p)
    names.append(name.replace('/', '_').replace(' ', '') or 'base')
  dupes = sorted({n for n in names if names.count(n) > 1})
  if dupes:
    raise SweepError(f'The sweep has repeated points: {dupes}. Every point '
                     'must differ from the others in some field.')
  return names
