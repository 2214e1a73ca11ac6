"""Transparent huge pages for XLA:CPU's buffers (glibc.malloc.hugetlb=1).

XLA:CPU mallocs every call's outputs and temporaries. glibc serves the large
ones with fresh mmap'd memory and unmaps it on free, so each train step faults
its biggest buffers in again, 4 KiB at a time: the seed CNN's dense1 kernel,
its gradient, Adam's moments and their temporaries are 100 MB each, about
120k page faults per step at batch 128 and 580k at batch 2500. glibc's tunable
glibc.malloc.hugetlb=1 (glibc >= 2.35) makes malloc ask the kernel for
transparent huge pages on that memory, 2 MiB a fault: on a 2-core VM the
seed CNN's step went from 360 to 244 ms at batch 128 and from 4.15 to 3.89 s
at batch 2500, resident memory no higher (docs/performance.md).

glibc reads tunables only when a process starts, so `use_huge_pages()`
re-executes the process once with the tunable added to GLIBC_TUNABLES, and
only where it can help: Linux with glibc >= 2.35 and the kernel's THP mode
`madvise` (with `always` every large mapping gets huge pages already; with
`never` none can). BN_STUDY_HUGE_PAGES=0 turns it off, e.g. under a debugger.

Even so the kernel zeroes each huge page it faults in: `kernel_usage()`
reads what it spent on this process, which the benchmark reports per step.
"""

import os
import sys
from typing import Mapping, Optional, Tuple

try:
  import resource
except ImportError:  # Windows
  resource = None

TUNABLE = 'glibc.malloc.hugetlb=1'
OPT_OUT = 'BN_STUDY_HUGE_PAGES'
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


def should_reexec(environ: Mapping[str, str], platform: str,
                  glibc: Optional[Tuple[int, int]],
                  thp: Optional[str]) -> bool:
  """Whether re-executing with the tunable would turn huge pages on; not
  where GLIBC_TUNABLES sets glibc.malloc.hugetlb already, to any value."""
  return (platform.startswith('linux') and environ.get(OPT_OUT, '1') != '0'
          and glibc is not None and glibc >= (2, 35) and thp == 'madvise'
          and not any(t.startswith('glibc.malloc.hugetlb=')
                      for t in _tunables(environ)))


def active(environ: Mapping[str, str] = os.environ) -> bool:
  """Whether this process's malloc asks for huge pages."""
  return TUNABLE in _tunables(environ) and thp_mode() in ('madvise', 'always')


def kernel_usage() -> Optional[Tuple[float, int]]:
  """(system CPU seconds, minor page faults) of this process so far: what the
  kernel spends on it, mostly faulting in (and zeroing) fresh memory. None
  where the `resource` module is missing."""
  if resource is None:
    return None
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_stime, usage.ru_minflt


def _tunables(environ: Mapping[str, str]):
  return environ.get('GLIBC_TUNABLES', '').split(':')


def use_huge_pages():
  """Re-executes this process with glibc.malloc.hugetlb=1 where that helps
  (see above); returns where it does not, or already has it.

  Call first thing in an entry point, before anything worth keeping exists:
  the process image is replaced (same PID, arguments and environment).
  """
  if not (sys.executable and should_reexec(os.environ, sys.platform,
                                           glibc_version(), thp_mode())):
    return
  tunables = os.environ.get('GLIBC_TUNABLES')
  env = dict(os.environ,
             GLIBC_TUNABLES=f'{tunables}:{TUNABLE}' if tunables else TUNABLE)
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    # sys.orig_argv keeps `-m module` and `-c code`, which sys.argv loses.
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
  except OSError:
    pass  # Runs on as it is, only slower.
