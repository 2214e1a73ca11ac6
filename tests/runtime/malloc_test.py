"""bn_study.runtime.malloc: the tunables a process gets, and the one
re-execution that sets them."""

import json
import os
import subprocess
import sys

import pytest

from bn_study.runtime import malloc
from tests.helpers import ROOT

LINUX = 'linux'
NEW = (2, 36)
KEEP = list(malloc.KEEP_MEMORY)


HUGE = [malloc.HUGE_PAGES]
ALL = HUGE + KEEP
KEEP_ON = {'BN_STUDY_KEEP_MEMORY': '1'}


@pytest.mark.parametrize('environ, platform, glibc, thp, expected', [
    ({}, LINUX, NEW, 'madvise', HUGE),
    (KEEP_ON, LINUX, NEW, 'madvise', ALL),
    ({'GLIBC_TUNABLES': 'glibc.malloc.tcache_count=0'}, LINUX, NEW, 'madvise',
     HUGE),
    # Already there: the re-executed process must not loop.
    ({'GLIBC_TUNABLES': malloc.HUGE_PAGES}, LINUX, NEW, 'madvise', []),
    ({**KEEP_ON, 'GLIBC_TUNABLES': ':'.join(ALL)}, LINUX, NEW, 'madvise', []),
    # The user's own choices stand; the rest is added.
    ({**KEEP_ON,
      'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0:glibc.malloc.arena_max=4'},
     LINUX, NEW, 'madvise', KEEP[:2]),
    ({'BN_STUDY_MALLOC': '0', **KEEP_ON}, LINUX, NEW, 'madvise', []),
    ({'BN_STUDY_HUGE_PAGES': '0'}, LINUX, NEW, 'madvise', []),
    ({'BN_STUDY_HUGE_PAGES': '0', **KEEP_ON}, LINUX, NEW, 'madvise', KEEP),
    ({'BN_STUDY_HUGE_PAGES': '1'}, LINUX, NEW, 'madvise', HUGE),
    (KEEP_ON, LINUX, (2, 31), 'madvise', KEEP),  # No hugetlb before 2.35.
    (KEEP_ON, LINUX, (2, 17), 'madvise', []),  # No tunables before 2.26.
    ({}, LINUX, NEW, 'always', []),  # The kernel gives huge pages already.
    ({}, LINUX, NEW, 'never', []),
    (KEEP_ON, LINUX, NEW, None, KEEP),
    ({}, LINUX, None, 'madvise', []),  # musl
    (KEEP_ON, 'darwin', None, None, []),
])
def test_missing_tunables(environ, platform, glibc, thp, expected):
  assert malloc.missing_tunables(environ, platform, glibc, thp) == expected


def test_thp_mode_reads_the_bracketed_word(tmp_path):
  path = tmp_path / 'enabled'
  path.write_text('always [madvise] never\n')
  assert malloc.thp_mode(str(path)) == 'madvise'
  path.write_text('[always] madvise never\n')
  assert malloc.thp_mode(str(path)) == 'always'
  assert malloc.thp_mode(str(tmp_path / 'missing')) is None


# Notes each start in the file argv[1], tunes malloc as an entry point's
# main() would, then prints its arguments, and whether it keeps its memory
# and asks for huge pages. What they save is the benchmark's to show
# (page faults per step), not this test's.
_PROGRAM = """
import sys
with open(sys.argv[1], 'a') as f:
  f.write('start\\n')
from bn_study.runtime import malloc
malloc.tune()
print(' '.join(sys.argv[2:]), malloc.memory_kept(), malloc.huge_pages_active())
"""


def _run(tmp_path, tuned: bool):
  """(arguments seen, memory kept, huge pages, times the program started)."""
  env = {k: v for k, v in os.environ.items() if k != 'GLIBC_TUNABLES'}
  env[malloc.OPT_OUT] = '1' if tuned else '0'
  env[malloc.KEEP_MEMORY_OPT_IN] = '1'
  starts = tmp_path / f'starts_{tuned}'
  out = subprocess.run(
      [sys.executable, '-c', _PROGRAM, str(starts), 'two', '--args'],
      cwd=ROOT, env=env, capture_output=True, text=True, check=True,
      timeout=120).stdout
  *args, kept, huge = out.split()
  return args, kept == 'True', huge == 'True', starts.read_text().count(
      'start')


@pytest.mark.skipif(
    not malloc.missing_tunables({malloc.KEEP_MEMORY_OPT_IN: '1'},
                                sys.platform, malloc.glibc_version(),
                                malloc.thp_mode()),
    reason='needs Linux and glibc >= 2.26; elsewhere tune() leaves the '
    'process as it is')
def test_tune_reexecutes_once_with_the_same_arguments(tmp_path):
  huge = malloc.HUGE_PAGES in malloc.missing_tunables(
      {}, sys.platform, malloc.glibc_version(), malloc.thp_mode())
  # With BN_STUDY_KEEP_MEMORY=1: the memory kept, and huge pages where the
  # kernel's THP mode asks for them.
  assert _run(tmp_path, tuned=True) == (['two', '--args'], True, huge, 2)
  # The opt-out leaves the process as it is.
  assert _run(tmp_path, tuned=False) == (['two', '--args'], False, False, 1)


_RSS_AFTER_FREE = r'''
import json, resource, sys
import numpy as np
from bn_study.runtime import malloc

def rss_mib():
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * resource.getpagesize() / 2**20

big = np.ones(512 * 2**20 // 8)  # 512 MiB, touched.
del big
kept = rss_mib()
released = malloc.release_free_memory()
print(json.dumps([kept, rss_mib(), released]))
'''


@pytest.mark.skipif(malloc.glibc_version() is None, reason='needs glibc')
def test_memory_freed_before_training_is_handed_back_when_memory_is_kept():
  env = dict(os.environ, GLIBC_TUNABLES=':'.join(malloc.KEEP_MEMORY))
  out = subprocess.run([sys.executable, '-c', _RSS_AFTER_FREE], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=120,
                       check=True).stdout
  kept, after, released = json.loads(out.splitlines()[-1])
  assert released
  # Kept memory holds on to the freed 512 MiB; the release gives it back.
  assert kept - after > 400, (kept, after)
