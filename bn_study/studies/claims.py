r"""A study's claims, as comparisons the report evaluates from the runs.

A sweep file may carry CLAIMS; `python -m bn_study.report` finds them through
the sweep.json beside the runs and prints a verdict for each: holds, does
not hold, or too close to call. Nobody types a verdict.

  from bn_study import claims  # This module, re-exported for sweep files.
  BN = {'model.norm': 'batch'}
  CLAIMS = [
      claims.greater('BN ends more accurate than no BN',
                     claims.final('eval/accuracy', **BN),
                     claims.final('eval/accuracy', **{'model.norm': 'none'})),
      claims.less("GN's accuracy varies less over batch sizes than BN's",
                  claims.range_over('batch_size', claims.final(
                      'eval/accuracy', **{'model.norm': 'group'})),
                  claims.range_over('batch_size', claims.final(
                      'eval/accuracy', **BN))),
  ]

A quantity is one number per seed, from the runs whose config matches its
fields. A claim holds when the difference of the two sides' means points the
claimed way by more than twice its standard error (from the spread over
seeds) plus the claim's `margin`. It does not hold when the difference
points the other way by as much, and is too close to call otherwise. With a
single seed on a side there is no spread: then only a `margin` can decide.
Nothing here imports JAX.
"""

import dataclasses
import json
import math
import os
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from bn_study import workdir as workdir_lib
from bn_study.studies import jobs as jobs_lib
from bn_study.studies import runs as runs_lib
from bn_study.studies import values as values_lib

HOLDS, FAILS, CLOSE = 'holds', 'does not hold', 'too close to call'


class ClaimError(ValueError):
  """A claim that the runs cannot answer; the message says why."""


@dataclasses.dataclass(frozen=True)
class Quantity:
  """One number per seed, from the runs that match."""
  label: str
  # runs -> {seed: value}
  per_seed: Callable[[Sequence[runs_lib.Run]], Dict[int, float]]


def _matches(run: runs_lib.Run, where: Dict[str, object]) -> bool:
  flat = workdir_lib.flatten(run.config)
  for key, want in where.items():
    have = flat.get(key, '<missing>')
    if isinstance(want, float) and isinstance(have, (int, float)):
      if not math.isclose(have, want, rel_tol=1e-9):
        return False
    elif have != want:
      return False
  return True


def _where_label(where: Dict[str, object]) -> str:
  return ', '.join(f'{k.rsplit(".", 1)[-1]}={v}' for k, v in where.items())


def _of_each_run(tag: str, where: Dict[str, object], label: str,
                 value: Callable[[runs_lib.Series], Optional[float]],
                 when: str = '') -> Quantity:
  """`value` of `tag`'s series (None: not logged `when`) in each run that
  matches `where`, one per seed."""
  def per_seed(found):
    chosen = [r for r in found if _matches(r, where)]
    if not chosen:
      raise ClaimError(f'No run has {_where_label(where) or "any config"}.')
    out = {}
    for run in chosen:
      seed = run.config.get('seed')
      if seed in out:
        raise ClaimError(
            f'{_where_label(where) or "Every run"} matches more than one run '
            f'with seed {seed}: name the fields that tell them apart.')
      series = run.scalars.get(tag)
      got = value(series) if series is not None and len(series.values) else None
      if got is None:
        raise ClaimError(f'{run.path} logged no {tag}{when}.')
      out[seed] = got
    return out
  return Quantity(f'{label} ({_where_label(where)})', per_seed)


def final(tag: str, **where) -> Quantity:
  """The last logged value of `tag` in each run that matches `where`."""
  return _of_each_run(tag, where, f'final {tag}',
                      lambda s: float(s.values[-1]))


def best(tag: str, **where) -> Quantity:
  """The best value of `tag` over each run (lowest for a loss)."""
  pick = np.nanmin if tag.endswith('loss') else np.nanmax
  return _of_each_run(tag, where, f'best {tag}',
                      lambda s: float(pick(s.values)))


