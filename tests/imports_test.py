"""Importing bn_study changes no process state: the entry points do that.
Nor does it import Ray, which is optional."""

import json
import subprocess
import sys

from tests.helpers import ROOT

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
names = sorted(m.name for m in pkgutil.walk_packages(bn_study.__path__,
                                                     'bn_study.'))
from absl import flags
for name in names:
  importlib.import_module(name)
# Importing a module defines no flags: only the programs do (main.py,
# imported next, is one). Libraries' own flags (TFDS's) are theirs.
flags_defined = sorted(m for m in flags.FLAGS.flags_by_module_dict()
                       if 'bn_study' in m)
import main
after = state()
print(json.dumps({'modules': names, 'calls': calls, 'before': before,
                  'flags_defined': flags_defined,
                  'after': after, 'ray': 'ray' in sys.modules}))
'''


def test_importing_the_package_changes_no_process_state():
  proc = subprocess.run([sys.executable, '-c', _PROGRAM], cwd=ROOT,
                        capture_output=True, text=True, timeout=300,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert {'bn_study.runtime.cpu', 'bn_study.training.loop',
          'bn_study.data.input_pipeline', 'bn_study.studies.cli',
          'bn_study.tools.benchmark'} <= set(out['modules'])
  assert out['calls'] == []
  assert out['flags_defined'] == []
  assert not out['ray']  # Only --engine=ray imports it, when it runs.
  for key, value in out['before'].items():
    assert out['after'][key] == value, key


# A sweep driver or a report on a machine without JAX (a laptop, a Ray head
# node): what importing the studies layer and its thin modules brings in.
_STUDIES = r'''
import json, pkgutil, sys
import bn_study.studies
for m in pkgutil.walk_packages(bn_study.studies.__path__, 'bn_study.studies.'):
  __import__(m.name)
import bn_study.sweep, bn_study.claims, bn_study.report
from absl import flags
print(json.dumps({'heavy': sorted({n.split('.')[0] for n in sys.modules} &
                                  {'jax', 'flax', 'tensorflow', 'ray',
                                   'optax', 'orbax', 'clu'}),
                  'flags': [f for f in flags.FLAGS if f in ('sweep', 'workdir')]}))
'''


def test_studies_import_no_jax_tensorflow_or_ray_and_define_no_flags():
  proc = subprocess.run([sys.executable, '-c', _STUDIES], cwd=ROOT,
                        capture_output=True, text=True, timeout=300,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out == {'heavy': [], 'flags': []}
