"""bn_study.host_memory: freed memory is reused, not faulted in again."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# Mallocs, fills and frees 100 MB a few times from a thread, as XLA:CPU's
# workers do with a step's buffers; prints the most page faults of a round
# after the first, and those of a round after release_free_memory().
_PROGRAM = """
import ctypes, resource, threading
from bn_study import host_memory
kept = host_memory.keep_freed_memory()
libc = ctypes.CDLL('libc.so.6')
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
def rounds(n, out):
  for _ in range(n):
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffer = libc.malloc(100_000_000)
    ctypes.memset(buffer, 1, 100_000_000)
    libc.free(buffer)
    out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
out = []
t = threading.Thread(target=rounds, args=(4, out)); t.start(); t.join()
host_memory.release_free_memory()  # The pages go back: the next round faults.
t = threading.Thread(target=rounds, args=(1, out)); t.start(); t.join()
print(kept, max(out[1:4]), out[4])
"""


def _faults(keep: bool):
  env = dict(os.environ, BN_STUDY_KEEP_FREED_MEMORY='1' if keep else '0')
  out = subprocess.run([sys.executable, '-c', _PROGRAM], cwd=ROOT, env=env,
                       capture_output=True, text=True, check=True).stdout
  kept, faults, after_release = out.split()
  return kept == 'True', float(faults), float(after_release)


@pytest.mark.skipif(not sys.platform.startswith('linux'),
                    reason='tunes glibc malloc; elsewhere it does nothing')
def test_freed_memory_is_reused_without_page_faults():
  kept, faults, after_release = _faults(keep=True)
  assert kept
  pages = 100_000_000 // 4096
  assert faults < 0.05 * pages
  # release_free_memory hands the pages back; they are faulted in again.
  assert after_release > 0.9 * pages
  # Without it, glibc unmaps the array on free and every round faults it in.
  kept, faults, _ = _faults(keep=False)
  assert not kept
  assert faults > 0.9 * pages
