"""JAX's persistent compilation cache: a relaunched or resumed run loads its
compiled steps from disk instead of compiling them again."""

import os

import jax

DEFAULT_DIR = os.path.join('~', '.cache', 'bn_study', 'jax')


def enable(directory: str = DEFAULT_DIR):
  """Caches every compiled executable under `directory` ('' turns it off).

  Call before anything is compiled.
  """
  if not directory:
    return
  jax.config.update('jax_compilation_cache_dir',
                    os.path.expanduser(directory))
  # The train step compiles in about a second on CPU; cache it whatever it
  # costs, and whatever its size.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
