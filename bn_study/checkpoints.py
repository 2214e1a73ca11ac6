"""Orbax checkpoints of the train state under `<workdir>/checkpoints`.

A thin layer over `ocp.CheckpointManager` so train and predict agree on where
checkpoints live and how a state is restored onto the mesh.
"""

import os
from typing import Optional

from absl import logging as absl_logging
from etils import epath
import jax
import orbax.checkpoint as ocp

from bn_study import errors


def workdir_path(workdir: str) -> epath.Path:
  """The workdir as an absolute path; gs:// and other remote paths work too
  (orbax, TFDS and clu's writers all go through the same file systems)."""
  return epath.Path(workdir if '://' in str(workdir) else
                    os.path.abspath(workdir))


class Checkpoints:
  """Save and restore the train state by global step."""

  def __init__(self, workdir: str, max_to_keep: Optional[int] = 3,
               read_only: bool = False):
    self.directory = workdir_path(workdir) / 'checkpoints'
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=not read_only,
            read_only=read_only))

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, step: int, state):
    self._manager.save(step, args=ocp.args.StandardSave(state))

  def restore(self, target, step: Optional[int] = None):
    """The checkpoint at `step` (default: latest) shaped and sharded as `target`.

    `target` is a state or its `jax.eval_shape`, with shardings on its leaves.
    """
    step = self.latest_step() if step is None else step
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
        target)
    try:
      return self._manager.restore(step,
                                   args=ocp.args.StandardRestore(abstract))
    except ValueError as e:  # Orbax's tree/shape mismatch.
      raise errors.UserError(
          f'The checkpoint at step {step} in {self.directory} does not fit '
          'this config (a different model, normalizer or optimizer?). Resume '
          'with the config it was trained with (config.json beside it), or '
          f'use a new --workdir. Orbax said: {str(e)[:500]}') from e

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()


class _QuietOrbax:
  """Orbax logs a dozen INFO lines per save; keep its warnings only."""

  def filter(self, record):
    return record.levelno >= 30 or '/orbax/' not in record.pathname


absl_logging.get_absl_handler().addFilter(_QuietOrbax())
