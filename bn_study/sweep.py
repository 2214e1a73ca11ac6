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

Besides lists, a sweep may sample: sweep.sample({'learning_rate':
sweep.loguniform(1e-3, 1e-1)}, num_samples=8) is 8 points, the same ones at
every launch. `--engine=ray` runs the points as Ray Tune trials on a cluster
(bn_study/ray_engine.py), where ASHA can stop poor runs early.

Each point runs `python main.py` in `<workdir>/<name>`, its name made of the
fields whose values differ between points (`norm=batch,seed=1`). Finished runs
are skipped and interrupted ones resume (main.py resumes from a workdir's
checkpoints). Nothing here imports JAX: it only builds command lines.
"""

import concurrent.futures
import dataclasses
import importlib.util
import itertools
import json
import math
import os
import pathlib
import random
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

from absl import app
from absl import flags
from etils import epath

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


# Search spaces: distributions, sampled here and now, with a fixed seed, so
# that every launch of a sweep has the same points, names and runs (and so
# they skip and resume as a grid's do), on either engine.


@dataclasses.dataclass(frozen=True)
class Distribution:
  """A field's values to sample from, as Tune names them."""
  kind: str  # uniform | loguniform | randint | choice
  args: tuple

  def sample(self, rng: random.Random):
    if self.kind == 'choice':
      return rng.choice(self.args)
    low, high = self.args
    if self.kind == 'randint':
      return rng.randrange(low, high)
    while True:
      if self.kind == 'loguniform':
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
      else:
        value = rng.uniform(low, high)
      value = float(f'{value:.4g}')  # As the run's name shows it.
      if low <= value < high:  # Rounding can reach either end.
        return value


def _bounds(kind, low, high, positive=False):
  if not low < high or (positive and low <= 0):
    raise SweepError(f'{kind}({low!r}, {high!r}) needs low < high' +
                     (' and low > 0.' if positive else '.'))
  return Distribution(kind, (low, high))


def uniform(low: float, high: float) -> Distribution:
  """Floats evenly in [low, high), to 4 significant digits."""
  return _bounds('uniform', low, high)


def loguniform(low: float, high: float) -> Distribution:
  """Floats evenly in log scale in [low, high) (learning rates)."""
  return _bounds('loguniform', low, high, positive=True)


def randint(low: int, high: int) -> Distribution:
  """Integers in [low, high)."""
  return _bounds('randint', low, high)


def choice(vals: Sequence[Any]) -> Distribution:
  """One of `vals`, each equally likely."""
  if isinstance(vals, (str, bytes)) or not len(vals):
    raise SweepError(f'choice() needs a non-empty list, got {vals!r}.')
  return Distribution('choice', tuple(vals))


def sample(space: Dict[str, Any], num_samples: int, seed: int = 0
           ) -> List[Point]:
  """`num_samples` points; each field drawn from its distribution (a plain
  value is the same in every point). The same space and seed give the same
  points; a field added to the space changes them all."""
  if num_samples < 1:
    raise SweepError(f'sample() needs num_samples >= 1, got {num_samples}.')
  rng = random.Random(seed)
  return [{k: v.sample(rng) if isinstance(v, Distribution) else v
           for k, v in space.items()} for _ in range(num_samples)]


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


def config_file(config_path: str) -> pathlib.Path:
  file = pathlib.Path(config_path if os.path.isabs(config_path)
                      else ROOT / config_path)
  if not file.is_file():
    raise SweepError(f'The sweep\'s CONFIG={config_path!r} is not a file '
                     '(paths are relative to the repository root).')
  return file


def check_fields(config_path: str, points: Sequence[Point]):
  """Every overridden field exists in the base config, before anything runs."""
  config = load_module(config_file(config_path)).get_config()
  for i, point in enumerate(points):
    for key in point:
      target = config
      for part in key.split('.'):
        if not hasattr(target, 'keys') or part not in target:
          raise SweepError(f'Point {i} ({point}) sets {key!r}, which is not a '
                           f'field of {config_path}.')
        target = target[part]


def workdir_path(workdir) -> epath.Path:
  """A workdir as a path: local ones absolute; gs:// and other remote ones
  through the same file systems as main.py's."""
  text = str(workdir)
  return epath.Path(text if '://' in text else os.path.abspath(text))


def is_finished(workdir, point: Optional[Point] = None) -> bool:
  """Whether main.py has written its final checkpoint in `workdir`.

  A `point` that sets num_epochs asks for that many, whatever the workdir's
  config.json says: raising it extends finished runs (main.py resumes them).
  """
  workdir = workdir_path(workdir)
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


