"""Sweep expansion, names, the CLI, and skip/resume on real subprocess runs."""

import json
import os
import shutil

import pytest

from bn_study import claims as claims_api
from bn_study import sweep
from bn_study import workdir as workdir_lib
from bn_study.studies import claims
from bn_study.studies import grid
from bn_study.studies import jobs
from tests import helpers
from tests.helpers import run_sweep



def test_product_zipped_chain():
  points = grid.product(
      grid.values('learning_rate', [1e-3, 1e-2]),
      grid.zipped(grid.values('model.norm', ['none', 'batch']),
                  grid.values('eval_stats', ['ema', 'ema,precise'])),
      grid.values('seed', [0, 1, 2]))
  assert len(points) == 2 * 2 * 3
  assert points[0] == {'learning_rate': 1e-3, 'model.norm': 'none',
                       'eval_stats': 'ema', 'seed': 0}
  assert points[-1] == {'learning_rate': 1e-2, 'model.norm': 'batch',
                        'eval_stats': 'ema,precise', 'seed': 2}
  assert {(p['model.norm'], p['eval_stats']) for p in points} == {
      ('none', 'ema'), ('batch', 'ema,precise')}
  both = grid.chain(grid.values('seed', [0]), grid.values('seed', [1]))
  assert both == [{'seed': 0}, {'seed': 1}]


def test_sweep_files_see_the_studies_api():
  """What sweep files import (bn_study.sweep, bn_study.claims) is the studies
  modules' own objects: one SweepError, one Claim."""
  for name in sweep.__all__:
    assert getattr(sweep, name) is getattr(grid, name), name
  for name in claims_api.__all__:
    assert getattr(claims_api, name) is getattr(claims, name), name


def test_bad_grids_are_refused():
  with pytest.raises(grid.SweepError, match='equal length'):
    grid.zipped(grid.values('a', [1, 2]), grid.values('b', [1]))
  with pytest.raises(grid.SweepError, match='set twice'):
    grid.product(grid.values('a', [1]), grid.values('a', [2]))
  with pytest.raises(grid.SweepError, match='non-empty list'):
    grid.values('a', [])
  with pytest.raises(grid.SweepError, match='repeated points'):
    grid.run_names([{'seed': 0}, {'seed': 0}])


def test_names_unique_stable_and_only_varying_fields():
  points = grid.product(
      grid.values('num_epochs', [4]),
      grid.zipped(grid.values('model.norm', ['none', 'batch']),
                  grid.values('eval_stats', ['ema', 'ema,precise'])),
      grid.values('seed', [0, 1]))
  names = grid.run_names(points)
  assert names[0] == 'norm=none,eval_stats=ema,seed=0'
  assert names[-1] == 'norm=batch,eval_stats=ema+precise,seed=1'
  assert len(set(names)) == len(names)
  assert grid.run_names(points) == names  # Same input, same names.
  # Adding a seed leaves the existing names alone.
  more = grid.product(
      grid.values('num_epochs', [4]),
      grid.zipped(grid.values('model.norm', ['none', 'batch']),
                  grid.values('eval_stats', ['ema', 'ema,precise'])),
      grid.values('seed', [0, 1, 2]))
  assert set(names) <= set(grid.run_names(more))
  # Two fields with one last component keep their full names.
  clash = [{'a.x': 1, 'b.x': 1}, {'a.x': 2, 'b.x': 3}]
  assert grid.run_names(clash) == ['a.x=1,b.x=1', 'a.x=2,b.x=3']


def test_seed_study_and_lr_sweep_expand():
  config, points = jobs.load('configs/sweeps/seed_study.py')
  jobs.check_fields(config, points)
  assert len(points) == 3 * 3 and {p['num_epochs'] for p in points} == {20}
  _, short = jobs.load('configs/sweeps/seed_study.py:epochs=2,seeds=1')
  assert len(short) == 3 and {p['num_epochs'] for p in short} == {2}
  with pytest.raises(grid.SweepError, match='epochs=N'):
    jobs.load('configs/sweeps/seed_study.py:epoch=2')
  config, points = jobs.load('configs/sweeps/lr_norms.py')
  jobs.check_fields(config, points)
  assert len(set(grid.run_names(points))) == len(points) > 1


