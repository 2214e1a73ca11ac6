"""The benchmark's end-to-end epoch: epoch 2 of a real 2-epoch run against
steps x step time + eval, and the lines that print it."""

from typing import Dict, List

import numpy as np

from bn_study.studies import runs
from bn_study.tools import step_timing
from bn_study.training import loop


def epoch_end_to_end(config, workdir: str, step_s: float, eval_s: float
                     ) -> Dict[str, float]:
  """Epoch 2 of a real 2-epoch run (compilation and the first epoch's
  decoding excluded), from its eval events' wall times, against
  steps x step time + eval. The epoch's last train summary, written once its
  last step is done, splits the wall time into the steps and the eval."""
  config = config.copy_and_resolve_references()
  config.num_epochs = 2
  config.eval_stats = 'ema'
  stalls = step_timing.kernel_stalls()
  loop.train_and_evaluate(config, workdir)
  stalls_after = step_timing.kernel_stalls()
  scalars = runs.read_scalars(workdir)
  evals = scalars['eval/accuracy']
  wall = float(evals.wall_times[1] - evals.wall_times[0])
  steps_per_epoch = int(evals.steps[1] - evals.steps[0])
  predicted = step_timing.predicted_epoch_s(steps_per_epoch, step_s,
                                            eval_s)
  out = {'epoch_wall_s': wall, 'epoch_predicted_s': predicted,
         'epoch_gap': step_timing.epoch_gap(wall, predicted),
         'epoch_step_s': step_s,
         'epoch_steps': steps_per_epoch, 'epoch_eval_s': eval_s}
  if stalls and stalls_after:  # Over both epochs: where an eval stalls.
    out.update({f'epoch_run_{k}': stalls_after[k] - stalls[k] for k in stalls})
  losses = scalars.get('train/loss')
  last = ([] if losses is None else
          np.flatnonzero(losses.steps == evals.steps[1]))
  if len(last):  # The last step was a log step.
    steps_done = float(losses.wall_times[last[0]])
    out.update(epoch_steps_wall_s=steps_done - float(evals.wall_times[0]),
               epoch_eval_wall_s=float(evals.wall_times[1]) - steps_done)
  return out


def summary_lines(result: dict) -> List[str]:
  """The epoch's lines of the benchmark's printed table; none where the run
  had no epoch."""
  if 'epoch_wall_s' not in result:
    return []
  lines = [f'epoch 2 of 2 at batch {result["epoch_batch_size"]}: '
           f'{result["epoch_wall_s"]:.1f} s wall vs '
           f'{result["epoch_predicted_s"]:.1f} s steps x step time + '
           f'eval ({result["epoch_gap"] * 100:+.1f}%)']
  if 'epoch_eval_wall_s' in result:
    steps = result['epoch_steps']
    lines.append(f'  of which its {steps} steps '
                 f'{result["epoch_steps_wall_s"]:.1f} s '
                 f'({result["epoch_steps_wall_s"] / steps * 1e3:.1f} ms '
                 f'each) and its eval {result["epoch_eval_wall_s"]:.1f} s '
                 f'(timed alone: {result["epoch_eval_s"]:.1f} s)')
  if 'epoch_run_compaction_stalls' in result:
    lines.append('  machine-wide during the 2-epoch run: allocations '
                 'stalled on compaction '
                 f'{result["epoch_run_compaction_stalls"]}, on reclaim '
                 f'{result["epoch_run_reclaim_stalls"]}')
  if 'epoch_gap_bracketed' in result:
    lines.append(f'  against the step timed again after it '
                 f'({result["epoch_step_s_after"] * 1e3:.1f} ms, before '
                 f'{result["epoch_step_s"] * 1e3:.1f} ms) and their mean: '
                 f'{result["epoch_predicted_bracketed_s"]:.1f} s '
                 f'({result["epoch_gap_bracketed"] * 100:+.1f}%)')
  return lines
