r"""A Markdown report with plots from finished or running training runs.

  python -m bn_study.report runs/seed_study --out=docs/results/seed_study

Reads each run's config.json and TensorBoard events (never retrains), groups
runs whose configs differ only in seed, and writes OUT/report.md with PNG
plots beside it: training loss vs step, eval accuracy and loss vs epoch for
each eval mode logged (eval/, eval_precise/, eval_batch/), and tables of steps
to training-loss thresholds, final and best eval accuracy, the epoch of lowest
eval loss and wall time, as mean +- std over seeds.
"""

import dataclasses
import datetime
import os
import sys
from typing import Dict, List, Optional, Sequence

from absl import app
from absl import flags
import numpy as np

from bn_study import claims
from bn_study import runs as runs_lib

# Fields that say where or how a run was launched, not what it studies.
NOT_COMPARED = ('seed', 'data_dir', 'download', 'image_folder')


@dataclasses.dataclass
class Group:
  label: str
  fields: Dict[str, object]  # The compared fields' values in this group.
  runs: List[runs_lib.Run]


# Arithmetic.


def smooth(values: Sequence[float], weight: float) -> np.ndarray:
  """TensorBoard's smoothing: a debiased exponential moving average."""
  values = np.asarray(values, np.float64)
  if not 0 <= weight < 1:
    raise ValueError(f'smoothing weight {weight} must be in [0, 1).')
  out, last, debias = np.empty_like(values), 0.0, 0.0
  for i, v in enumerate(values):
    last = weight * last + (1 - weight) * v
    debias = weight * debias + (1 - weight)
    out[i] = last / debias
  return out


def steps_to(steps: Sequence[int], values: Sequence[float],
             threshold: float) -> Optional[int]:
  """The first step whose value is <= threshold; None if none is."""
  hit = np.nonzero(np.asarray(values) <= threshold)[0]
  return int(steps[hit[0]]) if len(hit) else None


def mean_std(xs: Sequence[float]):
  """(mean, sample std (0 for one value), n)."""
  xs = np.asarray(xs, np.float64)
  return (float(xs.mean()), float(xs.std(ddof=1)) if len(xs) > 1 else 0.0,
          len(xs))


def fmt_mean_std(xs: Sequence[float], digits: int = 3) -> str:
  if not len(xs):
    return '-'
  m, s, n = mean_std(xs)
  return f'{m:.{digits}f} ± {s:.{digits}f} (n={n})'


def fmt_steps(hits: Sequence[Optional[int]]) -> str:
  reached = [h for h in hits if h is not None]
  if not reached:
    return f'not reached (0/{len(hits)})'
  m, s, _ = mean_std(reached)
  spread = f' ± {s:.0f}' if len(reached) > 1 else ''
  return f'{m:.0f}{spread} ({len(reached)}/{len(hits)})'


# Grouping.


def group_runs(runs: List[runs_lib.Run]):
  """(groups, compared field names): runs equal but for NOT_COMPARED fields
  (and fields missing from some configs)."""
  flat = [runs_lib.flatten(r.config) for r in runs]
  # Fields some configs lack (written before the field existed) can't be
  # compared; grouping ignores them.
  keys = sorted(set.intersection(*(set(f) for f in flat)) - set(NOT_COMPARED))
  differing = [k for k in keys if len({repr(f[k]) for f in flat}) > 1]
  by_key: Dict[tuple, Group] = {}
  for run, f in zip(runs, flat):
    key = tuple(repr(f.get(k)) for k in differing)
    if key not in by_key:
      values = {k: f.get(k) for k in differing}
      short = _short_names(differing)
      label = ', '.join(f'{short[k]}={_fmt(v)}' for k, v in values.items())
      by_key[key] = Group(label or 'all runs', values, [])
    by_key[key].runs.append(run)
  for g in by_key.values():
    g.runs.sort(key=lambda r: (r.config.get('seed', 0), r.path))
  return list(by_key.values()), differing


def _short_names(keys):
  short = {k: k.rsplit('.', 1)[-1] for k in keys}
  return short if len(set(short.values())) == len(short) else {k: k
                                                               for k in keys}