def test_unknown_field_is_refused_before_running(tmp_path):
  path = tmp_path / 'bad.py'
  path.write_text("CONFIG = 'configs/tiny.py'\n"
                  "def get_sweep():\n  return [{'model.nrom': 'batch'}]\n")
  proc = run_sweep(f'--sweep={path}', f'--workdir={tmp_path / "w"}')
  assert proc.returncode == 2
  assert "'model.nrom', which is not a field of configs/tiny.py" in proc.stderr
  assert 'Traceback' not in proc.stderr
  assert not (tmp_path / 'w').exists()
  # A mistyped flag: one line, the same exit status.
  proc = run_sweep(f'--sweep={path}', f'--workdir={tmp_path / "w"}',
                   '--paralel=2')
  assert proc.returncode == 2
  assert proc.stderr.splitlines() == [
      "error: Unknown command line flag 'paralel'. Did you mean: parallel ?"]


def test_dry_run_and_print_commands(tmp_path, learnable_data_dir):
  path = helpers.write_tiny_sweep(tmp_path / 's.py', learnable_data_dir)
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
  assert sorted(os.listdir(workdir)) == sorted(names + [workdir_lib.SWEEP])
  for name in names:
    assert workdir_lib.is_finished(os.path.join(workdir, name)), name
  # A sweep that asks for more epochs resumes (extends) finished runs.
  assert not workdir_lib.is_finished(os.path.join(workdir, names[0]),
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
  assert not workdir_lib.is_finished(run_dir)
  resumed = run_sweep(f'--sweep={sweep_file}', f'--workdir={copy}')
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert 'resume  norm=batch,seed=1' in resumed.stdout
  assert '3 already finished, 1 ran, 0 failed' in resumed.stdout
  assert workdir_lib.is_finished(run_dir)
  # Resuming replays the lost epoch exactly.
  assert helpers.read_scalars(run_dir)['eval/accuracy'] == before


def test_first_runs_points_are_the_configs_as_given():
  # The study's runs stand for the configs users run: each point, over its
  # base, is the named config file field for field.
  base_path, points = jobs.load('configs/sweeps/first_runs.py')
  names = ['wobn', 'wbn', 'wbn_pre_act', 'ghost', 'renorm', 'group', 'layer']
  assert len(points) == len(names)
  for name, point in zip(names, points):
    config = jobs.load_module(base_path).get_config()
    for field, value in point.items():
      if field != 'num_epochs':  # The study's budget.
        *path, leaf = field.split('.')
        target = config
        for part in path:
          target = target[part]
        target[leaf] = value
    expected = jobs.load_module(f'configs/{name}.py').get_config()
    config.num_epochs = point.get('num_epochs', expected.num_epochs)
    expected.num_epochs = config.num_epochs
    assert config.to_dict() == expected.to_dict(), name


def test_a_fractional_num_epochs_counts_a_part_epoch_as_a_step(tmp_path):
  # airbench94's 9.9 epochs of 48 steps: ceil(475.2) = 476, as PyTorch's
  # ceil(len(loader) * epochs); whole epochs stay exact.
  assert workdir_lib.run_steps(9.9, 48) == 476
  assert workdir_lib.run_steps(3, 10) == 30
  assert workdir_lib.run_steps(0.5, 8) == 4
  (tmp_path / workdir_lib.CONFIG).write_text(json.dumps({'num_epochs': 2.5}))
  (tmp_path / workdir_lib.DATASET).write_text(
      json.dumps({'steps_per_epoch': 8}))
  (tmp_path / workdir_lib.CHECKPOINTS / '16').mkdir(parents=True)
  assert not workdir_lib.is_finished(tmp_path)
  (tmp_path / workdir_lib.CHECKPOINTS / '20').mkdir()
  assert workdir_lib.is_finished(tmp_path)
