"""One process's setup, for the entry points (main.py, the benchmark) to
call first thing; importing bn_study does none of it, so a library user keeps
their process as they set it up."""

import importlib.util
import sys
from typing import Optional

from absl import logging as absl_logging

from bn_study.runtime import compilation_cache
from bn_study.runtime import malloc
from bn_study.runtime import mesh as mesh_lib


def tensorflow_available() -> bool:
  try:
    return importlib.util.find_spec('tensorflow') is not None
  except ValueError:  # Imported, or blocked (sys.modules entry None).
    return sys.modules.get('tensorflow') is not None


def hide_accelerators_from_tf():
  """TF only feeds data here; left alone it would grab GPU/TPU memory from
  JAX. Call before TF initializes (a no-op without TF)."""
  if not tensorflow_available():
    return
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for kind in ('GPU', 'TPU'):
    try:
      tf.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):  # Already initialized, or no such kind.
      pass


class _QuietOrbax:
  """Orbax logs a dozen INFO lines per save; keep its warnings only."""

  def filter(self, record):
    return record.levelno >= 30 or '/orbax/' not in record.pathname


def quiet_orbax_logs():
  """Drops orbax's INFO lines from absl's log handler."""
  handler = absl_logging.get_absl_handler()
  if not any(isinstance(f, _QuietOrbax) for f in handler.filters):
    handler.addFilter(_QuietOrbax())


def setup(compilation_cache_dir: Optional[str] = compilation_cache.DEFAULT_DIR,
          coordinator_address: Optional[str] = None,
          num_processes: Optional[int] = None,
          process_id: Optional[int] = None, multihost: bool = False):
  """malloc tuned to keep its memory, on huge pages where the kernel allows
  (re-executes the process once; malloc.tune, BN_STUDY_MALLOC=0 opts out),
  TF kept off the accelerators JAX uses, orbax's INFO lines dropped, the persistent
  compilation cache ('' or None: off), and, for a multi-process job, JAX's
  distributed runtime (raises errors.UserError on bad arguments)."""
  malloc.tune()
  hide_accelerators_from_tf()
  quiet_orbax_logs()
  if compilation_cache_dir:
    compilation_cache.enable(compilation_cache_dir)
  mesh_lib.initialize_distributed(coordinator_address, num_processes,
                                  process_id, auto=multihost)
