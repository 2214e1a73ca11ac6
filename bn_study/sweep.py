r"""Sweeps: a grid of config overrides, each point trained in its own workdir.

A sweep file (configs/sweeps/*.py) names its base config and returns the grid:

  CONFIG = 'configs/wbn.py'

  def get_sweep(arg=None):
    return sweep.product(
        sweep.zipped(sweep.values('model.norm', ['none', 'batch']),
                     sweep.values('eval_stats', ['ema', 'ema,precise'])),
        sweep.values('seed', [0, 1, 2]))

  python -m bn_study.sweep --sweep=configs/sweeps/X.py --workdir=runs/X
  python -m bn_study.sweep --sweep=configs/sweeps/X.py:ARG ...  # get_sweep(ARG)

Each point runs `python main.py` in `<workdir>/<name>`, its name made of the
fields whose values differ between points (`norm=batch,seed=1`). Finished runs
are skipped and interrupted ones resume (main.py resumes from a workdir's
checkpoints). Nothing here imports JAX: it only builds command lines.
"""

import concurrent.futures
import importlib.util
import itertools
import json
import os
import pathlib
import shlex
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from absl import app
from absl import flags

ROOT = pathlib.Path(__file__).resolve().parent.parent  # Where main.py lives.

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


# Names and commands.


def _format_value(value) -> str:
  if isinstance(value, (tuple, list)):
    return '(' + ','.join(_format_value(v) for v in value) + ')'
  return str(value)


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
  short = {k: k.rsplit('.', 1)[-1] for k in varying}
  if len(set(short.values())) < len(short):
    short = {k: k for k in varying}
  names = []
  for p in points:
    # A comma inside a value (eval_stats=ema,precise) would read as a separator.
    name = ','.join(f'{short[k]}={_format_value(p[k]).replace(",", "+")}'
                    for k in varying if k in p)
    names.append(name.replace('/', '_').replace(' ', '') or 'base')
  dupes = sorted({n for n in names if names.count(n) > 1})
  if dupes:
    raise SweepError(f'The sweep has repeated points: {dupes}. Every point '
                     'must differ from the others in some field.')
  return names


def main_command(config_path: str, workdir: str, point: Point,
                 extra: Sequence[str] = ()) -> List[str]:
  """The main.py command line (argv, from the repository root) of one point;
  `extra`: FIELD=VALUE overrides for every point (--set), before its own."""
  argv = ['main.py', f'--config={config_path}', f'--workdir={workdir}']
  argv += [f'--config.{e}' for e in extra]
  argv += [f'--config.{k}={_format_value(v)}' for k, v in point.items()]
  return argv


# Loading a sweep file.


def load_module(file):
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
    raise SweepError(f'--sweep={spec!r}: no such file {path!r}.')
  module = load_module(file)
  if not hasattr(module, 'CONFIG') or not hasattr(module, 'get_sweep'):
    raise SweepError(f'{path} must define CONFIG (the base config file) and '
                     'get_sweep() (a list of override dicts).')
  points = module.get_sweep(arg) if arg else module.get_sweep()
  if not points or not all(isinstance(p, dict) for p in points):
    raise SweepError(f'{path}: get_sweep() must return a non-empty list of '
                     f'dicts of config overrides, got {points!r:.200}.')
  return module.CONFIG, [dict(p) for p in points]


def check_fields(config_path: str, points: Sequence[Point]):
  """Every overridden field exists in the base config, before anything runs."""
  file = config_path if os.path.isabs(config_path) else ROOT / config_path
  if not pathlib.Path(file).is_file():
    raise SweepError(f'The sweep\'s CONFIG={config_path!r} is not a file '
                     '(paths are relative to the repository root).')
  config = load_module(file).get_config()
  for i, point in enumerate(points):
    for key in point:
      target = config
      for part in key.split('.'):
        if not hasattr(target, 'keys') or part not in target:
          raise SweepError(f'Point {i} ({point}) sets {key!r}, which is not a '
                           f'field of {config_path}.')
        target = target[part]


def is_finished(workdir: pathlib.Path, point: Optional[Point] = None) -> bool:
  """Whether main.py has written its final checkpoint in `workdir`.

  A `point` that sets num_epochs asks for that many, whatever the workdir's
  config.json says: raising it extends finished runs (main.py resumes them).
  """
  try:
    config = json.loads((workdir / 'config.json').read_text())
    dataset = json.loads((workdir / 'dataset.json').read_text())
  except (OSError, ValueError):
    return False
  epochs = (point or {}).get('num_epochs', config['num_epochs'])
  total = epochs * dataset['steps_per_epoch']
  ckpt_dir = workdir / 'checkpoints'
  steps = [int(p.name) for p in ckpt_dir.iterdir()
           if p.name.isdigit()] if ckpt_dir.is_dir() else []
  return bool(steps) and max(steps) >= total