STOPPED = 'stopped_early.json'  # A scheduler's verdict on a run (Ray engine).


@dataclasses.dataclass
class Job:
  """One run to start or resume: its main.py argv (from the repository root)
  and its workdir (absolute, or a gs:// URL)."""
  name: str
  argv: List[str]
  workdir: str
  epochs: int  # How many it trains for.

  def finished(self) -> bool:
    return is_finished(self.workdir, {'num_epochs': self.epochs})


def plan(root: epath.Path, config_path: str, names: Sequence[str],
         points: Sequence[Point], extra: Sequence[str]):
  """The runs still to do, each announced as it is decided, and how many a
  scheduler stopped before: finished runs and those are skipped, interrupted
  ones resume."""
  todo, stopped = [], 0
  epochs = load_module(config_file(config_path)).get_config().num_epochs
  for e in extra:
    if e.startswith('num_epochs='):
      try:
        epochs = int(e.split('=', 1)[1])
      except ValueError as err:
        raise SweepError(
            f'--set={e!r}: num_epochs must be an integer.') from err
  for name, point in zip(names, points):
    run_dir = root / name
    wanted = {'num_epochs': epochs, **point}  # --set's, unless the point's.
    if is_finished(run_dir, wanted):
      print(f'skip    {name} (finished)', flush=True)
      continue
    if (run_dir / STOPPED).exists():
      verdict = json.loads((run_dir / STOPPED).read_text())
      print(f'skip    {name} (stopped early by {verdict["by"]} at epoch '
            f'{verdict["epoch"]:g}; delete {run_dir / STOPPED} to resume it)',
            flush=True)
      stopped += 1
      continue
    resuming = (run_dir / 'checkpoints').is_dir()
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
    self._remote = (workdir_path(workdir) / 'train.log' if '://' in workdir
                    else None)
    if self._remote:
      handle, path = tempfile.mkstemp(suffix='.train.log')
      os.close(handle)
      self.path = pathlib.Path(path)
      if self._remote.exists():
        self.path.write_bytes(self._remote.read_bytes())
    else:
      self.path = pathlib.Path(workdir) / 'train.log'
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
  log = workdir_path(workdir) / 'train.log'
  try:
    lines = log.read_text(errors='replace').strip().splitlines()[-5:]
  except OSError:
    lines = ['(no train.log)']
  tail = '\n'.join('        ' + l for l in lines)
  return f'FAILED  {name} ({reason}; log: {log})\n{tail}'


def launch(job: Job, log: RunLog, root: pathlib.Path = ROOT,
           **popen_args) -> subprocess.Popen:
  """Starts `python main.py ...` of `job` from the repository at `root`."""
  return subprocess.Popen([sys.executable] + job.argv, cwd=root,
                          stdout=log.file, stderr=subprocess.STDOUT,
                          **popen_args)


def _run_local(job: Job) -> str:
  start = time.time()
  log = RunLog(job.workdir, job.argv)
  try:
    code = launch(job, log).wait()
  finally:
    log.close()
  if code == 0:
    print(f'done    {job.name} ({time.time() - start:.0f} s)', flush=True)
    return 'done'
  print(failure(job.name, f'exit {code}', job.workdir), flush=True)
  return 'failed'


def run(spec: str, workdir: str, parallel: int = 1, dry_run: bool = False,
        print_commands: bool = False, extra: Sequence[str] = (),
        engine=None) -> int:
  """Runs (or lists) a sweep; the number of runs that failed or were
  interrupted. `extra`: FIELD=VALUE overrides of every run (where the data
  is, say). `engine`: a function of the jobs and the sweep's workdir to
  {name: 'done'|'failed'|'stopped'|'interrupted'}; None: the local engine,
  `parallel` subprocesses at once."""
  config_path, points = load(spec)
  for e in extra:
    if '=' not in e:
      raise SweepError(f'--set={e!r}: give FIELD=VALUE, e.g. '
                       'data_dir=/data/tfds.')
  check_fields(config_path, [{e.split('=', 1)[0]: None for e in extra}])
  names = run_names(points)
  check_fields(config_path, points)
  root = workdir_path(workdir)
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
  todo, earlier = plan(root, config_path, names, points, extra)
  if not todo:
    outcomes = {}
  elif engine is None:
    with concurrent.futures.ThreadPoolExecutor(max(1, parallel)) as pool:
      outcomes = dict(zip([j.name for j in todo], pool.map(_run_local, todo)))
  else:
    outcomes = engine(todo, root)
  counts = {k: sum(o == k for o in outcomes.values())
            for k in ('done', 'failed', 'stopped', 'interrupted')}
  stopped = counts['stopped'] + earlier
  print(f'{len(points)} runs: {len(points) - len(todo) - earlier} already '
        f'finished, {counts["done"]} ran, {counts["failed"]} failed' +
        (f', {stopped} stopped early' if stopped else '') +
        (f', {counts["interrupted"]} interrupted (relaunch to resume them)'
         if counts['interrupted'] else '') + '.', flush=True)
  return counts['failed'] + counts['interrupted']


