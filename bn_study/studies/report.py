r"""A Markdown report with plots from finished or running training runs.

  python -m bn_study.report runs/seed_study --out=docs/results/seed_study/report

Reads each run's config.json and TensorBoard events (never retrains), groups
runs whose configs differ only in seed, and writes OUT/report.md with PNG
plots beside it (figures.py): training loss vs step, eval accuracy and loss
vs epoch for each eval mode logged (eval/, eval_precise/, eval_batch/), and
tables of steps to training-loss thresholds, final and best eval accuracy,
the epoch of lowest eval loss and wall time, as mean +- std over seeds. Then
the instruments' sections, where the runs logged them, and the verdicts of
the study's claims (claims.py).
"""

import dataclasses
import datetime
import os
import sys
from typing import Dict, List, Optional, Sequence

from absl import flags
import numpy as np

from bn_study import errors
from bn_study import workdir as workdir_lib
from bn_study.studies import claims
from bn_study.studies import figures
from bn_study.studies import runs as runs_lib
from bn_study.studies import values as values_lib

# Fields that say where or how a run was launched, not what it studies.
NOT_COMPARED = ('seed', 'data_dir', 'download', 'image_folder')
_STEPS_TO = 'steps to loss ≤ {:g}'  # A column of the Summary and Runs tables.
_table = values_lib.markdown_table
_fmt_mean_std = values_lib.fmt_mean_std


@dataclasses.dataclass
class Group:
  label: str
  fields: Dict[str, object]  # The compared fields' values in this group.
  runs: List[runs_lib.Run]


def group_runs(runs: List[runs_lib.Run]):
  """(groups, compared field names): runs equal but for NOT_COMPARED fields
  (and fields missing from some configs)."""
  flat = [workdir_lib.flatten(r.config) for r in runs]
  # Fields some configs lack (written before the field existed) can't be
  # compared; grouping ignores them.
  keys = sorted(set.intersection(*(set(f) for f in flat)) - set(NOT_COMPARED))
  differing = [k for k in keys if len({repr(f[k]) for f in flat}) > 1]
  short = values_lib.short_names(differing)
  by_key: Dict[tuple, Group] = {}
  for run, f in zip(runs, flat):
    key = tuple(repr(f.get(k)) for k in differing)
    if key not in by_key:
      fields = {k: f.get(k) for k in differing}
      label = ', '.join(f'{short[k]}={values_lib.config_value(v)}'
                        for k, v in fields.items())
      by_key[key] = Group(label or 'all runs', fields, [])
    by_key[key].runs.append(run)
  for g in by_key.values():
    g.runs.sort(key=lambda r: (r.config.get('seed', 0), r.path))
  return list(by_key.values()), differing


# Per-run summaries.


def eval_modes(runs: List[runs_lib.Run]) -> List[str]:
  """Eval prefixes logged by any run: 'eval' first, then the others."""
  prefixes = {t.split('/')[0] for r in runs for t in r.scalars
              if t.startswith('eval') and t.endswith('/accuracy')}
  return sorted(prefixes, key=lambda p: (p != 'eval', p))


def summarize_run(run, thresholds, smoothing, modes):
  out = {'hits': [None] * len(thresholds), 'modes': {}}
  loss = run.scalars.get('train/loss')
  if loss is not None:
    smoothed = figures.smooth(loss.values, smoothing)
    out['hits'] = [figures.steps_to(loss.steps, smoothed, t) for t in thresholds]
  for mode in modes:
    acc = run.scalars.get(f'{mode}/accuracy')
    if acc is None or not len(acc.steps):
      continue
    entry = {'final': float(acc.values[-1]), 'best': float(acc.values.max()),
             'epochs_done': float(figures.epochs_of(run, acc.steps)[-1])}
    eloss = run.scalars.get(f'{mode}/loss')
    if eloss is not None and len(eloss.steps):
      entry['lowest_loss_epoch'] = float(
          figures.epochs_of(run, eloss.steps)[int(np.argmin(eloss.values))])
    out['modes'][mode] = entry
  return out


def _status(run):
  if run.finished:
    return 'finished'
  total = run.total_steps
  return f'in progress (step {run.last_step}' + (f' of {total})' if total
                                                  else ')')