def at_step(tag: str, step: int, **where) -> Quantity:
  """The value of `tag` logged at `step` in each run that matches `where`."""
  def value(series):
    hits = np.flatnonzero(series.steps == step)
    return float(series.values[hits[0]]) if len(hits) else None
  return _of_each_run(tag, where, f'{tag} at step {step}', value,
                      when=f' at step {step}')


def mean(tag: str, from_step: int = 0, **where) -> Quantity:
  """The mean of `tag` over the steps logged from `from_step` on, in each run
  that matches `where` (an instrument measured along training)."""
  def value(series):
    kept = series.values[series.steps >= from_step]
    return (float(np.mean(kept)) if len(kept) and np.all(np.isfinite(kept))
            else None)
  return _of_each_run(tag, where, f'mean {tag} from step {from_step}', value,
                      when=f' from step {from_step} (or a non-finite one)')


def _over(field: str, quantity: Quantity, label: str,
          combine: Callable[[List[float], List[object]], float]) -> Quantity:
  """Per seed: `combine` of the quantity's values at each value of `field`."""
  def per_seed(found):
    by_value: Dict[object, List[runs_lib.Run]] = {}
    for run in found:
      by_value.setdefault(workdir_lib.flatten(run.config).get(field),
                          []).append(run)
    if None in by_value:
      raise ClaimError(f'Runs without the field {field!r}.')
    tables = {}
    for value, group in by_value.items():
      try:
        tables[value] = quantity.per_seed(group)
      except ClaimError:
        continue  # The quantity's runs do not include this value.
    if len(tables) < 2:
      raise ClaimError(f'{quantity.label}: fewer than two values of {field} '
                       'to compare.')
    seeds = set.intersection(*(set(t) for t in tables.values()))
    if not seeds:
      raise ClaimError(f'{quantity.label}: no seed ran at every {field}.')
    values = sorted(tables, key=lambda v: (str(type(v)), v))
    return {s: combine([tables[v][s] for v in values], values)
            for s in sorted(seeds)}
  return Quantity(f'{label} {field} of {quantity.label}', per_seed)


def range_over(field: str, quantity: Quantity) -> Quantity:
  """Per seed: max - min of the quantity over the values of `field`."""
  return _over(field, quantity, 'range over',
               lambda xs, _: float(max(xs) - min(xs)))


def max_over(field: str, quantity: Quantity) -> Quantity:
  """Per seed: the highest value of the quantity over the values of `field`."""
  return _over(field, quantity, 'max over', lambda xs, _: float(max(xs)))


def argmax_over(field: str, quantity: Quantity) -> Quantity:
  """Per seed: the value of `field` where the quantity is highest."""
  return _over(field, quantity, 'argmax over',
               lambda xs, vals: float(vals[int(np.argmax(xs))]))


def difference(left: Quantity, right: Quantity) -> Quantity:
  """Per seed: left - right, over the seeds both have (a fall, a gain)."""
  def per_seed(found):
    a, b = left.per_seed(found), right.per_seed(found)
    if None in a or None in b:  # A constant: its one value, keyed None.
      keys = [s for s in {**a, **b} if s is not None] or [None]
      return {s: a.get(s, a.get(None)) - b.get(s, b.get(None)) for s in keys}
    seeds = sorted(set(a) & set(b))
    if not seeds:
      raise ClaimError(f'{left.label} and {right.label}: no seed in common.')
    return {s: a[s] - b[s] for s in seeds}
  return Quantity(f'({left.label}) - ({right.label})', per_seed)


def constant(value: float) -> Quantity:
  """A fixed number (as if measured on every seed without spread)."""
  return Quantity(f'{value:g}', lambda found: {None: float(value)})


@dataclasses.dataclass(frozen=True)
class Claim:
  text: str
  left: Quantity
  right: Quantity
  sign: int  # +1: left > right is claimed; -1: left < right.
  margin: float = 0.0


def greater(text: str, left: Quantity, right: Quantity,
            margin: float = 0.0) -> Claim:
  """Claims left > right (by more than `margin`)."""
  return Claim(text, left, right, +1, margin)


