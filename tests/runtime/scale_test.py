"""The same numbers on 1 device, 8 devices and 2 processes (CPU-simulated).

Each run is a fresh subprocess (tests/run_tiny.py): the device count and the
distributed runtime are fixed when JAX starts.
"""

import socket
import subprocess
import sys
import types

import numpy as np
import pytest

from bn_study import errors
from bn_study.runtime import mesh as mesh_lib
from tests import helpers
from tests.helpers import ROOT




def _env(default_level=False):
  """The subprocesses' environment; with `default_level`, at XLA's default
  backend optimization level: at level 0 (conftest's fast compiles) two processes of 4 devices
  ended 0.24% of the loss away from one of 8 on a 2-core AMD EPYC, from the
  second step on, where at the default level they agree to 5e-7 (cause not
  found; docs/scale.md)."""
  env = helpers.env_without_device_count()
  if default_level:
    env['XLA_FLAGS'] = ' '.join(
        f for f in env['XLA_FLAGS'].split()
        if not f.startswith('--xla_backend_optimization_level'))
  return env


def _command(tmp, name, devices, overrides=(), **distributed):
  cmd = [sys.executable, '-m', 'tests.run_tiny', f'--devices={devices}',
         f'--workdir={tmp / name}', f'--out={tmp / name}.npz']
  cmd += [f'--set={o}' for o in overrides]
  cmd += [f'--{k}={v}' for k, v in distributed.items()]
  return cmd


def _run(tmp, name, devices, overrides=(), default_level=False):
  out = subprocess.run(_command(tmp, name, devices, overrides), cwd=ROOT,
                       env=_env(default_level), capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return dict(np.load(f'{tmp / name}.npz'))


@pytest.fixture(scope='module')
def tmp(tmp_path_factory):
  return tmp_path_factory.mktemp('scale')


@pytest.fixture(scope='module')
def one_device(tmp):
  return _run(tmp, 'one', 1, default_level=True)


@pytest.fixture(scope='module')
def eight_devices(tmp):
  return _run(tmp, 'eight', 8, default_level=True)


def _assert_same(a, b, tol=1e-4):
  for key in ('train_loss', 'eval_loss', 'eval_accuracy'):
    np.testing.assert_allclose(a[key], b[key], rtol=tol, atol=tol, err_msg=key)
  leaves = sorted(k for k in a if k.startswith('leaf'))
  assert leaves == sorted(k for k in b if k.startswith('leaf'))
  for key in leaves:
    np.testing.assert_allclose(a[key], b[key], rtol=tol, atol=tol, err_msg=key)


def test_one_and_eight_devices_give_the_same_run(one_device, eight_devices):
  assert (int(one_device['devices']), int(eight_devices['devices'])) == (1, 8)
  assert len(one_device['train_loss']) == 8  # 2 epochs of 4 steps.
  _assert_same(one_device, eight_devices)


def test_per_device_statistics_on_8_equal_ghost_batches_on_1(tmp):
  # Batches of 32: 4 examples a device (groups of 2 amplify float rounding
  # far beyond any tolerance within a few steps).
  batch = ['batch_size=32']
  per_device = _run(tmp, 'per_device', 8,
                    batch + ['model.stats_scope=per_device'])
  ghost = _run(tmp, 'ghost', 1, batch + ['model.norm=ghost_batch',
                                         'model.virtual_batch_size=4'])
  _assert_same(per_device, ghost)
  # ...and differ from global statistics, or this test could not fail.
  global_stats = _run(tmp, 'global32', 1, batch)
  assert not np.allclose(per_device['train_loss'][1:],
                         global_stats['train_loss'][1:], rtol=2e-2)


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_match_one_process_with_as_many_devices(tmp,
                                                              eight_devices):
  address = f'localhost:{_free_port()}'
  procs = [subprocess.Popen(
      _command(tmp, 'two_processes', 4, num_processes=2, process_id=i,
               coordinator_address=address),
      cwd=ROOT, env=_env(default_level=True), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True) for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
  two = dict(np.load(tmp / 'two_processes.npz'))
  assert (int(two['devices']), int(two['processes'])) == (8, 2)
  _assert_same(two, eight_devices)


def test_batch_size_the_devices_do_not_divide_is_refused():
  # The rule itself: a process with 8 devices is not needed to apply it.
  with pytest.raises(errors.UserError,
                     match='batch_size=12 is not divisible by the 8 devices'):
    mesh_lib.check_batch_size('batch_size', 12, types.SimpleNamespace(size=8))
  mesh_lib.check_batch_size('batch_size', 16, types.SimpleNamespace(size=8))