# Instruments (bn_study/training/instruments.py), where the runs logged them.


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


def _act_section(groups, runs, layers, out) -> List[str]:
  figures.plot_act(groups, layers, os.path.join(out, 'act.png'))
  unit = bool(_layers(runs, 'act', 'unit0') or any(
      t.endswith('/unit0/p50') for r in runs for t in r.scalars))
  lines = ['## Activations (act/)', '',
           'The input to each nonlinearity on a fixed probe batch (the eval '
           "split's first images, BN in train mode), as in Ioffe & "
           'Szegedy\'s Figure 1: median and 15th..85th percentile band '
           'over training.', '', '![act](act.png)', '']
  if unit:
    figures.plot_act(groups, layers, os.path.join(out, 'act_unit0.png'),
                     unit='unit0/')
    figures.plot_figure1(groups, layers[-1],
                         os.path.join(out, 'figure1.png'))
    lines += ['The same for one fixed unit (the first channel) per layer:',
              '', '![act, one unit](act_unit0.png)', '',
              f'Ioffe & Szegedy\'s Figure 1 on these runs: test accuracy, '
              f'and the input percentiles of one unit of the last hidden '
              f'layer ({layers[-1]}) over training:', '',
              '![figure 1](figure1.png)', '']
  rows = []
  for g in groups:
    cells = []
    for layer in layers:
      ends = []
      for q in ('p15', 'p50', 'p85'):
        c = figures.mean_curve(g.runs, f'act/{layer}/{q}')
        ends.append(None if c is None else (c[1][0], c[1][-1]))
      cells.append('-' if None in ends else ' / '.join(
          f'{a:.2f}→{b:.2f}' for a, b in ends))
    rows.append([g.label] + cells)
  return lines + _table(['group'] + [f'{l} p15 / p50 / p85 (first → last)'
                                     for l in layers], rows) + ['']


def _ics_section(groups, layers, out) -> List[str]:
  figures.plot_per_layer(groups, 'ics', layers, ('l2', 'cos'),
                         os.path.join(out, 'ics.png'),
                         'Internal covariate shift (Santurkar et al. 2018): '
                         '||G - G\'|| and cos(G, G\'), mean over seeds',
                         log=('l2',))
  rows = []
  for g in groups:
    cells = []
    for layer in layers:
      l2 = _median_over_steps(g.runs, f'ics/{layer}/l2')
      cos = _median_over_steps(g.runs, f'ics/{layer}/cos')
      cells.append('-' if l2 is None else f'{l2:.3g} / {cos:.3f}')
    rows.append([g.label] + cells)
  return (['## Internal covariate shift (ics/)', '',
           "G = a layer's gradient; G' = the same after the layers "
           "below it took this step's update (same batch). Median over "
           'the logged steps after step 0, mean over seeds:', ''] +
          _table(['group'] + [f'{l} ‖G−G′‖ / cos' for l in layers], rows) +
          ['', '![ics](ics.png)', ''])


def _smoothness_section(groups, out) -> List[str]:
  figures.plot_smoothness(groups, os.path.join(out, 'smoothness.png'))
  rows = []
  for g in groups:
    vals = [_median_over_steps(g.runs, f'smoothness/{m}')
            for m in ('loss_range', 'grad_change_max', 'beta_max')]
    rows.append([g.label] + ['-' if v is None else f'{v:.3g}' for v in vals])
  return (['## Loss landscape (smoothness/)', '',
           'Along the gradient g, at step sizes around the learning rate: '
           'the range of the loss, the largest gradient change, and that '
           'change per unit of distance (effective β-smoothness). Median '
           'over the logged steps after step 0, mean over seeds:', ''] +
          _table(['group', 'loss range', 'max ‖∇L(w−ηg) − g‖', 'β'], rows) +
          ['', '![smoothness](smoothness.png)', ''])