def _run_one(argv, workdir: pathlib.Path, name: str):
  workdir.mkdir(parents=True, exist_ok=True)
  start = time.time()
  with open(workdir / 'train.log', 'ab') as log:
    log.write(f'\n$ {shlex.join(argv)}\n'.encode())
    log.flush()
    proc = subprocess.run([sys.executable] + argv, cwd=ROOT, stdout=log,
                          stderr=subprocess.STDOUT, check=False)
  seconds = time.time() - start
  if proc.returncode == 0:
    print(f'done    {name} ({seconds:.0f} s)', flush=True)
  else:
    tail = (workdir / 'train.log').read_text(errors='replace').strip()
    tail = '\n'.join('        ' + l for l in tail.splitlines()[-5:])
    print(f'FAILED  {name} (exit {proc.returncode}; log: '
          f'{workdir / "train.log"})\n{tail}', flush=True)
  return proc.returncode


def run(spec: str, workdir: str, parallel: int = 1, dry_run: bool = False,
        print_commands: bool = False, extra: Sequence[str] = ()) -> int:
  """Runs (or lists) a sweep; the number of runs that failed. `extra`:
  FIELD=VALUE overrides of every run (where the data is, say)."""
  config_path, points = load(spec)
  for e in extra:
    if '=' not in e:
      raise SweepError(f'--set={e!r}: give FIELD=VALUE, e.g. '
                       'data_dir=/data/tfds.')
  check_fields(config_path, [{e.split('=', 1)[0]: None for e in extra}])
  names = run_names(points)
  check_fields(config_path, points)
  root = pathlib.Path(os.path.abspath(workdir))
  if dry_run or print_commands:
    for name, point in zip(names, points):
      if print_commands:
        print(shlex.join(['python'] + main_command(
            config_path, os.path.join(workdir, name), point, extra)))
      else:
        print(f'{name}  {json.dumps(point)}')
    return 0
  root.mkdir(parents=True, exist_ok=True)
  (root / 'sweep.json').write_text(json.dumps(
      {'sweep': spec, 'config': config_path,
       'runs': [{'name': n, 'overrides': p} for n, p in zip(names, points)]},
      indent=2))
  todo = []
  for name, point in zip(names, points):
    run_dir = root / name
    if is_finished(run_dir, point):
      print(f'skip    {name} (finished)', flush=True)
      continue
    resuming = (run_dir / 'checkpoints').is_dir()
    print(f'{"resume " if resuming else "start  "} {name}', flush=True)
    todo.append((main_command(config_path, str(run_dir), point, extra),
                 run_dir, name))
  with concurrent.futures.ThreadPoolExecutor(max(1, parallel)) as pool:
    codes = list(pool.map(lambda t: _run_one(*t), todo))
  failed = sum(c != 0 for c in codes)
  print(f'{len(points)} runs: {len(points) - len(todo)} already finished, '
        f'{len(todo) - failed} ran, {failed} failed.', flush=True)
  return failed


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not FLAGS.sweep or not FLAGS.workdir:
    print('error: --sweep and --workdir are required.', file=sys.stderr)
    sys.exit(2)
  if FLAGS.parallel < 1:
    print(f'error: --parallel={FLAGS.parallel} must be at least 1.',
          file=sys.stderr)
    sys.exit(2)
  # Sweep files import bn_study.sweep, a different module object from this
  # __main__ one: raise and catch through that one.
  from bn_study import sweep as lib  # pylint: disable=g-import-not-at-top
  try:
    failed = lib.run(FLAGS.sweep, FLAGS.workdir, FLAGS.parallel, FLAGS.dry_run,
                     FLAGS.print_commands, FLAGS.set)
  except lib.SweepError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  sys.exit(1 if failed else 0)


def _define_flags():
  # Here, not at import: sweep files import this module under its package
  # name, a second module object beside __main__.
  flags.DEFINE_string('sweep', None, 'A sweep file (configs/sweeps/*.py), '
                      'optionally `:ARG` passed to its get_sweep().')
  flags.DEFINE_string('workdir', None, 'Parent of every run\'s workdir.')
  flags.DEFINE_integer('parallel', 1, 'Runs at once.')
  flags.DEFINE_bool('dry_run', False, 'Print each run\'s name and overrides; '
                    'run nothing.')
  flags.DEFINE_multi_string('set', [], 'FIELD=VALUE: a config override of '
                            'every run (e.g. data_dir=/data), before the '
                            'sweep\'s own.')
  flags.DEFINE_bool('print_commands', False, 'Print the main.py command of '
                    'each run (for other machines); run nothing.')


FLAGS = flags.FLAGS

if __name__ == '__main__':
  _define_flags()
  app.run(main)
