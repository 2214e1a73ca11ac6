"""bn_study.host_memory: freed memory is reused, not faulted in again."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# Mallocs, fills and frees 100 MB a few times from a thread, as XLA:CPU's
# workers do with a step's buffers, and prints the page faults per round
# after the first two.
_PROGRAM = """
import ctypes, resource, threading
from bn_study import host_memory
kept = host_memory.keep_freed_memory()
libc = ctypes.CDLL('libc.so.6')
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
def rounds(n, out):
  for i in range(n):
    if i == 2:
      start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffer = libc.malloc(100_000_000)
    ctypes.memset(buffer, 1, 100_000_000)
    libc.free(buffer)
  out.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / (n - 2))
out = []
t = threading.Thread(target=rounds, args=(6, out)); t.start(); t.join()
print(kept, out[0])
"""


def _faults(keep: bool):
  env = dict(os.environ, BN_STUDY_KEEP_FREED_MEMORY='1' if keep else '0')
  out = subprocess.run([sys.executable, '-c', _PROGRAM], cwd=ROOT, env=env,
                       capture_output=True, text=True, check=True).stdout
  kept, faults = out.split()
  return kept == 'True', float(faults)


@pytest.mark.skipif(not sys.platform.startswith('linux'),
                    reason='tunes glibc malloc; elsewhere it does nothing')
def test_freed_memory_is_reused_without_page_faults():
  kept, faults = _faults(keep=True)
  assert kept
  pages = 100_000_000 // 4096
  assert faults < 0.05 * pages
  # Without it, glibc unmaps the array on free and every round faults it in.
  kept, faults = _faults(keep=False)
  assert not kept
  assert faults > 0.9 * pages