def instrument_sections(groups, out) -> List[str]:
  """Report sections for the act/, ics/, smoothness/ and norms/ scalars."""
  runs = [r for g in groups for r in g.runs]
  lines = []
  act_layers = _layers(runs, 'act', 'p50')
  if act_layers:
    lines += _act_section(groups, runs, act_layers, out)
  ics_layers = _layers(runs, 'ics', 'l2')
  if ics_layers:
    lines += _ics_section(groups, ics_layers, out)
  if any('smoothness/loss_range' in r.scalars for r in runs):
    lines += _smoothness_section(groups, out)
  norm_layers = _layers(runs, 'norms', 'update_ratio')
  if norm_layers:
    figures.plot_per_layer(
        groups, 'norms', norm_layers, ('w', 'update_ratio'),
        os.path.join(out, 'norms.png'),
        '||W|| and ||update|| / ||W|| per layer (the effective learning '
        'rate), mean over seeds', log=('update_ratio',))
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
  runs (bn_study/studies/claims.py)."""
  found, skipped = runs_lib.find_runs(list(roots))
  if not found:
    raise ValueError(f'No runs under {", ".join(roots)} (a run is a folder '
                     f'with {workdir_lib.CONFIG} and event files, as main.py '
                     'writes).' +
                     (' Skipped: ' + '; '.join(skipped) if skipped else ''))
  os.makedirs(out, exist_ok=True)
  groups, differing = group_runs(found)
  modes = eval_modes(found)
  summaries = {id(r): summarize_run(r, thresholds, smoothing, modes)
               for r in found}
  lines = _head(roots, out, title, found, skipped, groups, differing)
  lines += _summary(groups, summaries, modes, thresholds, smoothing, out)
  for mode in modes:
    lines += _mode_section(groups, summaries, mode, out)
  lines += instrument_sections(groups, out)
  try:
    study_claims = (claims.load(claims_file) if claims_file
                    else claims.of_sweeps(roots))
  except claims.ClaimError as e:
    raise ValueError(str(e)) from e
  if study_claims:
    lines += claims.report_lines(study_claims, found)
  rows = []
  for g in groups:
    for r in g.runs:
      s = summaries[id(r)]
      hits = [str(h) if h is not None else 'not reached' for h in s['hits']]
      accs = [f'{s["modes"][m]["final"]:.4f}' if m in s['modes'] else '-'
              for m in modes]
      rows.append([g.label, r.config.get('seed'), _status(r)] + hits + accs +
                  [f'{r.wall_time / 60:.1f}', f'`{r.path}`'])
  lines += ['## Runs', ''] + _table(
      ['group', 'seed', 'status'] + [_STEPS_TO.format(t) for t in thresholds] +
      [f'final {m}/accuracy' for m in modes] +
      ['wall time (min)', 'workdir'], rows)
  path = os.path.join(out, 'report.md')
  with open(path, 'w') as f:
    if not figures.have_matplotlib():
      lines = [l for l in lines if not l.startswith('![')]
      lines.insert(2, '*No plots: matplotlib is not installed here.*\n')
    f.write('\n'.join(lines) + '\n')
  return path


def _head(roots, out, title, found, skipped, groups, differing) -> List[str]:
  """The title, what was compared and what is common, skipped, in progress."""
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
  common = workdir_lib.flatten(found[0].config)
  shown = ['dataset', 'batch_size', 'num_epochs', 'optimizer',
           'learning_rate', 'model.norm', 'model.placement', 'eval_stats']
  lines += ['', '**Common to all runs**: ' + ', '.join(
      f'`{k}={values_lib.config_value(common[k])}`' for k in shown
      if k in common and k not in differing) + '.', '']
  if skipped:
    lines += ['**Skipped**:', ''] + [f'- {s}' for s in skipped] + ['']
  in_progress = [r for r in found if not r.finished]
  if in_progress:
    lines += [f'**{len(in_progress)} of {len(found)} runs are still in '
              'progress**; their figures are as of their last logged step.',
              '']
  return lines


def _summary(groups, summaries, modes, thresholds, smoothing,
             out) -> List[str]:
  """Steps to each loss threshold and the first eval mode's accuracy."""
  loss_png = 'train_loss.png'
  figures.plot_train_loss(groups, thresholds, smoothing,
                          os.path.join(out, loss_png))
  rows = []
  for g in groups:
    sums = [summaries[id(r)] for r in g.runs]
    cells = [values_lib.fmt_steps([s['hits'][i] for s in sums])
             for i in range(len(thresholds))]
    ema = [s['modes'].get(modes[0] if modes else 'eval') for s in sums]
    ema = [e for e in ema if e]
    lowest = [e['lowest_loss_epoch'] for e in ema if 'lowest_loss_epoch' in e]
    done = [e['epochs_done'] for e in ema]
    rows.append(
        [g.label, len(g.runs)] + cells +
        [_fmt_mean_std([e['final'] for e in ema]),
         _fmt_mean_std([e['best'] for e in ema]),
         f'{_fmt_mean_std(lowest, 1)} of {max(done, default=0):g}',
         _fmt_mean_std([r.wall_time / 60 for r in g.runs], 1)])
  return (['## Summary', '',
           f'Training loss smoothed as TensorBoard does (weight '
           f'{smoothing}); steps to a threshold: mean ± std over the seeds '
           'that reached it (reached/seeds). Eval accuracy: mean ± std over '
           'seeds.', ''] +
          _table(['group', 'seeds'] +
                 [_STEPS_TO.format(t) for t in thresholds] +
                 ['final eval acc', 'best eval acc',
                  'lowest eval loss at epoch', 'wall time (min)'], rows) +
          ['', f'![training loss]({loss_png})', ''])