def less(text: str, left: Quantity, right: Quantity,
         margin: float = 0.0) -> Claim:
  """Claims left < right (by more than `margin`)."""
  return Claim(text, left, right, -1, margin)


@dataclasses.dataclass
class Verdict:
  claim: Claim
  verdict: str
  left: Sequence[float] = ()
  right: Sequence[float] = ()
  difference: Optional[float] = None
  noise: Optional[float] = None  # Twice the difference's standard error.
  why: str = ''


def _stderr2(xs: Sequence[float], constant_side: bool) -> Optional[float]:
  """The squared standard error of a side's mean; None without a spread."""
  if constant_side:
    return 0.0
  if len(xs) < 2:
    return None
  return float(np.var(xs, ddof=1)) / len(xs)


def evaluate(claim: Claim, found: Sequence[runs_lib.Run]) -> Verdict:
  """The claim's verdict on these runs (or why it has none)."""
  try:
    left, right = claim.left.per_seed(found), claim.right.per_seed(found)
  except ClaimError as e:
    return Verdict(claim, CLOSE, why=f'cannot evaluate: {e}')
  a, b = list(left.values()), list(right.values())
  difference = claim.sign * (float(np.mean(a)) - float(np.mean(b)))
  errors = [_stderr2(a, None in left), _stderr2(b, None in right)]
  if None in errors:
    if claim.margin <= 0:
      return Verdict(claim, CLOSE, a, b, difference,
                     why='one seed on a side: no spread to judge by')
    noise = 0.0
  else:
    noise = 2 * math.sqrt(sum(errors))
  threshold = noise + claim.margin
  if difference > threshold:
    verdict = HOLDS
  elif difference < -threshold:
    verdict = FAILS
  else:
    verdict = CLOSE
  return Verdict(claim, verdict, a, b, difference, noise)


def report_lines(claims: Sequence[Claim],
                 found: Sequence[runs_lib.Run]) -> List[str]:
  """The report's Claims section: each claim, both sides, the verdict."""
  rows = []
  for claim in claims:
    v = evaluate(claim, found)
    threshold = ('-' if v.noise is None else
                 f'{v.noise + claim.margin:.3g}')
    difference = '-' if v.difference is None else f'{v.difference:+.3g}'
    verdict = f'**{v.verdict}**' + (f' ({v.why})' if v.why else '')
    rows.append((claim.text,
                 f'{claim.left.label}: {values_lib.fmt_seeds(v.left)}',
                 f'{claim.right.label}: {values_lib.fmt_seeds(v.right)}',
                 difference, threshold, verdict))
  return ['## Claims', '',
          'Each side: mean ± std over seeds. A claim holds when the '
          'difference of the means points the claimed way by more than '
          'twice its standard error plus the margin; does not hold when it '
          'points the other way by as much; else it is too close to call '
          '(bn_study/claims.py).', ''] + values_lib.markdown_table(
              ('claim', 'left', 'right', 'difference (claimed way)',
               '2 s.e. + margin', 'verdict'), rows) + ['']


def load(path: str) -> List[Claim]:
  """CLAIMS from a Python file (a sweep file, usually)."""
  module = jobs_lib.load_module(path)
  found = getattr(module, 'CLAIMS', [])
  if not all(isinstance(c, Claim) for c in found):
    raise ClaimError(f'{path}: CLAIMS must be a list of claims.greater(...) '
                     'and claims.less(...).')
  return list(found)


def of_sweeps(roots: Sequence[str]) -> List[Claim]:
  """The CLAIMS of the sweep files that made these folders (their
  sweep.json names the file, relative to the repository root)."""
  out = []
  for root in roots:
    try:
      with open(os.path.join(root, workdir_lib.SWEEP)) as f:
        spec = json.load(f)['sweep']
    except (OSError, ValueError, KeyError, TypeError):
      continue
    path = spec.partition(':')[0]
    path = path if os.path.isabs(path) else str(jobs_lib.ROOT / path)
    if os.path.isfile(path):
      out += [c for c in load(path) if c not in out]
  return out
