"""From a sweep file to its runs: loading it, checking its fields against the
base config, deciding which runs are still to do, and starting one run's
`python main.py` with its log. Both engines (local.py, ray_engine.py) start
runs through here, so that a run is the same command, workdir and
train.log on either. Nothing here imports JAX: it only builds command lines.
"""

import dataclasses
import importlib.util
import json
import os
import pathlib
import shlex
import subprocess
import sys
import tempfile
from typing import List, Sequence

from etils import epath

from bn_study import workdir as workdir_lib
from bn_study.studies import grid
from bn_study.studies import values as values_lib

ROOT = pathlib.Path(__file__).resolve().parents[2]  # Where main.py lives.


def main_command(config_path: str, workdir: str, point: grid.Point,
                 extra: Sequence[str] = ()) -> List[str]:
  """The main.py command line (argv, from the repository root) of one point;
  `extra`: FIELD=VALUE overrides for every point (--set), before its own."""
  argv = ['main.py', f'--config={config_path}', f'--workdir={workdir}']
  argv += [f'--config.{e}' for e in extra]
  argv += [f'--config.{k}={values_lib.config_value(v)}'
           for k, v in point.items()]
  return argv


# Loading a sweep file.


def load_module(file):
  """A sweep or config file, executed as a module of its own."""
  # Sweep and config files import `configs` and `bn_study` from the root.
  if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
  module_spec = importlib.util.spec_from_file_location(
      f'_bn_study_loaded_{pathlib.Path(file).stem}', file)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


def load(spec: str):
  """(base config path, points) from `path.py` or `path.py:arg`."""
  path, _, arg = spec.partition(':')
  file = pathlib.Path(path)
  if not file.is_file():
    raise grid.SweepError(f'--sweep={spec!r}: no such file {path!r}.')
  module = load_module(file)
  if not hasattr(module, 'CONFIG') or not hasattr(module, 'get_sweep'):
    raise grid.SweepError(
        f'{path} must define CONFIG (the base config file) and get_sweep() '
        '(a list of override dicts).')
  points = module.get_sweep(arg) if arg else module.get_sweep()
  if not points or not all(isinstance(p, dict) for p in points):
    raise grid.SweepError(
        f'{path}: get_sweep() must return a non-empty list of dicts of '
        f'config overrides, got {points!r:.200}.')
  return module.CONFIG, [dict(p) for p in points]


def config_file(config_path: str) -> pathlib.Path:
  """The sweep's base config file, from its CONFIG (relative to ROOT)."""
  file = pathlib.Path(config_path if os.path.isabs(config_path)
                      else ROOT / config_path)
  if not file.is_file():
    raise grid.SweepError(
        f'The sweep\'s CONFIG={config_path!r} is not a file (paths are '
        'relative to the repository root).')
  return file


def check_fields(config_path: str, points: Sequence[grid.Point]):
  """Every overridden field exists in the base config, before anything runs."""
  config = load_module(config_file(config_path)).get_config()
  for i, point in enumerate(points):
    for key in point:
      target = config
      for part in key.split('.'):
        if not hasattr(target, 'keys') or part not in target:
          raise grid.SweepError(
              f'Point {i} ({point}) sets {key!r}, which is not a field of '
              f'{config_path}.')
        target = target[part]


# Runs.


@dataclasses.dataclass
class Job:
  """One run to start or resume: its main.py argv (from the repository root)
  and its workdir (absolute, or a gs:// URL)."""
  name: str
  argv: List[str]
  workdir: str
  epochs: int  # How many it trains for.

  def finished(self) -> bool:
    return workdir_lib.is_finished(self.workdir, {'num_epochs': self.epochs})


def plan(root: epath.Path, config_path: str, names: Sequence[str],
         points: Sequence[grid.Point], extra: Sequence[str]):
  """The runs still to do, each announced as it is decided, and how many a
  scheduler stopped before: finished runs and those are skipped, interrupted
  ones resume."""
  todo, stopped = [], 0
  epochs = load_module(config_file(config_path)).get_config().num_epochs
  for e in extra:
    if e.startswith('num_epochs='):
      try:
        epochs = float(e.split('=', 1)[1])
      except ValueError as err:
        raise grid.SweepError(
            f'--set={e!r}: num_epochs must be a number.') from err
      epochs = int(epochs) if epochs.is_integer() else epochs
  for name, point in zip(names, points):
    run_dir = root / name
    wanted = {'num_epochs': epochs, **point}  # --set's, unless the point's.
    if workdir_lib.is_finished(run_dir, wanted):
      print(f'skip    {name} (finished)', flush=True)
      continue
    verdict_file = run_dir / workdir_lib.STOPPED
    if verdict_file.exists():
      verdict = json.loads(verdict_file.read_text())
      print(f'skip    {name} (stopped early by {verdict["by"]} at epoch '
            f'{verdict["epoch"]:g}; delete {verdict_file} to resume it)',
            flush=True)
      stopped += 1
      continue
    resuming = (run_dir / workdir_lib.CHECKPOINTS).is_dir()
    print(f'{"resume " if resuming else "start  "} {name}', flush=True)
    todo.append(Job(name, main_command(config_path, str(run_dir), point, extra),
                    str(run_dir), wanted['num_epochs']))
  return todo, stopped


class RunLog:
  """A run's train.log, appended to by each attempt, with the command first.

  main.py writes into a local file; for a remote workdir that file is a local
  copy, uploaded by sync() and on close.
  """

  def __init__(self, workdir: str, argv: Sequence[str]):
    self._remote = (workdir_lib.path(workdir) / workdir_lib.TRAIN_LOG
                    if '://' in workdir else None)
    if self._remote:
      handle, path = tempfile.mkstemp(suffix=f'.{workdir_lib.TRAIN_LOG}')
      os.close(handle)
      self.path = pathlib.Path(path)
      if self._remote.exists():
        self.path.write_bytes(self._remote.read_bytes())
    else:
      self.path = pathlib.Path(workdir) / workdir_lib.TRAIN_LOG
      self.path.parent.mkdir(parents=True, exist_ok=True)
    self.file = open(self.path, 'ab')
    self.file.write(f'\n$ {shlex.join(argv)}\n'.encode())
    self.file.flush()

  def sync(self):
    if self._remote:
      self._remote.write_bytes(self.path.read_bytes())

  def close(self):
    self.file.close()
    self.sync()
    if self._remote:
      self.path.unlink()


def failure(name: str, reason: str, workdir: str) -> str:
  """What a failed run prints: why (its exit status) and its log's end."""
  log = workdir_lib.path(workdir) / workdir_lib.TRAIN_LOG
  try:
    lines = log.read_text(errors='replace').strip().splitlines()[-5:]
  except OSError:
    lines = [f'(no {workdir_lib.TRAIN_LOG})']
  tail = '\n'.join('        ' + l for l in lines)
  return f'FAILED  {name} ({reason}; log: {log})\n{tail}'


def launch(job: Job, log: RunLog, **popen_args) -> subprocess.Popen:
  """Starts `python main.py ...` of `job` from the repository root (on a Ray
  worker, the copy of the checkout that Ray shipped there)."""
  return subprocess.Popen([sys.executable] + job.argv, cwd=ROOT,
                          stdout=log.file, stderr=subprocess.STDOUT,
                          **popen_args)
