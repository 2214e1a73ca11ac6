"""The Ray engine: a real two-node Ray cluster on loopback, against the local
engine's runs of the same sweep (conftest's tiny_study), bit for bit."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest

from bn_study import workdir as workdir_lib
from bn_study.studies import grid
from bn_study.studies import ray_engine
from bn_study.studies import ray_options
from bn_study.studies import runs
from tests import helpers
from tests.helpers import ROOT
from tests.helpers import run_sweep


KILLED = 'norm=batch,seed=1'
# Two of the tiny study's four runs, one for each node, at once.
NAMES = ['norm=none,seed=0', KILLED]


@pytest.fixture(scope='module')
def ray_sweep(tiny_study, tmp_path_factory):
  """(workdir, what tests/ray_cluster.py saw) of the tiny sweep on Ray."""
  pytest.importorskip('ray', reason='Ray is not installed here: '
                      'pip install -r requirements-ray.txt')
  if os.geteuid() != 0 or not (shutil.which('unshare') and shutil.which('ip')):
    pytest.skip('The Ray cluster runs in a network namespace of its own, '
                'which needs root, unshare (util-linux) and ip (iproute2).')
  base = tmp_path_factory.mktemp('ray')
  workdir, out = base / 'runs', base / 'cluster.json'
  asha_sweep = base / 'asha_sweep.py'
  data_dir = json.loads((pathlib.Path(tiny_study[1]) / NAMES[0] /
                         'config.json').read_text())['data_dir']
  sweep_file = helpers.write_tiny_sweep(base / 'pairs.py', data_dir,
                                        seeds=(0, 1), combine='zipped')
  asha_sweep.write_text(textwrap.dedent(f'''\
      from bn_study import sweep

      CONFIG = 'configs/tiny.py'


      def get_sweep(arg=''):
        return sweep.product(
            sweep.values('dataset', ['{helpers.LEARNABLE}']),
            sweep.values('data_dir', [{data_dir!r}]),
            # Epochs of a fraction of a second: enough of them that a run
            # the scheduler stops at epoch 1 is still running when it does
            # (the engine pauses it while Tune judges), few enough that the
            # run ASHA lets through is soon done.
            sweep.values('num_epochs', [10]),
            # A good learning rate, then one too large, worse at epoch 1
            # (eval/loss 2.30, 2.35). With one run at a time, ASHA lets the
            # first through and stops the second.
            sweep.values('learning_rate', [1e-3, 0.02]))
      '''))
  # New network and PID namespaces: loopback only, and every process the
  # script leaves behind ends with it, or with unshare on a timeout.
  proc = subprocess.run(
      ['unshare', '-n', '-p', '-f', '--kill-child', '--mount-proc', 'bash',
       '-c',
       'ip link set lo up && exec "$0" "$@"', sys.executable,
       'tests/ray_cluster.py', sweep_file, str(workdir), KILLED,
       str(asha_sweep), str(out)],
      cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False)
  assert out.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
  result = json.loads(out.read_text())
  assert result['start'][:2] == [0, 0], result['start'][2]
  # When each phase ended (s since the cluster script started): with -rA.
  print('ray_cluster phases:', result.get('seconds'))
  return workdir, result


def test_two_node_sweep_ends_as_the_local_engine_does(ray_sweep, tiny_study):
  workdir, result = ray_sweep
  assert result['status'].count(' node_') == 2, result['status']
  output = result['outputs'][0]
  assert result['first_exit'] == 0, output
  assert '2 runs: 0 already finished, 2 ran, 0 failed.' in output
  for name in NAMES:  # Progress: each eval of each run, as it happens.
    for epoch in (1, 2):
      assert f'eval    {name} epoch {epoch}/2 eval/accuracy ' in output
    helpers.assert_same_result(
        helpers.final_result(workdir / name),
        helpers.final_result(os.path.join(tiny_study[1], name)))
  # The same layout: the report sees the two runs and nothing else (Tune's
  # own records are in the hidden .tune).
  found, skipped = runs.find_runs([str(workdir)])
  assert [os.path.basename(r.path) for r in found] == NAMES and not skipped
  assert (workdir / workdir_lib.TUNE_DIR).is_dir()


def test_killed_worker_is_retried_and_resumes_exactly(ray_sweep, tiny_study):
  workdir, result = ray_sweep
  killed = result['killed']
  assert killed, ('no kill: the run finished first, or had no checkpoint '
                  'within ray_cluster.WAIT_S')
  final = helpers.final_result(workdir / KILLED)
  # Killed mid-run: after its first checkpoint, before its last.
  assert killed['checkpoints_at_kill'] and max(
      killed['checkpoints_at_kill']) < final[0]
  attempts = json.loads(
      (workdir / KILLED / workdir_lib.RAY_ATTEMPTS).read_text())
  assert len(attempts) == 2
  assert 'exit_code' not in attempts[0] and attempts[1]['exit_code'] == 0
  assert attempts[0]['worker_pid'] == killed['worker_pid']
  assert f'retry   {KILLED} (1 of at most 2: its worker process or node died)' \
      in result['outputs'][0]
  log = (workdir / KILLED / 'train.log').read_text()
  assert log.count('\n$ python') == 0 and log.count('\n$ main.py') == 2
  assert (f'Resumed from {workdir / KILLED / "checkpoints"} at step '
          f'{max(killed["checkpoints_at_kill"])}') in log
  helpers.assert_same_result(
      final, helpers.final_result(os.path.join(tiny_study[1], KILLED)))


def test_relaunched_finished_sweep_runs_nothing(ray_sweep):
  _, result = ray_sweep
  output = result['outputs'][1]
  assert result['second_exit'] == 0, output
  assert [l.split()[0] for l in output.splitlines()
          if l.startswith('skip')] == ['skip'] * 2
  assert output.strip().endswith('2 runs: 2 already finished, 0 ran, 0 failed.')


def test_asha_stops_poor_runs_and_relaunch_skips_them(ray_sweep):
  workdir, result = ray_sweep
  first, again = result['outputs'][2:]
  assert result['asha_exits'] == [0, 0], first + again
  asha = workdir.parent / 'asha'
  names = [r['name'] for r in json.loads(
      (asha / 'sweep.json').read_text())['runs']]
  assert names == ['learning_rate=0.001', 'learning_rate=0.02']
  stopped = [n for n in names if (asha / n / workdir_lib.STOPPED).exists()]
  finished = [n for n in names if workdir_lib.is_finished(asha / n)]
  assert finished == names[:1] and stopped == names[1:], first
  for name in stopped:
    verdict = json.loads((asha / name / workdir_lib.STOPPED).read_text())
    assert verdict['by'] == 'asha' and verdict['epoch'] == 1
    assert f'stopped {name} at epoch {verdict["epoch"]:g} by asha' in first
  assert '2 runs: 0 already finished, 1 ran, 0 failed, 1 stopped early.' in first
  assert again.count('(stopped early by asha') == 1
  assert '2 runs: 1 already finished, 0 ran, 0 failed, 1 stopped early.' in again


def test_sampled_points_are_the_same_at_every_launch():
  space = {'learning_rate': grid.loguniform(1e-4, 1e-1),
           'model.norm': grid.choice(['batch', 'group']),
           'model.groups': grid.randint(1, 9),
           'weight_decay': grid.uniform(0.0, 1e-3), 'num_epochs': 3}
  points = grid.sample(space, num_samples=20, seed=3)
  assert points == grid.sample(space, num_samples=20, seed=3)
  assert points != grid.sample(space, num_samples=20, seed=4)
  lrs = [p['learning_rate'] for p in points]
  assert all(1e-4 <= lr < 1e-1 for lr in lrs)
  assert all(float(f'{lr:.4g}') == lr for lr in lrs)  # As the names show.
  # Log-uniform: about half below the geometric middle, 10**-2.5.
  assert 5 <= sum(lr < 10**-2.5 for lr in lrs) <= 15
  assert {p['model.norm'] for p in points} == {'batch', 'group'}
  assert all(1 <= p['model.groups'] < 9 and p['num_epochs'] == 3
             for p in points)
  assert len(set(grid.run_names(points))) == 20
  for bad, message in ((lambda: grid.loguniform(0, 1), 'low > 0'),
                       (lambda: grid.uniform(2, 1), 'low < high'),
                       (lambda: grid.choice([]), 'non-empty'),
                       (lambda: grid.sample(space, 0), 'num_samples >= 1')):
    with pytest.raises(grid.SweepError, match=message):
      bad()


def test_without_ray_one_message_and_exit_2(tmp_path):
  fake = tmp_path / 'site' / 'ray'
  fake.mkdir(parents=True)
  (fake / '__init__.py').write_text(
      "raise ModuleNotFoundError(\"No module named 'ray'\", name='ray')\n")
  env = dict(os.environ, PYTHONPATH=str(tmp_path / 'site'))
  proc = subprocess.run(
      [sys.executable, '-m', 'bn_study.sweep',
       '--sweep=configs/sweeps/seed_study.py', f'--workdir={tmp_path / "w"}',
       '--engine=ray'], cwd=ROOT, env=env, capture_output=True, text=True,
      timeout=120, check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      'error: --engine=ray needs Ray Tune, which this Python cannot import '
      "(No module named 'ray'). Install it with: pip install -r "
      f'requirements-ray.txt (Ray {ray_engine.TESTED_RAY}, the version '
      'tested); or leave out --engine=ray to run on this machine.']
  assert not (tmp_path / 'w').exists()


def test_engine_flags_are_checked_before_anything_runs(tmp_path):
  for args, message in (
      (['--scheduler=asha'], '--scheduler is for --engine=ray'),
      (['--engine=ray', '--parallel=2'], '--parallel is for --engine=local'),
      (['--engine=ray', '--resources_per_run=gpu'],
       "'gpu' is not NAME=AMOUNT"),
      (['--engine=ray', '--metric=accuracy'],
       "--metric='accuracy': choose from eval/accuracy, eval/loss"),
      (['--engine=ray', '--scheduler=hyperband'],
       "--scheduler='hyperband': choose from '', 'asha'"),
      # Nothing listens on port 1: refused at once, where Ray would wait.
      (['--engine=ray', '--ray_address=127.0.0.1:1'],
       "--ray_address='127.0.0.1:1': nothing answers there (a TCP connection "
       'to 127.0.0.1 port 1'),
      (['--engine=ray', '--ray_address=head'],
       "--ray_address='head' is not HOST:PORT")):
    # Each within 60 s (a subprocess's imports included).
    proc = run_sweep('--sweep=configs/sweeps/seed_study.py',
                     f'--workdir={tmp_path / "w"}', *args, timeout=60)
    assert proc.returncode == 2, args
    assert message in proc.stderr and 'Traceback' not in proc.stderr, args
  assert not (tmp_path / 'w').exists()


def test_resources_and_options():
  assert ray_options.parse_resources('cpu=2,gpu=1,TPU=4') == {
      'CPU': 2.0, 'GPU': 1.0, 'TPU': 4.0}
  with pytest.raises(grid.SweepError, match='asks for nothing'):
    ray_options.parse_resources('cpu=0')
  options = ray_options.make_options('auto', 'cpu=1', 0, 3, 'asha',
                                    'eval/loss', '', 1, 3)
  assert options.mode == 'min' and options.resources == {'CPU': 1.0}
  assert ray_options.make_options('', 'cpu=1', 1, 0, '', 'eval/accuracy', '',
                                 1, 3).mode == 'max'
