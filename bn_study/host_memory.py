"""Opt-in (BN_STUDY_KEEP_FREED_MEMORY=1): freed host memory kept for reuse.

XLA:CPU allocates its outputs and temporaries with malloc on every call.
glibc serves large allocations with fresh mmap'd pages and unmaps them on
free (threads other than the main one always do, their arenas being at most
64 MiB), so every train step page-faults its largest buffers in again: the
seed CNN's dense1 kernel, its gradient, Adam's moments and their temporaries
are 100 MB each. Keeping freed memory in one heap removes those faults: the
seed CNN's step at batch 128 went from 462 ms to 245 ms on a 2-core VM
(docs/performance.md).

Off by default, because the one heap fragments: buffers of different sizes
leave holes that only grow it. A train step and an eval in turn at batch
2500 plateau at 6.9 GB resident (2.7 GB without); the benchmark, which
compiles many programs, grew past 24 GB and was killed.
`release_free_memory()` hands free pages back between phases.
"""

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def _libc():
  if (os.environ.get('BN_STUDY_KEEP_FREED_MEMORY', '0') != '1' or
      not sys.platform.startswith('linux')):
    return None
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    return libc
  except (OSError, AttributeError):
    return None


def keep_freed_memory() -> bool:
  """Tunes glibc's malloc as above when BN_STUDY_KEEP_FREED_MEMORY=1; False
  when not asked, or where there is no glibc (macOS, musl).

  Call first thing: threads that already have their own arena keep using
  it, and may hand it to threads started later.
  """
  libc = _libc()
  if libc is None:
    return False
  settings = (
      (_M_ARENA_MAX, 1),  # Every thread allocates from the main heap,
      (_M_MMAP_MAX, 0),  # which grows with brk, never with mmap,
      (_M_TRIM_THRESHOLD, -1),  # and is never handed back (-1: no trimming;
      # a finite one is at most 2 GiB, an int, which left batch-2500 steps
      # faulting here).
  )
  return all(libc.mallopt(param, value) == 1 for param, value in settings)


def release_free_memory():
  """Hands the heap's free pages back to the OS (malloc_trim), so holes left
  by one phase's buffers do not add up over many; the next steps fault their
  buffers in once. Call between phases (after evals), never per step."""
  libc = _libc()
  if libc is not None:
    libc.malloc_trim(0)
