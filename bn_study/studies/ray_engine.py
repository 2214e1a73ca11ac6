r"""The Ray engine of sweeps: each run one Ray Tune trial, on any Ray cluster.

  python -m bn_study.sweep --sweep=configs/sweeps/X.py --workdir=/shared/runs/X \
      --engine=ray --ray_address=auto --resources_per_run=cpu=8,gpu=1

A trial starts its run's `python main.py` command, the local engine's, in a
Ray worker holding `--resources_per_run`. The code comes from the driver's
checkout: Ray ships it to every node (runtime_env `working_dir`, without what
.gitignore names). The trial reads the run's event files as they grow and
reports each eval to Tune, so a scheduler (ASHA) can stop poor runs.

If a run's worker or node dies, the run is retried, up to --max_failures
times, and main.py resumes from the run's latest checkpoint. Since resume is
exact, the run ends as an uninterrupted one would. The workdir must be one
every node sees (a shared file system, or gs://).

Nothing imports this module unless --engine=ray (bn_study/studies/cli.py).
It imports Ray only when it runs. A run's attempts are recorded in its
workdir (workdir.RAY_ATTEMPTS); Tune's own records of its trials go to the
sweep's (workdir.TUNE_DIR).
"""

import ctypes
import dataclasses
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Dict, List, Sequence

from bn_study import workdir as workdir_lib
from bn_study.studies import grid
from bn_study.studies import jobs as jobs_lib
from bn_study.studies import ray_options
from bn_study.studies import runs

TESTED_RAY = '2.60.0'  # requirements-ray.txt
INSTALL = 'pip install -r requirements-ray.txt'
def import_ray():
  """(ray, ray.tune), or a SweepError saying how to install them."""
  try:
    import ray  # pylint: disable=g-import-not-at-top
    from ray import tune  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise grid.SweepError(
        f'--engine=ray needs Ray Tune, which this Python cannot import ({e}). '
        f'Install it with: {INSTALL} (Ray {TESTED_RAY}, the version tested); '
        'or leave out --engine=ray to run on this machine.') from e
  return ray, tune


# In the worker: one trial runs one main.py.


class _EvalTail:
  """New eval results in a run's event files, read as they grow."""

  def __init__(self, workdir: str, metric: str):
    self._dir = workdir_lib.path(workdir)
    self._metric = metric
    self._loaders = {}
    self._by_step: Dict[int, Dict[str, float]] = {}
    self._reported = 0
    self._steps_per_epoch = None

  def new(self) -> List[Dict[str, float]]:
    # pylint: disable-next=g-import-not-at-top
    from tensorboard.backend.event_processing import event_file_loader
    for path in sorted(self._dir.glob('events.out.tfevents.*')):
      if str(path) not in self._loaders:
        self._loaders[str(path)] = event_file_loader.EventFileLoader(str(path))
      for event in self._loaders[str(path)].Load():
        for tag, value in runs.event_scalars(event):
          if tag in ray_options.METRICS:
            self._by_step.setdefault(event.step, {})[tag] = value
    if self._steps_per_epoch is None:
      try:
        self._steps_per_epoch = json.loads(
            (self._dir / workdir_lib.DATASET).read_text())['steps_per_epoch']
      except (OSError, ValueError, KeyError):
        return []
    out = []
    for step in sorted(s for s in self._by_step if s > self._reported):
      if self._metric in self._by_step[step]:
        out.append({**self._by_step[step], 'step': step,
                    'epoch': step / self._steps_per_epoch})
        self._reported = step
    return out


def _die_with_worker():
  """For Popen's preexec_fn: the child is killed when the worker that
  started it dies, so that no orphan trains on beside the retry (Linux's
  PR_SET_PDEATHSIG; elsewhere the orphan runs on). Everything is looked up
  here, before the fork: the child only calls."""
  if not sys.platform.startswith('linux'):
    return None
  prctl, parent, getppid = ctypes.CDLL(None).prctl, os.getpid(), os.getppid

  def set_signal():
    prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG.
    if getppid() != parent:  # The worker died before prctl.
      os._exit(1)  # pylint: disable=protected-access
  return set_signal


def _record_attempt(workdir: str, **fields):
  """Adds to (or, if `fields` has no worker, updates the last of) the run's
  attempts: where each ran and how it ended."""
  path = workdir_lib.path(workdir) / workdir_lib.RAY_ATTEMPTS
  try:
    attempts = json.loads(path.read_text())
  except (OSError, ValueError):
    attempts = []
  if 'worker_pid' in fields:
    attempts.append(fields)
  elif attempts:
    attempts[-1].update(fields)
  path.write_text(json.dumps(attempts, indent=2))


class RunFailed(RuntimeError):
  """main.py ended without finishing; Tune retries the trial."""