def _fmt(value):
  if isinstance(value, tuple):
    return '(' + ','.join(map(str, value)) + ')'
  return str(value)


# Per-run summaries.


def eval_modes(runs: List[runs_lib.Run]) -> List[str]:
  """Eval prefixes logged by any run: 'eval' first, then the others."""
  prefixes = {t.split('/')[0] for r in runs for t in r.scalars
              if t.startswith('eval') and t.endswith('/accuracy')}
  return sorted(prefixes, key=lambda p: (p != 'eval', p))


def epochs_of(run: runs_lib.Run, steps: np.ndarray) -> np.ndarray:
  return steps / run.steps_per_epoch if run.steps_per_epoch else steps


def summarize_run(run, thresholds, smoothing, modes):
  out = {'hits': [None] * len(thresholds), 'modes': {}}
  loss = run.scalars.get('train/loss')
  if loss is not None:
    smoothed = smooth(loss.values, smoothing)
    out['hits'] = [steps_to(loss.steps, smoothed, t) for t in thresholds]
  for mode in modes:
    acc = run.scalars.get(f'{mode}/accuracy')
    if acc is None or not len(acc.steps):
      continue
    entry = {'final': float(acc.values[-1]), 'best': float(acc.values.max()),
             'epochs_done': float(epochs_of(run, acc.steps)[-1])}
    eloss = run.scalars.get(f'{mode}/loss')
    if eloss is not None and len(eloss.steps):
      entry['lowest_loss_epoch'] = float(
          epochs_of(run, eloss.steps)[int(np.argmin(eloss.values))])
    out['modes'][mode] = entry
  return out


def _status(run):
  if run.finished:
    return 'finished'
  total = run.total_steps
  return f'in progress (step {run.last_step}' + (f' of {total})' if total
                                                  else ')')


# Plots.


def have_matplotlib() -> bool:
  import importlib.util  # pylint: disable=g-import-not-at-top
  return importlib.util.find_spec('matplotlib') is not None


def _plt():
  """pyplot, or None where matplotlib is not installed (the report then has
  its tables and no plots)."""
  if not have_matplotlib():
    return None
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _band(curves):
  """Mean, min and max over runs at each x any run logged."""
  xs = np.unique(np.concatenate([x for x, _ in curves]))
  table = np.full((len(curves), len(xs)), np.nan)
  for i, (x, y) in enumerate(curves):
    table[i, np.searchsorted(xs, x)] = y
  return xs, np.nanmean(table, 0), np.nanmin(table, 0), np.nanmax(table, 0)


def _draw_band(ax, curves, label, color):
  xs, mean, lo, hi = _band(curves)
  ax.plot(xs, mean, color=color, label=label, lw=1.5)
  if len(curves) > 1:
    ax.fill_between(xs, lo, hi, color=color, alpha=0.2, lw=0)


def plot_train_loss(groups, thresholds, smoothing, path):
  plt = _plt()
  if plt is None:
    return
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for i, g in enumerate(groups):
    curves = [(r.scalars['train/loss'].steps,
               smooth(r.scalars['train/loss'].values, smoothing))
              for r in g.runs if 'train/loss' in r.scalars]
    if curves:
      _draw_band(ax, curves, f'{g.label} (n={len(curves)})', f'C{i}')
  for t in thresholds:
    ax.axhline(t, color='grey', ls=':', lw=0.8)
  ax.set_xlabel('step')
  ax.set_ylabel(f'training loss (smoothed {smoothing})')
  ax.set_yscale('log')
  ax.set_title('Training loss: mean over seeds, band = min..max')
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_eval(groups, mode, path):
  plt = _plt()
  if plt is None:
    return
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  for i, g in enumerate(groups):
    for ax, metric in zip(axes, ('accuracy', 'loss')):
      curves = [(epochs_of(r, r.scalars[f'{mode}/{metric}'].steps),
                 r.scalars[f'{mode}/{metric}'].values)
                for r in g.runs if f'{mode}/{metric}' in r.scalars]
      if curves:
        _draw_band(ax, curves, f'{g.label} (n={len(curves)})', f'C{i}')
  for ax, metric in zip(axes, ('accuracy', 'loss')):
    ax.set_xlabel('epoch')
    ax.set_ylabel(f'{mode}/{metric}')
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.suptitle(f'{mode}/ vs epoch: mean over seeds, band = min..max')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# Instruments (bn_study/analysis.py), where the runs logged them.


