"""A run folder (workdir) and a sweep folder: every file name in them, and
how to read whether a run is finished. No JAX: the sweep driver and the
report read run folders on machines without it.

A run folder holds CONFIG, DATASET, TIMING, CONV_IMPL, DATA_INIT (for a
family that fits params to the data), TRAIN_LOG (when a sweep launched
it), TensorBoard event files, CHECKPOINTS/<step>/ and, when a scheduler
stopped it, STOPPED. A sweep folder holds SWEEP and one run folder per
point (and, on Ray, RAY_ATTEMPTS in each and TUNE_DIR).
"""

import json
import math
import os
from typing import Any, Dict, Optional

from etils import epath

CONFIG = 'config.json'  # The config as run.
DATASET = 'dataset.json'  # Image shape, class names, sizes, steps per epoch.
TIMING = 'timing.json'  # The launch's train-step wall time (loop_timing).
DATA_INIT = 'data_init.npz'  # Params fit to the data (airbench's whitening).
CONV_IMPL = 'conv_impl.json'  # conv_impl=auto's choice for this run.
TRAIN_LOG = 'train.log'  # The run's log, when a sweep launched it.
CHECKPOINTS = 'checkpoints'  # <step>/ folders, by orbax.
SWEEP = 'sweep.json'  # A sweep's spec and its runs' names and overrides.
STOPPED = 'stopped_early.json'  # A scheduler's verdict on a run (Ray).
RAY_ATTEMPTS = 'ray_attempts.json'  # Each Ray attempt at a run.
TUNE_DIR = '.tune'  # Ray Tune's records of its trials, in the sweep folder.


def path(workdir) -> epath.Path:
  """A workdir as a path: local ones absolute; gs:// and other remote ones
  through the file systems orbax, TFDS and clu's writers use."""
  text = str(workdir)
  return epath.Path(text if '://' in text else os.path.abspath(text))


def flatten(config: Dict[str, Any], prefix: str = '') -> Dict[str, Any]:
  """A config.json as {'model.norm': 'batch', ...}; lists become tuples
  (hashable)."""
  out = {}
  for key, value in config.items():
    if isinstance(value, dict):
      out.update(flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = tuple(value) if isinstance(value, list) else value
  return out


def run_steps(num_epochs, steps_per_epoch: int) -> int:
  """The run's length in steps: num_epochs may be a fraction (airbench94's
  9.9), and a part of an epoch counts as a step (PyTorch's ceil)."""
  # round() first: 9.9 * 48 is 475.20000000000005, and 3.0 * 10 must be 30.
  return math.ceil(round(num_epochs * steps_per_epoch, 6))


def is_finished(workdir, overrides: Optional[Dict[str, Any]] = None) -> bool:
  """Whether main.py has written its final checkpoint in `workdir`.

  `overrides` that set num_epochs ask for that many, whatever the workdir's
  config.json says: raising it extends finished runs (main.py resumes them).
  """
  workdir = path(workdir)
  try:
    config = json.loads((workdir / CONFIG).read_text())
    dataset = json.loads((workdir / DATASET).read_text())
  except (OSError, ValueError):
    return False
  epochs = (overrides or {}).get('num_epochs', config['num_epochs'])
  total = run_steps(epochs, dataset['steps_per_epoch'])
  ckpt_dir = workdir / CHECKPOINTS
  steps = [int(p.name) for p in ckpt_dir.iterdir()
           if p.name.isdigit()] if ckpt_dir.is_dir() else []
  return bool(steps) and max(steps) >= total