def trial(config: Dict[str, Any]):
  """A Tune trainable: runs one job's main.py, reporting each eval."""
  from ray import tune  # pylint: disable=g-import-not-at-top
  job = jobs_lib.Job(**config['job'])
  log = jobs_lib.RunLog(job.workdir, job.argv)
  code = proc = None
  try:
    proc = jobs_lib.launch(job, log, preexec_fn=_die_with_worker())
    _record_attempt(job.workdir, node=socket.gethostname(),
                    worker_pid=os.getpid(), main_pid=proc.pid,
                    started=time.time())
    tail = _EvalTail(job.workdir, config['metric'])
    while True:
      code = proc.poll()  # Before reading, so that the last evals are read.
      try:
        results = tail.new()
        log.sync()
      except Exception:  # pylint: disable=broad-except
        # Progress is best effort: a remote file system's hiccup or a record
        # still being written must not end a healthy run.
        results = []
      for result in results:
        # Tune's report returns once a scheduler has judged the result. Under
        # a scheduler the run is paused meanwhile, so that a stop reaches it
        # before it trains further (fast epochs could otherwise end the run
        # first).
        pause = config['scheduler'] and code is None
        if pause:
          proc.send_signal(signal.SIGSTOP)
        try:
          tune.report(result)
        finally:
          if pause:
            proc.send_signal(signal.SIGCONT)
      if code is not None:
        break
      # Soon enough for a scheduler to stop a run that is far from done; a
      # remote workdir costs a listing per poll.
      time.sleep(5.0 if '://' in job.workdir else 0.2)
  finally:
    if proc is not None and proc.poll() is None:  # Stopped while running.
      proc.terminate()  # main.py checkpoints on SIGTERM, then exits.
      try:
        proc.wait(timeout=120)
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()
  _record_attempt(job.workdir, exit_code=code)
  if code not in (0, 2):  # 2: a user error (bad config), the same on retry.
    log_file = workdir_lib.path(job.workdir) / workdir_lib.TRAIN_LOG
    raise RunFailed(f'{job.name}: main.py exited with {code} '
                    f'(log: {log_file})')


# On the driver.


def _last_exit(workdir: str):
  try:
    attempts = json.loads(
        (workdir_lib.path(workdir) / workdir_lib.RAY_ATTEMPTS).read_text())
    return attempts[-1].get('exit_code')
  except (OSError, ValueError, IndexError):
    return None