def _layers(runs, prefix, suffix):
  """Layer names of tags `<prefix>/<layer>/<suffix>` in first-logged order."""
  out = []
  for r in runs:
    for tag in r.scalars:
      parts = tag.split('/')
      if len(parts) == 3 and parts[0] == prefix and parts[2] == suffix:
        if parts[1] not in out:
          out.append(parts[1])
  return out


def _mean_curve(runs, tag):
  curves = [(r.scalars[tag].steps, r.scalars[tag].values) for r in runs
            if tag in r.scalars]
  return _band(curves)[:2] if curves else None


def plot_act(groups, layers, path, unit=''):
  """Ioffe & Szegedy's Figure 1 per layer: p15..p85 band and p50 over steps."""
  plt = _plt()
  if plt is None:
    return
  fig, axes = plt.subplots(len(layers), len(groups), squeeze=False,
                           figsize=(3.6 * len(groups), 2.2 * len(layers)),
                           sharex=True)
  for j, g in enumerate(groups):
    for i, layer in enumerate(layers):
      ax = axes[i][j]
      base = f'act/{layer}/{unit}'
      curves = {q: _mean_curve(g.runs, base + q) for q in ('p15', 'p50', 'p85')}
      if all(c is not None for c in curves.values()):
        ax.fill_between(curves['p15'][0], curves['p15'][1], curves['p85'][1],
                        color=f'C{j}', alpha=0.25, lw=0)
        for q, c in curves.items():
          ax.plot(c[0], c[1], color=f'C{j}', lw=1.5 if q == 'p50' else 0.7)
      if i == 0:
        ax.set_title(g.label, fontsize=8)
      if j == 0:
        ax.set_ylabel(layer, fontsize=8)
      ax.tick_params(labelsize=7)
      ax.grid(alpha=0.3)
  for ax in axes[-1]:
    ax.set_xlabel('step', fontsize=8)
  what = 'first unit' if unit else 'all units'
  fig.suptitle(f'Input to each nonlinearity, probe batch, {what}:\n15th, 50th, '
               '85th percentiles (mean over seeds)', fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_figure1(groups, layer, path):
  """Ioffe & Szegedy's Figure 1 on these runs: (a) test accuracy vs step per
  group; then per group, one unit's input percentiles over training."""
  plt = _plt()
  if plt is None:
    return
  fig, axes = plt.subplots(1, 1 + len(groups), squeeze=False,
                           figsize=(4 * (1 + len(groups)), 3.4))
  axes = axes[0]
  for j, g in enumerate(groups):
    curves = [(r.scalars['eval/accuracy'].steps, r.scalars['eval/accuracy'].values)
              for r in g.runs if 'eval/accuracy' in r.scalars]
    if curves:
      _draw_band(axes[0], curves, g.label, f'C{j}')
    ax = axes[1 + j]
    base = f'act/{layer}/unit0/'
    for q, lw in (('p15', 0.8), ('p50', 1.6), ('p85', 0.8)):
      c = _mean_curve(g.runs, base + q)
      if c is not None:
        ax.plot(c[0], c[1], color=f'C{j}', lw=lw, label=q)
    ax.set_title(f'({chr(ord("b") + j)}) {g.label}:\n{layer}, first unit, '
                 'input percentiles', fontsize=8)
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  axes[0].set_title('(a) test accuracy', fontsize=9)
  axes[0].set_xlabel('step')
  axes[0].grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_per_layer(groups, prefix, layers, metrics, path, title, log=()):
  """Rows = metrics, columns = layers; one line per group (mean over seeds)."""
  plt = _plt()
  if plt is None:
    return
  fig, axes = plt.subplots(len(metrics), len(layers), squeeze=False,
                           figsize=(2.8 * len(layers), 2.4 * len(metrics)),
                           sharex=True)
  for i, metric in enumerate(metrics):
    for k, layer in enumerate(layers):
      ax = axes[i][k]
      for j, g in enumerate(groups):
        c = _mean_curve(g.runs, f'{prefix}/{layer}/{metric}')
        if c is not None:
          ax.plot(c[0], c[1], color=f'C{j}', lw=1.2, label=g.label)
      if metric in log:
        ax.set_yscale('log')
      ax.set_title(f'{layer}: {metric}', fontsize=8)
      ax.tick_params(labelsize=7)
      ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize=6)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_smoothness(groups, path):
  plt = _plt()
  if plt is None:
    return
  metrics = ('loss_range', 'grad_change_max', 'beta_max')
  fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
  for ax, metric in zip(axes, metrics):
    for j, g in enumerate(groups):
      c = _mean_curve(g.runs, f'smoothness/{metric}')
      if c is not None:
        ax.plot(c[0], c[1], color=f'C{j}', lw=1.2, label=g.label)
    ax.set_yscale('log')
    ax.set_title(metric, fontsize=9)
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  fig.suptitle('Loss landscape along the gradient (Santurkar et al. 2018); '
               'mean over seeds', fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _median_over_steps(runs, tag, skip_first=True):
  """Median over logged steps (after step 0) per run, then mean over runs."""
  meds = []
  for r in runs:
    if tag in r.scalars:
      s = r.scalars[tag]
      vals = s.values[s.steps > 0] if skip_first else s.values
      if len(vals):
        meds.append(float(np.median(vals)))
  return float(np.mean(meds)) if meds else None


def instrument_sections(groups, out) -> List[str]:
  """Report sections for the act/, ics/, smoothness/ and norms/ scalars."""
  runs = [r for g in groups for r in g.runs]
  lines = []
  act_layers = _layers(runs, 'act', 'p50')
  if act_layers:
    plot_act(groups, act_layers, os.path.join(out, 'act.png'))
    unit = bool(_layers(runs, 'act', 'unit0') or any(
        t.endswith('/unit0/p50') for r in runs for t in r.scalars))
    lines += ['## Activations (act/)', '',
              'The input to each nonlinearity on a fixed probe batch (the eval '
              "split's first images, BN in train mode), as in Ioffe & "
              'Szegedy\'s Figure 1: median and 15th..85th percentile band '
              'over training.', '', '![act](act.png)', '']
    if unit:
      plot_act(groups, act_layers, os.path.join(out, 'act_unit0.png'),
               unit='unit0/')
      plot_figure1(groups, act_layers[-1], os.path.join(out, 'figure1.png'))
      lines += ['The same for one fixed unit (the first channel) per layer:',
                '', '![act, one unit](act_unit0.png)', '',
                f'Ioffe & Szegedy\'s Figure 1 on these runs: test accuracy, '
                f'and the input percentiles of one unit of the last hidden '
                f'layer ({act_layers[-1]}) over training:', '',
                '![figure 1](figure1.png)', '']
    rows = ['| group | ' + ' | '.join(f'{l} p15 / p50 / p85 (first → last)'
                                      for l in act_layers) + ' |',
            '|' + ' --- |' * (len(act_layers) + 1)]
    for g in groups:
      cells = []
      for layer in act_layers:
        ends = []
        for q in ('p15', 'p50', 'p85'):
          c = _mean_curve(g.runs, f'act/{layer}/{q}')
          ends.append(None if c is None else (c[1][0], c[1][-1]))
        cells.append('-' if None in ends else ' / '.join(
            f'{a:.2f}→{b:.2f}' for a, b in ends))
      rows.append(f'| {g.label} | ' + ' | '.join(cells) + ' |')
    lines += rows + ['']
  ics_layers = _layers(runs, 'ics', 'l2')
  if ics_layers:
    plot_per_layer(groups, 'ics', ics_layers, ('l2', 'cos'),
                   os.path.join(out, 'ics.png'),
                   'Internal covariate shift (Santurkar et al. 2018): '
                   '||G - G\'|| and cos(G, G\'), mean over seeds',
                   log=('l2',))
    lines += ['## Internal covariate shift (ics/)', '',
              "G = a layer's gradient; G' = the same after the layers "
              "below it took this step's update (same batch). Median over "
              'the logged steps after step 0, mean over seeds:', '',
              '| group | ' + ' | '.join(f'{l} ‖G−G′‖ / cos' for l in ics_layers)
              + ' |', '|' + ' --- |' * (len(ics_layers) + 1)]
    for g in groups:
      cells = []
      for layer in ics_layers:
        l2 = _median_over_steps(g.runs, f'ics/{layer}/l2')
        cos = _median_over_steps(g.runs, f'ics/{layer}/cos')
        cells.append('-' if l2 is None else f'{l2:.3g} / {cos:.3f}')
      lines.append(f'| {g.label} | ' + ' | '.join(cells) + ' |')
    lines += ['', '![ics](ics.png)', '']
  if any('smoothness/loss_range' in r.scalars for r in runs):
    plot_smoothness(groups, os.path.join(out, 'smoothness.png'))
    lines += ['## Loss landscape (smoothness/)', '',
              'Along the gradient g, at step sizes around the learning rate: '
              'the range of the loss, the largest gradient change, and that '
              'change per unit of distance (effective β-smoothness). Median '
              'over the logged steps after step 0, mean over seeds:', '',
              '| group | loss range | max ‖∇L(w−ηg) − g‖ | β |',
              '| --- | --- | --- | --- |']
    for g in groups:
      vals = [_median_over_steps(g.runs, f'smoothness/{m}')
              for m in ('loss_range', 'grad_change_max', 'beta_max')]
      lines.append(f'| {g.label} | ' + ' | '.join(
          '-' if v is None else f'{v:.3g}' for v in vals) + ' |')
    lines += ['', '![smoothness](smoothness.png)', '']
  norm_layers = _layers(runs, 'norms', 'update_ratio')
  if norm_layers:
    plot_per_layer(groups, 'norms', norm_layers, ('w', 'update_ratio'),
                   os.path.join(out, 'norms.png'),
                   '||W|| and ||update|| / ||W|| per layer (the effective '
                   'learning rate), mean over seeds', log=('update_ratio',))
    lines += ['## Weights and effective learning rate (norms/)', '',
              '![norms](norms.png)', '']
  return lines


# The report.


def write_report(roots: Sequence[str], out: str,
                 thresholds: Sequence[float] = (1.0, 0.5, 0.2),
                 smoothing: float = 0.6, title: Optional[str] = None,
                 claims_file: Optional[str] = None) -> str:
  """Writes OUT/report.md and its plots; returns the report's path. The
  claims are `claims_file`'s CLAIMS, or those of the sweeps that made the
  runs (bn_study/claims.py)."""
  found, skipped = runs_lib.find_runs(list(roots))
  if not found:
    raise ValueError(f'No runs under {", ".join(roots)} (a run is a folder '
                     'with config.json and event files, as main.py writes).' +
                     (' Skipped: ' + '; '.join(skipped) if skipped else ''))
  os.makedirs(out, exist_ok=True)
  groups, differing = group_runs(found)
  modes = eval_modes(found)
  summaries = {id(r): summarize_run(r, thresholds, smoothing, modes)
               for r in found}

  lines = [f'# {title or "Report: " + ", ".join(roots)}', '',
           f'Generated by `python -m bn_study.report {" ".join(roots)} '
           f'--out={out}` on {datetime.date.today()} from {len(found)} runs '
           f'in {len(groups)} groups (runs that differ only in '
           f'{", ".join(NOT_COMPARED)} form a group).', '']
  if differing:
    lines.append('**Compared** (the fields that differ between groups): ' +
                 ', '.join(f'`{k}`' for k in differing) + '.')
  else:
    lines.append('**Compared**: nothing; all runs share one config but for '
                 'the seed.')
  common = runs_lib.flatten(found[0].config)
  shown = ['dataset', 'batch_size', 'num_epochs', 'optimizer',
           'learning_rate', 'model.norm', 'model.placement', 'eval_stats']
  lines += ['', '**Common to all runs**: ' + ', '.join(
      f'`{k}={_fmt(common[k])}`' for k in shown
      if k in common and k not in differing) + '.', '']
  if skipped:
    lines += ['**Skipped**:', ''] + [f'- {s}' for s in skipped] + ['']
  in_progress = [r for r in found if not r.finished]
  if in_progress:
    lines += [f'**{len(in_progress)} of {len(found)} runs are still in '
              'progress**; their figures are as of their last logged step.',
              '']

  loss_png = 'train_loss.png'
  plot_train_loss(groups, thresholds, smoothing, os.path.join(out, loss_png))
  thr_cols = [f'steps to loss ≤ {t:g}' for t in thresholds]
  lines += ['## Summary', '',
            f'Training loss smoothed as TensorBoard does (weight '
            f'{smoothing}); steps to a threshold: mean ± std over the seeds '
            'that reached it (reached/seeds). Eval accuracy: mean ± std over '
            'seeds.', '',
            '| group | seeds | ' + ' | '.join(thr_cols) +
            ' | final eval acc | best eval acc | lowest eval loss at epoch | '
            'wall time (min) |',
            '|' + ' --- |' * (len(thr_cols) + 6)]
  for g in groups:
    sums = [summaries[id(r)] for r in g.runs]
    cells = [fmt_steps([s['hits'][i] for s in sums])
             for i in range(len(thresholds))]
    ema = [s['modes'].get(modes[0] if modes else 'eval') for s in sums]
    ema = [e for e in ema if e]
    lowest = [e['lowest_loss_epoch'] for e in ema if 'lowest_loss_epoch' in e]
    done = [e['epochs_done'] for e in ema]
    lines.append(
        f'| {g.label} | {len(g.runs)} | ' + ' | '.join(cells) +
        f' | {fmt_mean_std([e["final"] for e in ema])}'
        f' | {fmt_mean_std([e["best"] for e in ema])}'
        f' | {fmt_mean_std(lowest, 1)} of {max(done, default=0):g}'
        f' | {fmt_mean_std([r.wall_time / 60 for r in g.runs], 1)} |')
  lines += ['', f'![training loss]({loss_png})', '']

  for mode in modes:
    png = f'{mode}.png'
    plot_eval(groups, mode, os.path.join(out, png))
    lines += [f'## `{mode}/`', '',
              '| group | final accuracy | best accuracy | final loss | '
              'lowest loss at epoch |', '| --- | --- | --- | --- | --- |']
    for g in groups:
      ents = [summaries[id(r)]['modes'].get(mode) for r in g.runs]
      ents = [e for e in ents if e]
      if not ents:
        continue
      final_loss = [r.scalars[f'{mode}/loss'].values[-1] for r in g.runs
                    if f'{mode}/loss' in r.scalars]
      lines.append(
          f'| {g.label} | {fmt_mean_std([e["final"] for e in ents])} | '
          f'{fmt_mean_std([e["best"] for e in ents])} | '
          f'{fmt_mean_std(final_loss)} | '
          f'{fmt_mean_std([e["lowest_loss_epoch"] for e in ents if "lowest_loss_epoch" in e], 1)} |')
    lines += ['', _per_epoch_table(groups, mode), '', f'![{mode}]({png})', '']

  lines += instrument_sections(groups, out)
  try:
    study_claims = (claims.load(claims_file) if claims_file
                    else claims.of_sweeps(roots))
  except claims.ClaimError as e:
    raise ValueError(str(e)) from e
  if study_claims:
    lines += claims.report_lines(study_claims, found)

  lines += ['## Runs', '', '| group | seed | status | ' + ' | '.join(thr_cols) +
            ' | ' + ' | '.join(f'final {m}/accuracy' for m in modes) +
            ' | wall time (min) | workdir |',
            '|' + ' --- |' * (len(thr_cols) + len(modes) + 5)]
  for g in groups:
    for r in g.runs:
      s = summaries[id(r)]
      hits = [str(h) if h is not None else 'not reached' for h in s['hits']]
      accs = [f'{s["modes"][m]["final"]:.4f}' if m in s['modes'] else '-'
              for m in modes]
      lines.append(f'| {g.label} | {r.config.get("seed")} | {_status(r)} | ' +
                   ' | '.join(hits + accs) +
                   f' | {r.wall_time / 60:.1f} | `{r.path}` |')
  path = os.path.join(out, 'report.md')
  with open(path, 'w') as f:
    if not have_matplotlib():
      lines = [l for l in lines if not l.startswith('![')]
      lines.insert(2, '*No plots: matplotlib is not installed here.*\n')
    f.write('\n'.join(lines) + '\n')
  return path


def _per_epoch_table(groups, mode):
  """Mean accuracy over seeds after each epoch, one row per group."""
  rows, max_epoch = [], 0
  for g in groups:
    by_epoch: Dict[int, List[float]] = {}
    for r in g.runs:
      acc = r.scalars.get(f'{mode}/accuracy')
      if acc is None:
        continue
      for e, v in zip(epochs_of(r, acc.steps), acc.values):
        if abs(e - round(e)) < 1e-9:  # eval_every_steps adds others.
          by_epoch.setdefault(int(round(e)), []).append(v)
    if by_epoch:
      rows.append((g.label, by_epoch))
      max_epoch = max(max_epoch, max(by_epoch))
  if not rows:
    return ''
  every = -(-max_epoch // 12)  # At most about 12 columns.
  epochs = sorted({*range(every, max_epoch + 1, every), max_epoch})
  out = [f'Mean `{mode}/accuracy` after each epoch' +
         (f' (every {every}th)' if every > 1 else '') + ':', '',
         '| group | ' + ' | '.join(str(e) for e in epochs) + ' |',
         '|' + ' --- |' * (len(epochs) + 1)]
  for label, by_epoch in rows:
    out.append(f'| {label} | ' + ' | '.join(
        f'{np.mean(by_epoch[e]):.3f}' if e in by_epoch else '' for e in epochs)
               + ' |')
  return '\n'.join(out)


FLAGS = flags.FLAGS


def _define_flags():
  flags.DEFINE_string('out', None, 'Folder for report.md and the plots.')
  flags.DEFINE_list('thresholds', ['1.0', '0.5', '0.2'],
                    'Training-loss thresholds for the steps-to-threshold '
                    'columns.')
  flags.DEFINE_float('smoothing', 0.6, 'TensorBoard-style smoothing weight '
                     'of the training loss, in [0, 1).')
  flags.DEFINE_string('title', None, 'Report title.')
  flags.DEFINE_string('claims', None, 'A Python file whose CLAIMS to '
                      'evaluate; by default, those of the sweep files named '
                      'by the folders\' sweep.json.')


def main(argv):
  roots = argv[1:]
  if not roots or not FLAGS.out:
    print('usage: python -m bn_study.report RUNS_DIR [RUNS_DIR ...] '
          '--out=OUT', file=sys.stderr)
    sys.exit(2)
  try:
    thresholds = [float(t) for t in FLAGS.thresholds]
  except ValueError:
    print(f'error: --thresholds={",".join(FLAGS.thresholds)} must be numbers '
          '(e.g. 1.0,0.5,0.2).', file=sys.stderr)
    sys.exit(2)
  if not 0 <= FLAGS.smoothing < 1:
    print(f'error: --smoothing={FLAGS.smoothing} must be in [0, 1).',
          file=sys.stderr)
    sys.exit(2)
  try:
    if FLAGS.claims and not os.path.isfile(FLAGS.claims):
      raise ValueError(f'--claims={FLAGS.claims!r} is not a file.')
    path = write_report(roots, FLAGS.out, thresholds, FLAGS.smoothing,
                        FLAGS.title, FLAGS.claims)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(f'wrote {path}')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
