"""Orbax checkpoints of the train state under `<workdir>/checkpoints`.

A thin layer over `ocp.CheckpointManager` so train and predict agree on where
checkpoints live and how a state is restored onto the mesh.
"""

import json
import os
from typing import List, Optional

from absl import logging as absl_logging
from etils import epath
import jax
import orbax.checkpoint as ocp

from bn_study import errors
from bn_study import workdir as workdir_lib
# Item names inside a step's folder. `default` is where checkpoints written
# before train metrics were saved keep the state.
STATE = 'default'
TRAIN_METRICS = 'train_metrics'


def make_workdir(workdir: str) -> epath.Path:
  """The workdir, created if missing, or a UserError if it is a file or
  cannot be created or written; checked before any work starts."""
  path = workdir_lib.path(workdir)
  try:
    path.mkdir(parents=True, exist_ok=True)
  except FileExistsError as e:
    raise errors.UserError(
        f'--workdir={workdir!r} is a file, not a directory; pass a directory '
        '(it is created if missing).') from e
  except Exception as e:  # pylint: disable=broad-except
    # OSError locally; gs:// and other remote file systems raise their own.
    reason = getattr(e, 'strerror', None) or f'{type(e).__name__}: {e}'
    raise errors.UserError(
        f'--workdir={workdir!r} cannot be created ({reason}); pass a '
        'directory you can write to.') from e
  if '://' not in str(path) and not os.access(path, os.W_OK | os.X_OK):
    raise errors.UserError(
        f'--workdir={workdir!r} is not writable; pass a directory you can '
        'write to.')
  return path


def config_differences(config, saved: epath.Path) -> List[str]:
  """'field: <saved> there, <now> here' for every field where `config`
  differs from the config.json at `saved` (none if there is no such file)."""
  try:
    before = workdir_lib.flatten(json.loads(saved.read_text()))
  except (OSError, ValueError):  # Missing, or cut short by a killed launch.
    return []
  now = workdir_lib.flatten(json.loads(config.to_json_best_effort()))

  def show(values, key):
    return repr(values[key]) if key in values else '(absent)'

  return [f'{key}: {show(before, key)} there, {show(now, key)} here'
          for key in sorted(set(before) | set(now))
          if key not in before or key not in now or before[key] != now[key]]


class Checkpoints:
  """Save and restore the train state (and the unlogged train metrics) by step.

  Orbax writes each step to a temporary folder and renames it when complete,
  so a killed save leaves no step behind. A step that is there but cannot be
  read (damaged disk, a file deleted) is moved aside to `<step>.unreadable`
  and the previous one is used, with a warning.
  """

  def __init__(self, workdir: str, max_to_keep: Optional[int] = 3,
               read_only: bool = False):
    self.directory = workdir_lib.path(workdir) / workdir_lib.CHECKPOINTS
    self._read_only = read_only
    self._manager = self._open(max_to_keep)
    self._max_to_keep = max_to_keep

  def _open(self, max_to_keep):
    return ocp.CheckpointManager(
        self.directory, item_names=(STATE, TRAIN_METRICS),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=not self._read_only,
            read_only=self._read_only, cleanup_tmp_directories=True))

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, step: int, state, train_metrics=None):
    items = {STATE: ocp.args.StandardSave(state)}
    if train_metrics is not None:
      items[TRAIN_METRICS] = ocp.args.StandardSave(train_metrics)
    self._manager.save(step, args=ocp.args.Composite(**items))

  def wait(self):
    self._manager.wait_until_finished()

  def restore(self, target, train_metrics=None, config=None):
    """(state, train metrics or None) from the latest readable checkpoint.

    `target` is a state (or its `jax.eval_shape`) with shardings on its
    leaves; `train_metrics` likewise, or None to skip them. Metrics are None
    for checkpoints written without them. `config`, if given, is compared
    with the config.json beside the checkpoints when none fits.
    """
    failures = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        restored = self._restore_step(step, target, train_metrics)
      except Exception as e:  # pylint: disable=broad-except
        # Orbax raises many types for damaged files; a config mismatch
        # fails on every step and becomes a UserError below.
        failures.append((step, e))
        continue
      for bad_step, error in failures:
        if not self._read_only:
          bad = self.directory / str(bad_step)
          bad.rename(self.directory / f'{bad_step}.unreadable')
        absl_logging.warning(
            'The checkpoint at step %d in %s could not be read (%s: %.300s); '
            'it is moved aside to %d.unreadable and training resumes from '
            'step %d.', bad_step, self.directory, type(error).__name__,
            error, bad_step, step)
      if failures and not self._read_only:
        self._manager.close()
        self._manager = self._open(self._max_to_keep)
      return restored
    step, error = failures[0]
    saved = self.directory.parent / workdir_lib.CONFIG
    differences = [] if config is None else config_differences(config, saved)
    why = (f'; this config differs from {saved} in {len(differences)} '
           f'field(s): {"; ".join(differences)}' if differences else
           ' (a different model, normalizer or optimizer?)')
    raise errors.UserError(
        f'No checkpoint in {self.directory} fits this config{why}. Resume '
        'with the config it was trained with (config.json beside it), or use '
        f'a new --workdir. Orbax said about step {step}: '
        f'{type(error).__name__}: {str(error)[:300]}') from error

  def _restore_step(self, step, target, train_metrics):
    items = {STATE: ocp.args.StandardRestore(_abstract(target))}
    # Checkpoints from before train metrics were saved have no such item.
    has_metrics = (self.directory / str(step) / TRAIN_METRICS).exists()
    if train_metrics is not None and has_metrics:
      items[TRAIN_METRICS] = ocp.args.StandardRestore(_abstract(train_metrics))
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    if train_metrics is None:
      return restored[STATE]
    return restored[STATE], (restored[TRAIN_METRICS]
                             if TRAIN_METRICS in items else None)

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()


def _abstract(tree):
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
      tree)
