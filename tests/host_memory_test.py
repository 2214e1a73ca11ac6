"""bn_study.host_memory: huge pages for malloc, by re-executing once."""

import os
import subprocess
import sys

import numpy as np
import pytest

from bn_study import host_memory
from tests.conftest import ROOT

LINUX = 'linux'
NEW = (2, 36)


@pytest.mark.parametrize('environ, platform, glibc, thp, expected', [
    ({}, LINUX, NEW, 'madvise', True),
    ({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'}, LINUX, NEW, 'madvise',
     True),
    # Already there: the re-executed process must not loop.
    ({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'},
     LINUX, NEW, 'madvise', False),
    # The user's own choice stands.
    ({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}, LINUX, NEW, 'madvise',
     False),
    ({'BN_STUDY_HUGE_PAGES': '0'}, LINUX, NEW, 'madvise', False),
    ({'BN_STUDY_HUGE_PAGES': '1'}, LINUX, NEW, 'madvise', True),
    ({}, LINUX, (2, 31), 'madvise', False),  # No such tunable before 2.35.
    ({}, LINUX, NEW, 'always', False),  # The kernel does it already.
    ({}, LINUX, NEW, 'never', False),
    ({}, LINUX, NEW, None, False),
    ({}, LINUX, None, 'madvise', False),  # musl
    ({}, 'darwin', None, None, False),
])
def test_should_reexec(environ, platform, glibc, thp, expected):
  assert host_memory.should_reexec(environ, platform, glibc, thp) is expected


def test_thp_mode_reads_the_bracketed_word(tmp_path):
  path = tmp_path / 'enabled'
  path.write_text('always [madvise] never\n')
  assert host_memory.thp_mode(str(path)) == 'madvise'
  path.write_text('[always] madvise never\n')
  assert host_memory.thp_mode(str(path)) == 'always'
  assert host_memory.thp_mode(str(tmp_path / 'missing')) is None


def test_kernel_usage_counts_the_faults_of_fresh_memory():
  before = host_memory.kernel_usage()
  if before is None:
    pytest.skip('no `resource` module on this platform: kernel_usage is None')
  block = np.ones(50_000_000 // 8)  # 50 MB, mmap'd afresh and written.
  after = host_memory.kernel_usage()
  assert block.sum() == block.size
  assert after[0] >= before[0]
  # At least one fault per 2 MiB huge page; 4 KiB pages give ~12,000.
  assert after[1] - before[1] >= 50_000_000 // (2 << 20)


# Re-executes itself, then mallocs, fills and frees 100 MB a few times from a
# thread, as XLA:CPU's workers do with a step's buffers; prints its arguments,
# whether huge pages are on, and the most page faults of a round after the
# first.
_PROGRAM = """
import ctypes, resource, sys, threading
from bn_study import host_memory
host_memory.use_huge_pages()
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
print(' '.join(sys.argv[1:]), host_memory.active(), max(out[1:]))
"""


def _run(huge_pages: bool):
  env = {k: v for k, v in os.environ.items() if k != 'GLIBC_TUNABLES'}
  env[host_memory.OPT_OUT] = '1' if huge_pages else '0'
  out = subprocess.run(
      [sys.executable, '-c', _PROGRAM, 'two', '--args'], cwd=ROOT, env=env,
      capture_output=True, text=True, check=True).stdout
  *args, active, faults = out.split()
  return args, active == 'True', float(faults)


@pytest.mark.skipif(
    not host_memory.should_reexec({}, sys.platform,
                                  host_memory.glibc_version(),
                                  host_memory.thp_mode()),
    reason='needs Linux, glibc >= 2.35 and THP mode madvise; elsewhere '
    'use_huge_pages() leaves the process as it is')
def test_huge_pages_cut_page_faults():
  args, active, faults = _run(huge_pages=True)
  assert args == ['two', '--args']  # The re-executed process got them back.
  assert active
  pages = 100_000_000 // 4096
  assert faults < 0.25 * pages
  # Without it, glibc unmaps the block on free and each round faults every
  # 4 KiB page in again.
  args, active, faults = _run(huge_pages=False)
  assert args == ['two', '--args'] and not active
  assert faults > 0.9 * pages
