r"""`python -m bn_study.sweep`: runs a sweep file's points, each main.py in
its own workdir.

  python -m bn_study.sweep --sweep=configs/sweeps/X.py --workdir=runs/X
  python -m bn_study.sweep --sweep=configs/sweeps/X.py:ARG ...  # get_sweep(ARG)

Each point runs `python main.py` in `<workdir>/<name>` (grid.py says what a
sweep file holds and how runs are named). Finished runs are skipped and
interrupted ones resume (main.py resumes from a workdir's checkpoints).
`--engine=local` runs them here (local.py); `--engine=ray` runs them as Ray
Tune trials on a cluster (ray_engine.py), where ASHA can stop poor runs
early. Importing this module defines no flags: running it does.
"""

import json
import os
import shlex
import sys
from typing import Sequence

from absl import app
from absl import flags

from bn_study import errors
from bn_study import workdir as workdir_lib
from bn_study.studies import grid
from bn_study.studies import jobs as jobs_lib
from bn_study.studies import local
from bn_study.studies import ray_options

FLAGS = flags.FLAGS
_RAY_FLAGS = ('ray_address', 'resources_per_run', 'max_concurrent_runs',
              'max_failures', 'scheduler', 'metric', 'mode', 'grace_epochs',
              'reduction_factor')


def run(spec: str, workdir: str, parallel: int = 1, dry_run: bool = False,
        print_commands: bool = False, extra: Sequence[str] = (),
        engine=None) -> int:
  """Runs (or lists) a sweep; the number of runs that failed or were
  interrupted. `extra`: FIELD=VALUE overrides of every run (where the data
  is, say). `engine`: a function of the jobs and the sweep's workdir to
  {name: 'done'|'failed'|'stopped'|'interrupted'}; None: the local engine,
  `parallel` subprocesses at once."""
  config_path, points = jobs_lib.load(spec)
  for e in extra:
    if '=' not in e:
      raise grid.SweepError(f'--set={e!r}: give FIELD=VALUE, e.g. '
                            'data_dir=/data/tfds.')
  jobs_lib.check_fields(config_path, [{e.split('=', 1)[0]: None
                                       for e in extra}])
  names = grid.run_names(points)
  jobs_lib.check_fields(config_path, points)
  root = workdir_lib.path(workdir)
  if dry_run or print_commands:
    for name, point in zip(names, points):
      if print_commands:
        print(shlex.join(['python'] + jobs_lib.main_command(
            config_path, os.path.join(workdir, name), point, extra)))
      else:
        print(f'{name}  {json.dumps(point)}')
    return 0
  root.mkdir(parents=True, exist_ok=True)
  (root / workdir_lib.SWEEP).write_text(json.dumps(
      {'sweep': spec, 'config': config_path,
       'runs': [{'name': n, 'overrides': p} for n, p in zip(names, points)]},
      indent=2))
  todo, earlier = jobs_lib.plan(root, config_path, names, points, extra)
  if not todo:
    outcomes = {}
  elif engine is None:
    outcomes = local.run(todo, parallel)
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


def _engine():
  """The engine the flags ask for (None: the local one), or a SweepError."""
  if FLAGS.engine == 'local':
    given = [f for f in _RAY_FLAGS if FLAGS[f].present]
    if given:
      raise grid.SweepError(f'--{given[0]} is for --engine=ray; add it, or '
                            'leave the flag out to run on this machine.')
    return None
  if FLAGS['parallel'].present:
    raise grid.SweepError(
        '--parallel is for --engine=local; with --engine=ray, '
        '--resources_per_run decides how many runs share the cluster.')
  # Here, not at the top: only --engine=ray needs it, and it needs Ray.
  # pylint: disable-next=g-import-not-at-top
  from bn_study.studies import ray_engine
  options = ray_options.make_options(
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
  try:
    failed = run(FLAGS.sweep, FLAGS.workdir, FLAGS.parallel, FLAGS.dry_run,
                 FLAGS.print_commands, FLAGS.set, _engine())
  except grid.SweepError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  sys.exit(1 if failed else 0)


def _define_flags():
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


def program():
  """`python -m bn_study.sweep`: defines the flags, then runs main. Only a
  program defines them, so that importing the modules has no side effects."""
  _define_flags()
  errors.run_program(main, __name__, __doc__)


if __name__ == '__main__':
  program()
