"""The Ray engine: a real two-node Ray cluster on loopback, against the local
engine's runs of the same sweep (conftest's tiny_study), bit for bit."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from bn_study import ray_engine
from bn_study import runs
from bn_study import sweep
from tests import helpers
from tests.conftest import ROOT
from tests.conftest import run_sweep

KILLED = 'norm=batch,seed=1'
NAMES = ['norm=none,seed=0', 'norm=none,seed=1', 'norm=batch,seed=0', KILLED]


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
  # New network and PID namespaces: loopback only, and every process the
  # script leaves behind ends with it.
  proc = subprocess.run(
      ['unshare', '-n', '-p', '-f', '--mount-proc', 'bash', '-c',
       'ip link set lo up && exec "$0" "$@"', sys.executable,
       'tests/ray_cluster.py', tiny_study[0], str(workdir), KILLED, str(out)],
      cwd=ROOT, capture_output=True, text=True, timeout=1000, check=False)
  assert out.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
  result = json.loads(out.read_text())
  assert result['start'][:2] == [0, 0], result['start'][2]
  return workdir, result


def test_two_node_sweep_ends_as_the_local_engine_does(ray_sweep, tiny_study):
  workdir, result = ray_sweep
  assert result['status'].count(' node_') == 2, result['status']
  output = result['outputs'][0]
  assert result['first_exit'] == 0, output
  assert '4 runs: 0 already finished, 4 ran, 0 failed.' in output
  for name in NAMES:  # Progress: each eval of each run, as it happens.
    for epoch in (1, 2):
      assert f'eval    {name} epoch {epoch}/2 eval/accuracy ' in output
    helpers.assert_same_result(
        helpers.final_result(workdir / name),
        helpers.final_result(os.path.join(tiny_study[1], name)))
  # The same layout: the report sees the four runs and nothing else (Tune's
  # own records are in the hidden .tune).
  found, skipped = runs.find_runs([str(workdir)])
  assert [os.path.basename(r.path) for r in found] == NAMES and not skipped
  assert (workdir / ray_engine.TUNE_DIR).is_dir()


def test_killed_worker_is_retried_and_resumes_exactly(ray_sweep, tiny_study):
  workdir, result = ray_sweep
  killed = result['killed']
  assert killed, 'the run finished before its worker could be killed'
  final = helpers.final_result(workdir / KILLED)
  # Killed mid-run: after its first checkpoint, before its last.
  assert killed['checkpoints_at_kill'] and max(
      killed['checkpoints_at_kill']) < final[0]
  attempts = json.loads((workdir / KILLED / ray_engine.ATTEMPTS).read_text())
  assert len(attempts) == 2
  assert 'exit_code' not in attempts[0] and attempts[1]['exit_code'] == 0
  assert attempts[0]['worker_pid'] == killed['worker_pid']
  assert f'retry   {KILLED} (failure 1 of at most 2' in result['outputs'][0]
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
          if l.startswith('skip')] == ['skip'] * 4
  assert output.strip().endswith('4 runs: 4 already finished, 0 ran, 0 failed.')


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
       "--scheduler='hyperband': choose from '', 'asha'")):
    proc = run_sweep('--sweep=configs/sweeps/seed_study.py',
                     f'--workdir={tmp_path / "w"}', *args)
    assert proc.returncode == 2, args
    assert message in proc.stderr and 'Traceback' not in proc.stderr, args
  assert not (tmp_path / 'w').exists()


def test_resources_and_options():
  assert ray_engine.parse_resources('cpu=2,gpu=1,TPU=4') == {
      'CPU': 2.0, 'GPU': 1.0, 'TPU': 4.0}
  with pytest.raises(sweep.SweepError, match='asks for nothing'):
    ray_engine.parse_resources('cpu=0')
  options = ray_engine.make_options('auto', 'cpu=1', 3, 'asha', 'eval/loss',
                                    '', 1, 3)
  assert options.mode == 'min' and options.resources == {'CPU': 1.0}
  assert ray_engine.make_options('', 'cpu=1', 0, '', 'eval/accuracy', '', 1,
                                 3).mode == 'max'
