"""Reading what training wrote: a run's config, dataset facts and scalars.

A run is a workdir with `config.json` (written by bn_study/training/loop.py
at start; bn_study/workdir.py names every file in it). Its curves come from
the TensorBoard event files beside it, so runs still in progress read fine.
Nothing here trains or imports JAX.
"""

import dataclasses
import glob
import json
import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.util import tensor_util

from bn_study import workdir as workdir_lib


@dataclasses.dataclass
class Series:
  """One scalar tag: steps ascending, one value per step."""
  steps: np.ndarray
  values: np.ndarray
  wall_times: np.ndarray


@dataclasses.dataclass
class Run:
  path: str
  config: Dict[str, Any]
  steps_per_epoch: Optional[int]
  scalars: Dict[str, Series]

  @property
  def total_steps(self) -> Optional[int]:
    if not self.steps_per_epoch:
      return None
    return workdir_lib.run_steps(self.config['num_epochs'],
                                 self.steps_per_epoch)

  @property
  def last_step(self) -> int:
    return max((int(s.steps[-1]) for s in self.scalars.values()
                if len(s.steps)), default=0)

  @property
  def finished(self) -> bool:
    return self.total_steps is not None and self.last_step >= self.total_steps

  @property
  def wall_time(self) -> float:
    """Seconds from the first to the last event (restarts included)."""
    times = [t for s in self.scalars.values() for t in s.wall_times]
    return float(max(times) - min(times)) if times else 0.0


def event_scalars(event) -> Iterator[Tuple[str, float]]:
  """(tag, value) of every scalar in one event (not text or images)."""
  for value in event.summary.value:
    if value.HasField('tensor'):
      array = tensor_util.make_ndarray(value.tensor)
      if array.size != 1 or array.dtype.kind not in 'fiub':
        continue
      yield value.tag, float(array.reshape(()))
    elif value.HasField('simple_value'):
      yield value.tag, float(value.simple_value)


def read_scalars(workdir: str) -> Dict[str, Series]:
  """Every scalar in `workdir`'s event files, merged across files.

  A resumed run writes a new event file and repeats the steps after its last
  checkpoint; the later write of a step wins.
  """
  raw: Dict[str, Dict[int, Tuple[float, float]]] = {}
  for path in sorted(glob.glob(os.path.join(workdir,
                                            'events.out.tfevents.*'))):
    for event in event_file_loader.EventFileLoader(path).Load():
      for tag, scalar in event_scalars(event):
        prev = raw.setdefault(tag, {}).get(event.step)
        if prev is None or event.wall_time >= prev[1]:
          raw[tag][event.step] = (scalar, event.wall_time)
  out = {}
  for tag, by_step in raw.items():
    steps = np.array(sorted(by_step), dtype=np.int64)
    out[tag] = Series(steps,
                      np.array([by_step[s][0] for s in steps], np.float64),
                      np.array([by_step[s][1] for s in steps], np.float64))
  return out


def load_run(path: str) -> Run:
  with open(os.path.join(path, workdir_lib.CONFIG)) as f:
    config = json.load(f)
  steps_per_epoch = None
  try:
    with open(os.path.join(path, workdir_lib.DATASET)) as f:
      steps_per_epoch = json.load(f)['steps_per_epoch']
  except (OSError, ValueError, KeyError):
    pass
  return Run(path, config, steps_per_epoch, read_scalars(path))


def find_runs(roots: List[str]) -> Tuple[List[Run], List[str]]:
  """Runs under `roots` (each a run or a folder of runs), and what was skipped.

  Skipped: folders that hold event files but no config.json, and runs with no
  scalars yet, each with the reason.
  """
  runs, skipped = [], []
  for root in roots:
    if not os.path.isdir(root):
      skipped.append(f'{root}: not a directory')
      continue
    first = len(runs)
    for dirpath, dirnames, filenames in os.walk(root):
      # Hidden folders are tools' own (workdir.TUNE_DIR: Ray Tune's records).
      dirnames[:] = sorted(d for d in dirnames if d != workdir_lib.CHECKPOINTS
                           and not d.startswith('.'))
      has_events = any(f.startswith('events.out.tfevents.') for f in filenames)
      if workdir_lib.CONFIG in filenames:
        run = load_run(dirpath)
        if run.scalars:
          runs.append(run)
        else:
          skipped.append(f'{dirpath}: no scalars in its event files yet')
        dirnames[:] = []  # A run's subfolders are its own (checkpoints).
      elif has_events:
        skipped.append(f'{dirpath}: event files but no {workdir_lib.CONFIG}')
    runs[first:] = sorted(runs[first:], key=_sweep_order(root))
  return runs, skipped


def _sweep_order(root):
  """Sort key: a sweep's runs in the order its sweep.json lists them."""
  order = {}
  try:
    with open(os.path.join(root, workdir_lib.SWEEP)) as f:
      order = {r['name']: i for i, r in enumerate(json.load(f)['runs'])}
  except (OSError, ValueError, KeyError, TypeError):
    pass
  return lambda run: (order.get(os.path.basename(run.path), len(order)),
                      run.path)
