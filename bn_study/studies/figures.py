"""The report's curves and figures: runs' scalars smoothed, banded over seeds
and drawn into PNG files. Where matplotlib is not installed nothing is drawn,
and the report keeps its tables."""

import importlib.util
from typing import Optional, Sequence

import numpy as np

from bn_study.studies import runs as runs_lib


# Curves.


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


def epochs_of(run: runs_lib.Run, steps: np.ndarray) -> np.ndarray:
  """Steps as epochs (steps, where the run's dataset.json is missing)."""
  return steps / run.steps_per_epoch if run.steps_per_epoch else steps


def _band(curves):
  """Mean, min and max over runs at each x any run logged."""
  xs = np.unique(np.concatenate([x for x, _ in curves]))
  table = np.full((len(curves), len(xs)), np.nan)
  for i, (x, y) in enumerate(curves):
    table[i, np.searchsorted(xs, x)] = y
  return xs, np.nanmean(table, 0), np.nanmin(table, 0), np.nanmax(table, 0)


def mean_curve(runs, tag):
  """(steps, mean over the runs that logged `tag`), or None if none did."""
  curves = [(r.scalars[tag].steps, r.scalars[tag].values) for r in runs
            if tag in r.scalars]
  return _band(curves)[:2] if curves else None


# Figures.


def have_matplotlib() -> bool:
  return importlib.util.find_spec('matplotlib') is not None


def _plt():
  """pyplot, or None where matplotlib is not installed."""
  if not have_matplotlib():
    return None
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')  # No display: files only.
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _save(path, draw, dpi=100, **subplots):
  """draw(fig, axes) on plt.subplots(**subplots), saved as the PNG `path`;
  nothing without matplotlib."""
  plt = _plt()
  if plt is None:
    return
  fig, axes = plt.subplots(**subplots)
  try:
    draw(fig, axes)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
  finally:
    plt.close(fig)  # pyplot keeps every open figure alive otherwise.


def _draw_band(ax, curves, label, color):
  xs, mean, lo, hi = _band(curves)
  ax.plot(xs, mean, color=color, label=label, lw=1.5)
  if len(curves) > 1:
    ax.fill_between(xs, lo, hi, color=color, alpha=0.2, lw=0)


def plot_train_loss(groups, thresholds, smoothing, path):
  def draw(fig, ax):
    del fig
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
  _save(path, draw, dpi=110, figsize=(7, 4.5))


def plot_eval(groups, mode, path):
  def draw(fig, axes):
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
  _save(path, draw, dpi=110, nrows=1, ncols=2, figsize=(11, 4.2))


# Instruments (bn_study/training/instruments.py), where the runs logged them.


def plot_act(groups, layers, path, unit=''):
  """Ioffe & Szegedy's Figure 1 per layer: p15..p85 band and p50 over steps."""
  def draw(fig, axes):
    for j, g in enumerate(groups):
      for i, layer in enumerate(layers):
        ax = axes[i][j]
        base = f'act/{layer}/{unit}'
        curves = {q: mean_curve(g.runs, base + q)
                  for q in ('p15', 'p50', 'p85')}
        if all(c is not None for c in curves.values()):
          ax.fill_between(curves['p15'][0], curves['p15'][1],
                          curves['p85'][1], color=f'C{j}', alpha=0.25, lw=0)
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
    fig.suptitle(f'Input to each nonlinearity, probe batch, {what}:\n15th, '
                 '50th, 85th percentiles (mean over seeds)', fontsize=9)
  _save(path, draw, nrows=len(layers), ncols=len(groups), squeeze=False,
        figsize=(3.6 * len(groups), 2.2 * len(layers)), sharex=True)


def plot_figure1(groups, layer, path):
  """Ioffe & Szegedy's Figure 1 on these runs: (a) test accuracy vs step per
  group; then per group, one unit's input percentiles over training."""
  def draw(fig, axes):
    del fig
    axes = axes[0]
    for j, g in enumerate(groups):
      curves = [(r.scalars['eval/accuracy'].steps,
                 r.scalars['eval/accuracy'].values)
                for r in g.runs if 'eval/accuracy' in r.scalars]
      if curves:
        _draw_band(axes[0], curves, g.label, f'C{j}')
      ax = axes[1 + j]
      base = f'act/{layer}/unit0/'
      for q, lw in (('p15', 0.8), ('p50', 1.6), ('p85', 0.8)):
        c = mean_curve(g.runs, base + q)
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
  _save(path, draw, nrows=1, ncols=1 + len(groups), squeeze=False,
        figsize=(4 * (1 + len(groups)), 3.4))


def plot_per_layer(groups, prefix, layers, metrics, path, title, log=()):
  """Rows = metrics, columns = layers; one line per group (mean over seeds)."""
  def draw(fig, axes):
    for i, metric in enumerate(metrics):
      for k, layer in enumerate(layers):
        ax = axes[i][k]
        for j, g in enumerate(groups):
          c = mean_curve(g.runs, f'{prefix}/{layer}/{metric}')
          if c is not None:
            ax.plot(c[0], c[1], color=f'C{j}', lw=1.2, label=g.label)
        if metric in log:
          ax.set_yscale('log')
        ax.set_title(f'{layer}: {metric}', fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
  _save(path, draw, nrows=len(metrics), ncols=len(layers), squeeze=False,
        figsize=(2.8 * len(layers), 2.4 * len(metrics)), sharex=True)


def plot_smoothness(groups, path):
  def draw(fig, axes):
    metrics = ('loss_range', 'grad_change_max', 'beta_max')
    for ax, metric in zip(axes, metrics):
      for j, g in enumerate(groups):
        c = mean_curve(g.runs, f'smoothness/{metric}')
        if c is not None:
          ax.plot(c[0], c[1], color=f'C{j}', lw=1.2, label=g.label)
      ax.set_yscale('log')
      ax.set_title(metric, fontsize=9)
      ax.set_xlabel('step')
      ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle('Loss landscape along the gradient (Santurkar et al. 2018); '
                 'mean over seeds', fontsize=9)
  _save(path, draw, nrows=1, ncols=3, figsize=(12, 3.6))