def _mode_section(groups, summaries, mode, out) -> List[str]:
  """One eval mode's accuracy and loss, and its accuracy after each epoch."""
  png = f'{mode}.png'
  figures.plot_eval(groups, mode, os.path.join(out, png))
  rows = []
  for g in groups:
    ents = [summaries[id(r)]['modes'].get(mode) for r in g.runs]
    ents = [e for e in ents if e]
    if not ents:
      continue
    final_loss = [r.scalars[f'{mode}/loss'].values[-1] for r in g.runs
                  if f'{mode}/loss' in r.scalars]
    rows.append([g.label, _fmt_mean_std([e['final'] for e in ents]),
                 _fmt_mean_std([e['best'] for e in ents]),
                 _fmt_mean_std(final_loss),
                 _fmt_mean_std([e['lowest_loss_epoch'] for e in ents
                                if 'lowest_loss_epoch' in e], 1)])
  return ([f'## `{mode}/`', ''] +
          _table(['group', 'final accuracy', 'best accuracy', 'final loss',
                  'lowest loss at epoch'], rows) +
          ['', _per_epoch_table(groups, mode), '', f'![{mode}]({png})', ''])


def _per_epoch_table(groups, mode):
  """Mean accuracy over seeds after each epoch, one row per group."""
  rows, max_epoch = [], 0
  for g in groups:
    by_epoch: Dict[int, List[float]] = {}
    for r in g.runs:
      acc = r.scalars.get(f'{mode}/accuracy')
      if acc is None:
        continue
      for e, v in zip(figures.epochs_of(r, acc.steps), acc.values):
        if abs(e - round(e)) < 1e-9:  # eval_every_steps adds others.
          by_epoch.setdefault(int(round(e)), []).append(v)
    if by_epoch:
      rows.append((g.label, by_epoch))
      max_epoch = max(max_epoch, max(by_epoch))
  if not rows:
    return ''
  every = -(-max_epoch // 12)  # At most about 12 columns.
  epochs = sorted({*range(every, max_epoch + 1, every), max_epoch})
  return '\n'.join(
      [f'Mean `{mode}/accuracy` after ' +
       (f'every {every} epochs' if every > 1 else 'each epoch') + ':', ''] +
      _table(['group'] + [str(e) for e in epochs],
             [[label] + [f'{np.mean(by_epoch[e]):.3f}' if e in by_epoch
                         else '' for e in epochs]
              for label, by_epoch in rows]))


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
                      f'by the folders\' {workdir_lib.SWEEP}.')


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


def program():
  """`python -m bn_study.report`: defines the flags, then runs main. Only a
  program defines them, so that importing the modules has no side effects."""
  _define_flags()
  errors.run_program(main, __name__, __doc__)


if __name__ == '__main__':
  program()
