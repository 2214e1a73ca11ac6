"""Sweep expansion, names, the CLI, and skip/resume on real subprocess runs."""

import json
import os
import shutil

import pytest

from bn_study import sweep
from tests import helpers
from tests.conftest import run_sweep


def test_product_zipped_chain():
  grid = sweep.product(
      sweep.values('learning_rate', [1e-3, 1e-2]),
      sweep.zipped(sweep.values('model.norm', ['none', 'batch']),
                   sweep.values('eval_stats', ['ema', 'ema,precise'])),
      sweep.values('seed', [0, 1, 2]))
  assert len(grid) == 2 * 2 * 3
  assert grid[0] == {'learning_rate': 1e-3, 'model.norm': 'none',
                     'eval_stats': 'ema', 'seed': 0}
  assert grid[-1] == {'learning_rate': 1e-2, 'model.norm': 'batch',
                      'eval_stats': 'ema,precise', 'seed': 2}
  assert {(p['model.norm'], p['eval_stats']) for p in grid} == {
      ('none', 'ema'), ('batch', 'ema,precise')}
  both = sweep.chain(sweep.values('seed', [0]), sweep.values('seed', [1]))
  assert both == [{'seed': 0}, {'seed': 1}]


def test_bad_grids_are_refused():
  with pytest.raises(sweep.SweepError, match='equal length'):
    sweep.zipped(sweep.values('a', [1, 2]), sweep.values('b', [1]))
  with pytest.raises(sweep.SweepError, match='set twice'):
    sweep.product(sweep.values('a', [1]), sweep.values('a', [2]))
  with pytest.raises(sweep.SweepError, match='non-empty list'):
    sweep.values('a', [])
  with pytest.raises(sweep.SweepError, match='repeated points'):
    sweep.run_names([{'seed': 0}, {'seed': 0}])


def test_names_unique_stable_and_only_varying_fields():
  points = sweep.product(
      sweep.values('num_epochs', [4]),
      sweep.zipped(sweep.values('model.norm', ['none', 'batch']),
                   sweep.values('eval_stats', ['ema', 'ema,precise'])),
      sweep.values('seed', [0, 1]))
  names = sweep.run_names(points)
  assert names[0] == 'norm=none,eval_stats=ema,seed=0'
  assert names[-1] == 'norm=batch,eval_stats=ema+precise,seed=1'
  assert len(set(names)) == len(names)
  assert sweep.run_names(points) == names  # Same input, same names.
  # Adding a seed leaves the existing names alone.
  more = sweep.product(sweep.values('num_epochs', [4]),
                       sweep.zipped(sweep.values('model.norm', ['none', 'batch']),
                                    sweep.values('eval_stats', ['ema', 'ema,precise'])),
                       sweep.values('seed', [0, 1, 2]))
  assert set(names) <= set(sweep.run_names(more))
  # Two fields with one last component keep their full names.
  clash = [{'a.x': 1, 'b.x': 1}, {'a.x': 2, 'b.x': 3}]
  assert sweep.run_names(clash) == ['a.x=1,b.x=1', 'a.x=2,b.x=3']


def test_seed_study_and_lr_sweep_expand():
  config, points = sweep.load('configs/sweeps/seed_study.py')
  sweep.check_fields(config, points)
  assert len(points) == 3 * 3 and {p['num_epochs'] for p in points} == {20}
  _, short = sweep.load('configs/sweeps/seed_study.py:epochs=2,seeds=1')
  assert len(short) == 3 and {p['num_epochs'] for p in short} == {2}
  with pytest.raises(sweep.SweepError, match='epochs=N'):
    sweep.load('configs/sweeps/seed_study.py:epoch=2')
  config, points = sweep.load('configs/sweeps/lr_norms.py')
  sweep.check_fields(config, points)
  assert len(set(sweep.run_names(points))) == len(points) > 1


def test_unknown_field_is_refused_before_running(tmp_path):
  path = tmp_path / 'bad.py'
  path.write_text("CONFIG = 'configs/tiny.py'\n"
                  "def get_sweep():\n  return [{'model.nrom': 'batch'}]\n")
  proc = run_sweep(f'--sweep={path}', f'--workdir={tmp_path / "w"}')
  assert proc.returncode == 2
  assert "'model.nrom', which is not a field of configs/tiny.py" in proc.stderr
  assert 'Traceback' not in proc.stderr
  assert not (tmp_path / 'w').exists()


def test_dry_run_and_print_commands(tmp_path, learnable_data_dir):
  from tests.conftest import write_tiny_sweep  # pylint: disable=g-import-not-at-top
  path = write_tiny_sweep(tmp_path / 's.py', learnable_data_dir)
  proc = run_sweep(f'--sweep={path}', f'--workdir={tmp_path / "w"}',
                   '--dry_run')
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  assert [l.split()[0] for l in lines] == [
      'norm=none,seed=0', 'norm=none,seed=1', 'norm=batch,seed=0',
      'norm=batch,seed=1']
  assert json.loads(lines[2].split(None, 1)[1])['model.norm'] == 'batch'
  assert not (tmp_path / 'w').exists()
  proc = run_sweep(f'--sweep={path}', f'--workdir={tmp_path / "w"}',
                   '--print_commands')
  first = proc.stdout.splitlines()[0]
  assert first.startswith('python main.py --config=configs/tiny.py --workdir=')
  assert '--config.model.norm=none' in first and '--config.seed=0' in first
  assert not (tmp_path / 'w').exists()


def test_sweep_runs_skips_finished_and_resumes(tiny_study, tmp_path):
  sweep_file, workdir, first_output = tiny_study
  names = ['norm=none,seed=0', 'norm=none,seed=1', 'norm=batch,seed=0',
           'norm=batch,seed=1']
  assert sorted(os.listdir(workdir)) == sorted(names + ['sweep.json'])
  for name in names:
    assert sweep.is_finished(sweep.pathlib.Path(workdir) / name), name
  # A sweep that asks for more epochs resumes (extends) finished runs.
  assert not sweep.is_finished(sweep.pathlib.Path(workdir) / names[0],
                               {'num_epochs': 3})
  config = json.loads(open(os.path.join(workdir, names[2],
                                        'config.json')).read())
  assert config['model']['norm'] == 'batch' and config['seed'] == 0
  assert '0 already finished, 4 ran, 0 failed' in first_output

  # Work on a copy: the report tests read the original.
  copy = str(tmp_path / 'runs')
  shutil.copytree(workdir, copy)
  again = run_sweep(f'--sweep={sweep_file}', f'--workdir={copy}')
  assert again.returncode == 0, again.stderr
  assert again.stdout.count('skip') == 4 and '0 ran' in again.stdout

  # An interrupted run: its last checkpoint never made it to disk.
  run_dir = os.path.join(copy, 'norm=batch,seed=1')
  before = helpers.read_scalars(run_dir)['eval/accuracy']
  ckpts = os.path.join(run_dir, 'checkpoints')
  shutil.rmtree(os.path.join(ckpts, max(os.listdir(ckpts), key=int)))
  assert not sweep.is_finished(sweep.pathlib.Path(run_dir))
  resumed = run_sweep(f'--sweep={sweep_file}', f'--workdir={copy}')
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert 'resume  norm=batch,seed=1' in resumed.stdout
  assert '3 already finished, 1 ran, 0 failed' in resumed.stdout
  assert sweep.is_finished(sweep.pathlib.Path(run_dir))
  # Resuming replays the lost epoch exactly.
  assert helpers.read_scalars(run_dir)['eval/accuracy'] == before
