"""How glibc's malloc serves XLA:CPU's buffers: on huge pages, and, asked
for, kept for reuse.

XLA:CPU mallocs every call's outputs and temporaries afresh. With glibc's
defaults, large blocks get fresh mmap'd memory that free() unmaps, so every
train step faults its buffers in again and the kernel zeroes each page
(ResNet-20 at batch 128: 73,888 page faults and 0.2 s of system time a
step). Where the kernel's transparent huge pages are `madvise`,
glibc.malloc.hugetlb=1 (glibc >= 2.35) asks for them: 2 MiB a fault, a few
hundred faults a step. That is the default.

BN_STUDY_KEEP_MEMORY=1 adds three tunables that keep what the process
allocates for it to reuse, 0 faults a step in every case measured:

- glibc.malloc.mmap_max=0: large blocks come from the heap, not from mmap;
- glibc.malloc.trim_threshold=64 GiB: free() never hands the heap's top
  back;
- glibc.malloc.arena_max=1: one arena, so XLA's threads do not allocate
  from per-thread heaps, which glibc shrinks on its own.

What the process freed before training (decoding the data, fitting data
inits, timing convolutions) would be kept too: `release_free_memory` hands
it back once, before the first step, so what stays is the steps' own.

Not the default: the heap fragments, and a 2-epoch run of configs/wbn.py
peaked at twice the resident memory in the same wall time
(docs/performance.md).

glibc reads tunables only when a process starts, hence the re-execution.
"""

import ctypes
import os
import sys
from typing import List, Mapping, Optional, Tuple

KEEP_MEMORY = ('glibc.malloc.mmap_max=0',
               f'glibc.malloc.trim_threshold={64 << 30}',
               'glibc.malloc.arena_max=1')
HUGE_PAGES = 'glibc.malloc.hugetlb=1'
# '0' leaves malloc as it is (no re-execution: under a debugger, or for
# processes that start often and live short, as the tests' do).
OPT_OUT = 'BN_STUDY_MALLOC'
# '0': no huge pages.
HUGE_PAGES_OPT_OUT = 'BN_STUDY_HUGE_PAGES'
# '1': KEEP_MEMORY too.
KEEP_MEMORY_OPT_IN = 'BN_STUDY_KEEP_MEMORY'
_THP_MODE_FILE = '/sys/kernel/mm/transparent_hugepage/enabled'


def glibc_version() -> Optional[Tuple[int, int]]:
  """(major, minor) of the running glibc; None elsewhere (macOS, musl)."""
  try:
    name, version = os.confstr('CS_GNU_LIBC_VERSION').split()
    major, minor = version.split('.')[:2]
    return (int(major), int(minor)) if name == 'glibc' else None
  except (AttributeError, OSError, ValueError, TypeError):
    return None


def thp_mode(path: str = _THP_MODE_FILE) -> Optional[str]:
  """The kernel's THP mode, the bracketed word of e.g. 'always [madvise]
  never'; None where there is no such file."""
  try:
    with open(path, encoding='ascii') as f:
      text = f.read()
  except OSError:
    return None
  start, end = text.find('['), text.find(']')
  return text[start + 1:end] if 0 <= start < end else None


def _tunables(environ: Mapping[str, str]) -> List[str]:
  return [t for t in environ.get('GLIBC_TUNABLES', '').split(':') if t]


def missing_tunables(environ: Mapping[str, str], platform: str,
                     glibc: Optional[Tuple[int, int]],
                     thp: Optional[str]) -> List[str]:
  """The tunables a re-execution would add, on Linux: huge pages with glibc
  >= 2.35 and THP mode `madvise` (with `always` every large mapping gets
  them already, with `never` none can); KEEP_MEMORY with glibc >= 2.26
  (tunables) where BN_STUDY_KEEP_MEMORY=1. None that GLIBC_TUNABLES sets
  already, to any value: the user's choice stands, and a re-executed process
  does not loop."""
  if (not platform.startswith('linux') or glibc is None
      or environ.get(OPT_OUT, '1') == '0'):
    return []
  wanted = []
  if (glibc >= (2, 35) and thp == 'madvise'
      and environ.get(HUGE_PAGES_OPT_OUT, '1') != '0'):
    wanted.append(HUGE_PAGES)
  if glibc >= (2, 26) and environ.get(KEEP_MEMORY_OPT_IN, '0') == '1':
    wanted.extend(KEEP_MEMORY)
  have = {t.split('=')[0] for t in _tunables(environ)}
  return [t for t in wanted if t.split('=')[0] not in have]


def huge_pages_active(environ: Mapping[str, str] = os.environ) -> bool:
  """Whether this process's malloc asks for huge pages."""
  return (HUGE_PAGES in _tunables(environ)
          and thp_mode() in ('madvise', 'always'))


def memory_kept(environ: Mapping[str, str] = os.environ) -> bool:
  """Whether this process's malloc keeps what it allocates (KEEP_MEMORY)."""
  return all(t in _tunables(environ) for t in KEEP_MEMORY)


def tune():
  """Re-executes this process with missing_tunables() added to
  GLIBC_TUNABLES; returns where there are none (already added, opted out,
  not glibc). BN_STUDY_MALLOC=0 leaves malloc alone; BN_STUDY_HUGE_PAGES=0
  asks for no huge pages; BN_STUDY_KEEP_MEMORY=1 keeps memory too.

  Call first thing in an entry point's main(), before anything worth keeping
  exists: the process image is replaced (same PID, arguments and
  environment), so whatever ran before runs once more.
  """
  missing = missing_tunables(os.environ, sys.platform, glibc_version(),
                             thp_mode())
  if not (sys.executable and missing):
    return
  env = dict(os.environ, GLIBC_TUNABLES=':'.join(
      _tunables(os.environ) + missing))
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    # sys.orig_argv keeps `-m module` and `-c code`, which sys.argv loses.
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
  except OSError:
    pass  # Runs on as it is, only slower.


def release_free_memory() -> bool:
  """Hands the heap's free memory back to the kernel (glibc's malloc_trim);
  False where there is no glibc. With KEEP_MEMORY, memory freed before
  training would otherwise stay resident for the whole run (airbench94's
  startup left 13 GiB so, and with conv_impl=auto's timing of XLA's convs
  the run outgrew 24 GiB)."""
  if glibc_version() is None:
    return False
  try:
    ctypes.CDLL(None).malloc_trim(0)
  except (AttributeError, OSError):
    return False
  return True
