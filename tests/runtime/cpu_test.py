"""bn_study.cpu: huge pages for malloc, by re-executing once (the im2col conv
is in models_test, the norm and compiler options in train_test)."""

import os
import subprocess
import sys

import pytest

from bn_study.runtime import cpu
from tests import helpers
from tests.helpers import ROOT

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
  assert cpu.should_reexec(environ, platform, glibc, thp) is expected


def test_thp_mode_reads_the_bracketed_word(tmp_path):
  path = tmp_path / 'enabled'
  path.write_text('always [madvise] never\n')
  assert cpu.thp_mode(str(path)) == 'madvise'
  path.write_text('[always] madvise never\n')
  assert cpu.thp_mode(str(path)) == 'always'
  assert cpu.thp_mode(str(tmp_path / 'missing')) is None


# Notes each start in the file argv[1], re-executes itself as an entry
# point's main() would, then prints its arguments and whether huge pages are
# on. How many page faults huge pages save depends on the kernel; the
# benchmark shows it, not this test.
_PROGRAM = """
import sys
with open(sys.argv[1], 'a') as f:
  f.write('start\\n')
from bn_study.runtime import cpu
cpu.use_huge_pages()
print(' '.join(sys.argv[2:]), cpu.huge_pages_active())
"""


def _run(tmp_path, huge_pages: bool):
  """(arguments seen, huge pages on, times the program started)."""
  env = {k: v for k, v in os.environ.items() if k != 'GLIBC_TUNABLES'}
  env[cpu.HUGE_PAGES_OPT_OUT] = '1' if huge_pages else '0'
  starts = tmp_path / f'starts_{huge_pages}'
  out = subprocess.run(
      [sys.executable, '-c', _PROGRAM, str(starts), 'two', '--args'],
      cwd=ROOT, env=env, capture_output=True, text=True, check=True,
      timeout=120).stdout
  *args, active = out.split()
  return args, active == 'True', starts.read_text().count('start')


@pytest.mark.skipif(
    not cpu.should_reexec({}, sys.platform, cpu.glibc_version(),
                          cpu.thp_mode()),
    reason='needs Linux, glibc >= 2.35 and THP mode madvise; elsewhere '
    'use_huge_pages() leaves the process as it is')
def test_use_huge_pages_reexecutes_once_with_the_same_arguments(tmp_path):
  assert _run(tmp_path, huge_pages=True) == (['two', '--args'], True, 2)
  # The opt-out leaves the process as it is.
  assert _run(tmp_path, huge_pages=False) == (['two', '--args'], False, 1)


def test_steps_loop_in_xla_unless_cpu_convs_are_xla_convs():
  def model(**overrides):
    return helpers.tiny_config(**{f'model.{k}': v
                                  for k, v in overrides.items()}).model
  assert cpu.steps_in_one_loop('gpu', model(conv_impl='xla'))
  assert cpu.steps_in_one_loop('cpu', model(conv_impl='im2col'))
  assert cpu.steps_in_one_loop('cpu', model(kind='mlp'))
  assert not cpu.steps_in_one_loop('cpu', model(conv_impl='xla'))
  assert not cpu.steps_in_one_loop('cpu', model(kind='resnet_cifar',
                                                conv_impl='auto'))
