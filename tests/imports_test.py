"""Importing bn_study changes no process state: the entry points do that.
Nor does it import Ray, which is optional."""

import json
import subprocess
import sys

from tests.conftest import ROOT

# In a fresh interpreter, with the libraries imported: record the process's
# state, import every bn_study module and main.py (imported, not run), and
# report what changed. TF's set_visible_devices and os.execve are replaced by
# recorders first, so a call to either shows even where it would change
# nothing (no GPU here).
_PROGRAM = r'''
import importlib, json, logging, os, pkgutil, sys
import jax
import orbax.checkpoint  # Adds a root log handler on import: its own doing.
import tensorflow as tf
from absl import logging as absl_logging

calls = []
def recorder(name):
  return lambda *args, **kwargs: calls.append(name)
tf.config.set_visible_devices = recorder('tf.config.set_visible_devices')
tf.config.experimental.set_visible_devices = recorder(
    'tf.config.experimental.set_visible_devices')
os.execve = recorder('os.execve')

def state():
  return {
      'environ': dict(os.environ),
      'argv': list(sys.argv),
      'absl_filters': [type(f).__name__
                       for f in absl_logging.get_absl_handler().filters],
      'root_handlers': [type(h).__name__ for h in logging.root.handlers],
      'tf_visible': [d.name for d in tf.config.get_visible_devices()],
      'jax_cache_dir': jax.config.jax_compilation_cache_dir,
  }

before = state()
import bn_study
names = sorted(m.name for m in pkgutil.iter_modules(bn_study.__path__))
for name in names:
  importlib.import_module(f'bn_study.{name}')
import main
after = state()
print(json.dumps({'modules': names, 'calls': calls, 'before': before,
                  'after': after, 'ray': 'ray' in sys.modules}))
'''


def test_importing_the_package_changes_no_process_state():
  proc = subprocess.run([sys.executable, '-c', _PROGRAM], cwd=ROOT,
                        capture_output=True, text=True, timeout=300,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert {'cpu', 'train', 'input_pipeline', 'checkpoints'} <= set(
      out['modules'])
  assert out['calls'] == []
  assert not out['ray']  # Only --engine=ray imports it, when it runs.
  for key, value in out['before'].items():
    assert out['after'][key] == value, key
