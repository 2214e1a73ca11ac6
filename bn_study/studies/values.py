"""Config values and measurements as text: run names, report labels and
tables, claims' sides. One place, so that a run's name and its report row
spell a value the same way."""

from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np


def config_value(value) -> str:
  """A config value as a name, a label and a --config.FIELD= value show it:
  sequences as `(a,b)`, nested ones too; anything else as str()."""
  if isinstance(value, (tuple, list)):
    return '(' + ','.join(config_value(v) for v in value) + ')'
  return str(value)


def short_names(keys: Sequence[str]) -> Dict[str, str]:
  """{field: its last dotted component} (`model.norm` -> `norm`), unless two
  fields share one: then every field keeps its full name."""
  short = {k: k.rsplit('.', 1)[-1] for k in keys}
  if len(set(short.values())) < len(short):
    return {k: k for k in keys}
  return short


def mean_std(xs: Sequence[float]):
  """(mean, sample std (0 for one value), n)."""
  xs = np.asarray(xs, np.float64)
  return (float(xs.mean()), float(xs.std(ddof=1)) if len(xs) > 1 else 0.0,
          len(xs))


def fmt_mean_std(xs: Sequence[float], digits: int = 3) -> str:
  """'0.812 ± 0.013 (n=3)'; '-' for no values."""
  if not len(xs):
    return '-'
  m, s, n = mean_std(xs)
  return f'{m:.{digits}f} ± {s:.{digits}f} (n={n})'


def fmt_steps(hits: Sequence[Optional[int]]) -> str:
  """Steps to a threshold over seeds, None where a seed never reached it:
  '75 ± 7 (2/3)'."""
  reached = [h for h in hits if h is not None]
  if not reached:
    return f'not reached (0/{len(hits)})'
  m, s, _ = mean_std(reached)
  spread = f' ± {s:.0f}' if len(reached) > 1 else ''
  return f'{m:.0f}{spread} ({len(reached)}/{len(hits)})'


def fmt_seeds(xs: Sequence[float]) -> str:
  """A claim's side over seeds, in significant digits since its scale is
  the claim's: '0.81 ± 0.01 (n=3)', '0.5 (n=1)', '-' for none."""
  if not len(xs):
    return '-'
  if len(xs) == 1:
    return f'{xs[0]:.4g} (n=1)'
  return f'{np.mean(xs):.4g} ± {np.std(xs, ddof=1):.2g} (n={len(xs)})'


def markdown_table(header: Sequence[str],
                   rows: Iterable[Sequence[str]]) -> List[str]:
  """A Markdown table's lines: the header, its rule, then one line a row."""
  return ([_row(header), '|' + ' --- |' * len(header)] +
          [_row(cells) for cells in rows])


def _row(cells: Sequence[str]) -> str:
  return '| ' + ' | '.join(str(c) for c in cells) + ' |'
