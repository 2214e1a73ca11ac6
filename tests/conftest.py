"""Fixtures shared by tests that run main.py or the sweep in subprocesses,
and the session's compilation cache."""

import fcntl
import json
import os
import shutil
import tempfile

import pytest

from bn_study.runtime import compilation_cache
from tests import helpers


_CACHE_ENV = 'BN_STUDY_TEST_JAX_CACHE'


def pytest_configure(config):
  """One persistent compilation cache for the session, set before any test
  module is imported: the many tests that train the same tiny model then
  compile its steps once, not once per test (jit caches in memory only per
  function object, and each run makes its own). Fast compiles
  (helpers.FAST_COMPILE), each unless XLA_FLAGS chooses it itself. And
  malloc left as it is in the many main.py subprocesses, unless asked for:
  its tuning changes how fast, not what, and each re-execution imports
  everything again (malloc_test and the benchmark's smoke test turn it
  on)."""
  os.environ.setdefault('BN_STUDY_MALLOC', '0')
  flags = os.environ.get('XLA_FLAGS', '')
  for name, value in helpers.FAST_COMPILE.items():
    if name not in flags:  # Unless XLA_FLAGS chooses it itself.
      flags = f'{flags} --{name}={value}'.strip()
  os.environ['XLA_FLAGS'] = flags
  # pytest-xdist's workers start after this runs in the controller, and
  # share its cache through the environment.
  if _CACHE_ENV not in os.environ:
    config.bn_study_jax_cache = tempfile.mkdtemp(prefix='bn_study_jax_cache_')
    os.environ[_CACHE_ENV] = config.bn_study_jax_cache
  compilation_cache.enable(os.environ[_CACHE_ENV])


def pytest_unconfigure(config):
  if hasattr(config, 'bn_study_jax_cache'):  # The process that made it.
    shutil.rmtree(config.bn_study_jax_cache, ignore_errors=True)
    os.environ.pop(_CACHE_ENV, None)


def _once_per_session(tmp_path_factory, name, build):
  """What `build(folder)` returns, built once for the whole test session.

  pytest-xdist's workers share the parent of their temporary folders: the
  first to ask builds it there, under a lock, and the others wait for it and
  read its result. In one process, the session's own temporary folder."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    root = root.parent
  folder, result = root / name, root / f'{name}.json'
  with open(root / f'{name}.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # Released when the file closes.
    if not result.is_file():
      shutil.rmtree(folder, ignore_errors=True)  # A build that failed.
      folder.mkdir()
      result.write_text(json.dumps(build(folder)))
    return json.loads(result.read_text())


@pytest.fixture(scope='session')
def learnable_data_dir(tmp_path_factory):
  """A data_dir holding the prepared `bn_study_learnable` TFDS dataset."""
  return _once_per_session(tmp_path_factory, 'tfds',
                           helpers.prepare_learnable)


@pytest.fixture(scope='session')
def tiny_study(tmp_path_factory, learnable_data_dir):
  """[sweep file, workdir, its output] of a finished 4-run sweep: norm
  none|batch x 2 seeds."""

  def build(base):
    sweep_file = helpers.write_tiny_sweep(base / 'tiny_sweep.py',
                                          learnable_data_dir)
    workdir = str(base / 'runs')
    proc = helpers.run_sweep(f'--sweep={sweep_file}', f'--workdir={workdir}',
                             '--parallel=2')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [str(sweep_file), workdir, proc.stdout]

  return _once_per_session(tmp_path_factory, 'study', build)