def _make_callback(tune, jobs: Sequence[jobs_lib.Job],
                   options: ray_options.Options,
                   stopped: Dict[str, Dict[str, float]],
                   outcomes: Dict[str, str]):
  """A Tune callback printing the sweep's progress in the local engine's
  words, plus a table of every run now and then, and filling `outcomes`."""
  by_name = {j.name: j for j in jobs}

  class Progress(tune.Callback):
    """Lines as runs start, eval, retry and end; a table every so often."""

    def __init__(self):
      self.latest: Dict[str, Dict[str, Any]] = {}
      self.status: Dict[str, str] = {j.name: 'pending' for j in jobs}
      self.started: Dict[str, float] = {}
      self.table_at = time.time() + options.table_seconds

    def on_trial_start(self, iteration, trials, trial, **info):
      name = trial.config['job']['name']
      self.status[name] = 'running'
      self.started.setdefault(name, time.time())

    def on_trial_result(self, iteration, trials, trial, result, **info):
      name = trial.config['job']['name']
      if result['epoch'] <= self.latest.get(name, {}).get('epoch', 0):
        return  # A retry re-reads the evals before its resume.
      self.latest[name] = result
      print(f'eval    {name} epoch {result["epoch"]:g}/{by_name[name].epochs} '
            f'{options.metric} {result[options.metric]:.4f} '
            f'(on {result.get("hostname", "?")})', flush=True)

    def on_trial_recover(self, iteration, trials, trial, **info):
      name = trial.config['job']['name']
      print(f'retry   {name} ({trial.num_failures} of at most '
            f'{options.max_failures}: {_reason(trial)}); main.py resumes '
            'from its latest checkpoint', flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
      name = trial.config['job']['name']
      job = by_name[name]
      seconds = time.time() - self.started.get(name, time.time())
      if job.finished():
        outcomes[name] = self.status[name] = 'done'
        print(f'done    {name} ({seconds:.0f} s)', flush=True)
      elif trial.trial_id in stopped:
        verdict = {'by': options.scheduler, **stopped[trial.trial_id]}
        (workdir_lib.path(job.workdir) / workdir_lib.STOPPED).write_text(
            json.dumps(verdict, indent=2))
        outcomes[name] = self.status[name] = 'stopped'
        print(f'stopped {name} at epoch {verdict["epoch"]:g} by '
              f'{options.scheduler} ({options.metric} '
              f'{verdict[options.metric]:.4f})', flush=True)
      else:
        outcomes[name] = self.status[name] = 'failed'
        print(jobs_lib.failure(name, f'exit {_last_exit(job.workdir)}',
                               job.workdir), flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
      name = trial.config['job']['name']
      outcomes[name] = self.status[name] = 'failed'
      print(jobs_lib.failure(name, f'{_reason(trial)}; gave up after '
                             f'{trial.num_failures} failures',
                             by_name[name].workdir), flush=True)

    def on_step_end(self, iteration, trials, **info):
      if time.time() < self.table_at:
        return
      self.table_at = time.time() + options.table_seconds
      rows = [('run', 'status', 'epoch', options.metric)]
      for job in jobs:
        result = self.latest.get(job.name, {})
        rows.append((job.name, self.status[job.name],
                     f'{result["epoch"]:g}/{job.epochs}' if result else
                     f'-/{job.epochs}',
                     f'{result[options.metric]:.4f}' if result else '-'))
      widths = [max(len(r[i]) for r in rows) for i in range(4)]
      print('\n'.join('  '.join(c.ljust(w) for c, w in zip(r, widths))
                      for r in rows), flush=True)

  return Progress()


def _reason(trial) -> str:
  """Why a trial's attempt ended, in a line."""
  try:
    text = pathlib.Path(trial.error_file).read_text()
  except (OSError, TypeError, AttributeError):
    text = ''
  if 'ActorDiedError' in text or 'actor is dead' in text or not text.strip():
    return 'its worker process or node died'
  return text.strip().splitlines()[-1][:200]


def _make_scheduler(options: ray_options.Options, max_epochs: int,
                    stopped: Dict[str, Dict[str, float]]):
  """ASHA over epochs, remembering which trials it stopped (and where)."""
  if not options.scheduler:
    return None
  # pylint: disable-next=g-import-not-at-top
  from ray.tune.schedulers import ASHAScheduler, TrialScheduler

  class RecordingASHA(ASHAScheduler):

    def on_trial_result(self, tune_controller, trial, result):
      if result['epoch'] >= trial.config['job']['epochs']:
        # A rung at a run's last epoch: main.py evaluates before its last
        # checkpoint, and a stop now would leave the finished run unfinished.
        return TrialScheduler.CONTINUE
      decision = super().on_trial_result(tune_controller, trial, result)
      if decision == TrialScheduler.STOP:
        stopped[trial.trial_id] = {
            'epoch': result['epoch'], options.metric: result[options.metric]}
      return decision

  # max_t past the last epoch: ASHA stops every run at max_t.
  return RecordingASHA(time_attr='epoch', metric=options.metric,
                       mode=options.mode, max_t=max_epochs + 1,
                       grace_period=options.grace_epochs,
                       reduction_factor=options.reduction_factor)


def run(jobs: Sequence[jobs_lib.Job], root,
        options: ray_options.Options) -> Dict[str, str]:
  """Runs `jobs` as Tune trials; {name: 'done'|'failed'|'stopped'|
  'interrupted'}."""
  ray, tune = import_ray()
  from ray.tune import logger  # pylint: disable=g-import-not-at-top
  # The runs write their own event files: Tune keeps only its result.json
  # (with the JsonLoggerCallback below), not copies as CSV and TensorBoard.
  os.environ.setdefault('TUNE_DISABLE_AUTO_CALLBACK_LOGGERS', '1')
  max_epochs = max(j.epochs for j in jobs)
  if options.scheduler and options.grace_epochs > max_epochs:
    raise grid.SweepError(
        f'--grace_epochs={options.grace_epochs} is more than the runs\' '
        f'{max_epochs} epochs: no run could be stopped.')
  local = {} if options.address else {'include_dashboard': False}
  try:
    # Workers' output is TF's start-up chatter; main.py's goes to train.log
    # and a failed attempt's error to the callback.
    ray.init(address=options.address or 'local', logging_level='WARNING',
             log_to_driver=False, **local,
             runtime_env={'working_dir': str(jobs_lib.ROOT),
                          'excludes': ['runs']})
  except (ConnectionError, RuntimeError, ValueError) as e:
    raise grid.SweepError(
        f'--ray_address={options.address!r}: cannot start or join a Ray '
        f'cluster ({str(e).splitlines()[0][:300]}). Start one with `ray '
        'start --head`, give its HOST:PORT, or leave the flag empty for one '
        'on this machine.') from e
  stopped: Dict[str, Dict[str, float]] = {}
  outcomes: Dict[str, str] = {}
  try:
    resources = tune.PlacementGroupFactory([options.resources])
    tuner = tune.Tuner(
        tune.with_resources(trial, resources),
        param_space={
            'job': tune.grid_search([dataclasses.asdict(j) for j in jobs]),
            'metric': options.metric, 'scheduler': options.scheduler},
        tune_config=tune.TuneConfig(
            scheduler=_make_scheduler(options, max_epochs, stopped),
            max_concurrent_trials=options.max_concurrent or None,
            trial_name_creator=lambda t: t.config['job']['name'],
            trial_dirname_creator=lambda t: t.trial_id),
        run_config=tune.RunConfig(
            name=time.strftime('sweep_%Y%m%d_%H%M%S'),
            storage_path=str(root / workdir_lib.TUNE_DIR),
            failure_config=tune.FailureConfig(
                max_failures=options.max_failures),
            callbacks=[_make_callback(tune, jobs, options, stopped,
                                      outcomes), logger.JsonLoggerCallback()],
            verbose=0))
    tuner.fit()
  finally:
    ray.shutdown()
  for job in jobs:  # Tune never ended it: the sweep was interrupted.
    if job.name not in outcomes:
      outcomes[job.name] = 'done' if job.finished() else 'interrupted'
  return outcomes