def _engine(lib):
  """The engine the flags ask for (None: the local one), or a SweepError."""
  ray_flags = ('ray_address', 'resources_per_run', 'max_concurrent_runs',
               'max_failures', 'scheduler', 'metric', 'mode', 'grace_epochs',
               'reduction_factor')
  if FLAGS.engine == 'local':
    given = [f for f in ray_flags if FLAGS[f].present]
    if given:
      raise lib.SweepError(f'--{given[0]} is for --engine=ray; add it, or '
                           'leave the flag out to run on this machine.')
    return None
  if FLAGS['parallel'].present:
    raise lib.SweepError(
        '--parallel is for --engine=local; with --engine=ray, '
        '--resources_per_run decides how many runs share the cluster.')
  # pylint: disable-next=g-import-not-at-top
  from bn_study import ray_engine
  options = ray_engine.make_options(
      FLAGS.ray_address, FLAGS.resources_per_run, FLAGS.max_concurrent_runs,
      FLAGS.max_failures, FLAGS.scheduler, FLAGS.metric, FLAGS.mode,
      FLAGS.grace_epochs, FLAGS.reduction_factor)
  ray_engine.import_ray()  # Before anything runs.
  return lambda jobs, root: ray_engine.run(jobs, root, options)


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
    engine = _engine(lib)
    failed = lib.run(FLAGS.sweep, FLAGS.workdir, FLAGS.parallel, FLAGS.dry_run,
                     FLAGS.print_commands, FLAGS.set, engine)
  except lib.SweepError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  sys.exit(1 if failed else 0)


def _define_flags():
  # Here, not at import: sweep files import this module under its package
  # name, a second module object beside __main__.
  flags.DEFINE_string('sweep', None, 'A sweep file (configs/sweeps/*.py), '
                      'optionally `:ARG` passed to its get_sweep().')
  flags.DEFINE_string('workdir', None, 'Parent of every run\'s workdir '
                      '(with --engine=ray, one every node sees).')
  flags.DEFINE_integer('parallel', 1, 'Runs at once (--engine=local).')
  flags.DEFINE_bool('dry_run', False, 'Print each run\'s name and overrides; '
                    'run nothing.')
  flags.DEFINE_multi_string('set', [], 'FIELD=VALUE: a config override of '
                            'every run (e.g. data_dir=/data), before the '
                            'sweep\'s own.')
  flags.DEFINE_bool('print_commands', False, 'Print the main.py command of '
                    'each run (for other machines); run nothing.')
  flags.DEFINE_enum('engine', 'local', ['local', 'ray'], 'local: subprocesses '
                    'on this machine; ray: Ray Tune trials on a Ray cluster '
                    '(pip install -r requirements-ray.txt).')
  flags.DEFINE_string('ray_address', '', 'The Ray cluster: empty starts one '
                      'on this machine; auto or HOST:PORT joins one.')
  flags.DEFINE_string('resources_per_run', 'cpu=1', 'What each run holds, '
                      'NAME=AMOUNT,...: cpu, gpu, or a custom resource such as '
                      'TPU.')
  flags.DEFINE_integer('max_concurrent_runs', 0, 'At most this many runs at '
                       'once; 0: as many as the cluster\'s resources hold.')
  flags.DEFINE_integer('max_failures', 3, 'Retries of a run whose worker or '
                       'node died, or whose main.py crashed (any exit but 0 '
                       'and 2); each resumes from its latest checkpoint.')
  flags.DEFINE_string('scheduler', '', 'Trial scheduler: empty (run all to '
                      'the end) or asha (stop poor runs early).')
  flags.DEFINE_string('metric', 'eval/accuracy', 'What the scheduler ranks '
                      'runs by: an eval scalar, e.g. eval/loss.')
  flags.DEFINE_string('mode', '', 'max or min; empty: max for accuracy, min '
                      'for loss.')
  flags.DEFINE_integer('grace_epochs', 1, 'ASHA: epochs every run trains '
                       'before it can be stopped.')
  flags.DEFINE_float('reduction_factor', 3, 'ASHA: 1/this of the runs go on '
                     'at each rung.')


FLAGS = flags.FLAGS

if __name__ == '__main__':
  _define_flags()
  app.run(main)
