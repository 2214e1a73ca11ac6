"""The benchmark's --loop rows: the train loop against the step.

  python -m bn_study.benchmark --loop="configs/wbn.py@2500 data_dir=/data"

Each row is a config at a batch size, with FIELD=VALUE overrides. Its step
is timed alone (step_timing.py), then main.py runs it twice: once for about
--loop_seconds of train steps, its timing.json (training/loop_timing.py)
giving the wall time per step, and once to its first step, the compilation
cache warm, for the time from launch.
"""

import ast
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import List, Tuple

from bn_study import errors
from bn_study import workdir as workdir_lib
from bn_study.data import feeds
from bn_study.runtime import mesh as mesh_lib
from bn_study.studies import jobs
from bn_study.tools import step_timing
from bn_study.training import preemption
from bn_study.training import validate as validate_lib

Row = Tuple[str, int, List[str]]  # CONFIG, BATCH, the FIELD=VALUE overrides.


def parse_loop(specs) -> List[Row]:
  """The --loop flag's values as rows."""
  rows = []
  for spec in specs:
    first, *overrides = spec.split()
    config_spec, _, batch = first.rpartition('@')
    if (not config_spec or not batch.isdigit() or int(batch) <= 0
        or not all('=' in o for o in overrides)):
      raise errors.UserError(
          f'--loop={spec!r}: give CONFIG@BATCH, then any FIELD=VALUE '
          'overrides, e.g. "configs/bn_paper_fig1.py@60" or '
          '"configs/wbn.py@2500 data_dir=/data".')
    rows.append((config_spec, int(batch), overrides))
  return rows


def _config_from_file(spec: str):
  """`configs/x.py` or `configs/x.py:arg` -> its ConfigDict."""
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    raise errors.UserError(f'no config file {path!r}.')
  module = jobs.load_module(path)
  return module.get_config(arg) if arg else module.get_config()


def _override(config, field: str, text: str):
  """config.FIELD = the Python literal in `text` (else the string)."""
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text
  *parents, leaf = field.split('.')
  target = config
  for p in parents:
    target = target.get(p)
  if not hasattr(target, 'keys') or leaf not in target:
    # Else the ConfigDict would take it as a new field, which main.py's
    # --config.FIELD then rejects only after the step is timed.
    raise errors.UserError(f'{field} is not a config field; every field, '
                           'with what it means, is in configs/default.py.')
  try:
    target[leaf] = value
  except TypeError as e:  # ml_collections keeps each field's type.
    raise errors.UserError(f'{field}={text}: {e}') from e


def row_config(row: Row):
  """The row's config, validated as main.py will validate it, so that a
  mistake in any row stops the benchmark before it measures one."""
  config_spec, batch_size, overrides = row
  try:
    config = _config_from_file(config_spec)
    config.batch_size = batch_size
    for o in overrides:
      _override(config, *o.split('=', 1))
    validate_lib.validate(config)
    mesh_lib.check_batch_size('batch_size', batch_size, mesh_lib.make_mesh())
  except errors.UserError as e:
    raise errors.UserError(
        f'--loop={" ".join([f"{config_spec}@{batch_size}", *overrides])!r}: '
        f'{e}') from e
  return config


def _launch(config_spec, batch_size, overrides, workdir, cache_dir,
            stop_step):
  """main.py on `config_spec` at `batch_size`, stopping itself (SIGTERM,
  at the end of the call that holds `stop_step`); returns (launch time,
  its timing.json)."""
  env = dict(os.environ)
  env[preemption.SELF_SIGNAL_ENV] = f'{stop_step}:SIGTERM'
  cmd = [sys.executable, os.path.join(jobs.ROOT, 'main.py'),
         f'--config={config_spec}', f'--workdir={workdir}',
         f'--compilation_cache_dir={cache_dir}',
         f'--config.batch_size={batch_size}']
  cmd += [f'--config.{o}' for o in overrides]
  launched = time.time()
  proc = subprocess.run(cmd, cwd=jobs.ROOT, env=env, capture_output=True,
                        text=True, check=False)
  if proc.returncode not in (0, errors.Preempted.EXIT_STATUS):
    raise RuntimeError(f'{" ".join(cmd)} failed:\n{proc.stderr[-3000:]}')
  with open(os.path.join(workdir, workdir_lib.TIMING)) as f:
    return launched, json.load(f)


def loop_row(row: Row, config, cache_dir: str, loop_seconds: float,
             repeats: int, warmup: int) -> dict:
  """The train loop against the step: `loop_overhead`, a real run's wall
  time per train step (evals, instruments, log writes and checkpoints
  excluded: bn_study/training/loop_timing.py) over the jitted step timed
  alone; and `startup_s`, from launching main.py to its first step done,
  with the compilation cache already warm. `config` is row_config(row)."""
  config_spec, batch_size, overrides = row
  feed = feeds.make_feed(config, mesh_lib.make_mesh(), 1)
  info, steps_per_epoch = feed.info, feed.steps_per_epoch
  on_device = feed.on_device
  del feed
  step_s = step_timing.measure_batch_size(
      step_timing.make_setup(config, info, steps_per_epoch), batch_size,
      repeats, warmup, None)['step_s']
  num_steps = workdir_lib.run_steps(config.num_epochs, steps_per_epoch)
  stop = int(min(num_steps, max(20, loop_seconds / step_s)))
  with tempfile.TemporaryDirectory() as tmp:
    # The first launch fills the compilation cache; its steps are timed
    # after its first call, so compiling is not in them.
    _, timing = _launch(config_spec, batch_size, overrides,
                        os.path.join(tmp, 'run'), cache_dir, stop)
    launched, warm = _launch(config_spec, batch_size, overrides,
                             os.path.join(tmp, 'startup'), cache_dir, 1)
  loop_step_s = timing['train_s'] / max(1, timing['train_steps'])
  return {'config': config_spec, 'batch_size': batch_size,
          'overrides': list(overrides), 'data': info.name,
          'model': step_timing.describe_model(config.model),
          'data_on_device': on_device,
          'step_s': step_s, 'loop_step_s': loop_step_s,
          'loop_steps': timing['train_steps'],
          'loop_overhead': loop_step_s / step_s,
          'startup_s': warm['first_step_at'] - launched}


def measure(rows: List[Row], cache_dir: str, loop_seconds: float,
            repeats: int, warmup: int) -> dict:
  """Every row, after every row's config is validated; `cache_dir` is the
  persistent compilation cache, which this process must have enabled too."""
  configs = [row_config(row) for row in rows]
  return {**step_timing.environment(), 'loop': [
      loop_row(row, config, cache_dir, loop_seconds, repeats, warmup)
      for row, config in zip(rows, configs)]}


def format_loop_table(result: dict) -> str:
  lines = [f'{result["device"]} x{result["device_count"]}, jax '
           f'{result["jax_version"]}, {result["date"]}', '',
           f'{"config":<28} {"batch":>6} {"step ms":>9} {"loop ms":>9} '
           f'{"overhead":>9} {"steps":>7} {"startup s":>10}']
  for r in result['loop']:
    lines.append(f'{r["config"]:<28} {r["batch_size"]:>6} '
                 f'{r["step_s"] * 1e3:>9.3f} {r["loop_step_s"] * 1e3:>9.3f} '
                 f'{r["loop_overhead"]:>9.2f} {r["loop_steps"]:>7} '
                 f'{r["startup_s"]:>10.1f}')
  return '\n'.join(lines)
