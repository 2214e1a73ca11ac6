"""The benchmark's arithmetic on fixed inputs, and a smoke run at tiny sizes
(no timing thresholds: timings belong to the benchmark, not to tests)."""

import json
import os
import subprocess
import sys

import jax
import pytest
import tensorflow_datasets as tfds

from bn_study import errors
from bn_study.data import input_pipeline
from bn_study.runtime import cpu
from bn_study.runtime import malloc
from bn_study.tools import benchmark
from bn_study.tools import loop_rows
from bn_study.tools import step_timing
from tests.helpers import ROOT
from tests import helpers


def test_arithmetic():
  assert step_timing.median_seconds([3.0, 1.0, 2.0]) == 2.0
  assert step_timing.median_seconds([4.0, 1.0, 2.0, 3.0]) == 2.5
  with pytest.raises(ValueError):
    step_timing.median_seconds([])
  assert step_timing.matmul_flops(4096) == 2 * 4096 ** 3
  assert step_timing.flops_per_sec(26.3e9, 0.29) == pytest.approx(
      90.69e9, rel=1e-3)
  assert step_timing.roofline_fraction(90e9, 165e9) == pytest.approx(
      0.5454, rel=1e-3)
  assert step_timing.images_per_sec(128, 0.25) == 512
  assert step_timing.epoch_gap(66.0, 60.0) == pytest.approx(0.1)
  assert step_timing.predicted_epoch_s(20, 3.0, 5.0) == 65.0


def test_time_calls_counts_warmup_and_repeats():
  calls = []
  times = step_timing.time_calls(lambda: calls.append(1), repeats=4, warmup=2)
  assert len(calls) == 6 and len(times) == 4 and all(t >= 0 for t in times)


def test_time_alternately_calls_in_turn():
  calls = []
  times = step_timing.time_alternately(
      [lambda: calls.append('a'), lambda: calls.append('b')], repeats=3,
      warmup=1)
  assert calls == ['a', 'b'] * 4
  assert [len(t) for t in times] == [3, 3]


def test_smoke_run_writes_the_table_and_json(learnable_data_dir, tmp_path):
  out = tmp_path / 'bench.json'
  # malloc tuned as a user gets it (conftest turns it off for other tests).
  env = {k: v for k, v in os.environ.items() if k != malloc.OPT_OUT}
  proc = subprocess.run(
      [sys.executable, '-m', 'bn_study.benchmark', '--config=configs/tiny.py',
       f'--config.dataset={helpers.LEARNABLE}',
       f'--config.data_dir={learnable_data_dir}', '--batch_sizes=8',
       '--repeats=2', '--warmup=1', '--pipeline_batches=2', '--instruments',
       '--config.analysis.probe_size=8', '--matmul_size=512',
       f'--compilation_cache_dir={tmp_path / "cache"}', f'--json={out}'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
      check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'roofline' in proc.stdout and 'warm persistent cache' in proc.stdout
  assert '512x512 float32 jnp.dot' in proc.stdout
  assert 'over a plain Flax step' in proc.stdout
  has_rusage = step_timing.kernel_usage() is not None
  if has_rusage:
    assert 'page faults' in proc.stdout
  result = json.loads(out.read_text())
  assert result['jax_version'] and result['device'] and result['date']
  assert 'prepared TFDS' in result['data']
  assert result['train_compiler_options'] == cpu.compiler_options(
      result['platform'])
  # The benchmark re-executes itself with malloc tuned, where it can be.
  missing = malloc.missing_tunables(env, sys.platform, malloc.glibc_version(),
                                    malloc.thp_mode())
  assert result['memory_kept'] is (malloc.memory_kept(env) or
                                   malloc.KEEP_MEMORY[0] in missing)
  assert result['huge_pages'] is (malloc.huge_pages_active(env)
                                  or malloc.HUGE_PAGES in missing)
  if has_rusage:
    assert result['peak_rss_mib'] > 0
  assert [r['batch_size'] for r in result['results']] == [8]
  for row in result['results']:
    assert row['images_per_sec'] > 0 and row['flops_per_step'] > 0
    # Against the reference timed in turn with this row's steps.
    assert row['matmul_flops_per_sec'] > 0
    assert row['roofline_fraction'] == pytest.approx(
        row['flops_per_sec'] / row['matmul_flops_per_sec'])
    assert row['bn_overhead'] > 0
    assert row['harness_overhead'] == pytest.approx(
        row['harness_step_s'] / row['plain_step_s'])
    assert row['plain_step_s'] > 0
    assert row['instrument_ics_s'] > 0 and row['instrument_act_s'] > 0
    if has_rusage:
      assert row['system_s_per_step'] >= 0 and row['page_faults_per_step'] >= 0
  assert result['epoch_wall_s'] > 0 and result['pipeline_images_per_sec'] > 0
  # The epoch against the step timed before it (the largest batch's row) and,
  # bracketing it, again after it.
  assert result['epoch_step_s'] == result['results'][-1]['step_s']
  assert result['epoch_step_s_after'] > 0
  assert result['epoch_gap_bracketed'] == pytest.approx(
      step_timing.epoch_gap(result['epoch_wall_s'],
                            result['epoch_predicted_bracketed_s']))
  assert 'timed again after it' in proc.stdout
  # The epoch's wall time, split at its last step's summary.
  assert result['epoch_steps_wall_s'] > 0 and result['epoch_eval_wall_s'] > 0
  assert result['epoch_steps_wall_s'] + result['epoch_eval_wall_s'] == (
      pytest.approx(result['epoch_wall_s']))
  assert result['epoch_eval_s'] > 0 and 'and its eval' in proc.stdout
  if os.path.exists('/proc/vmstat'):  # Machine-wide, so only their kind.
    assert result['epoch_run_compaction_stalls'] >= 0
    assert result['epoch_run_reclaim_stalls'] >= 0
    assert 'stalled on compaction' in proc.stdout
  assert os.listdir(tmp_path / 'cache')  # The persistent cache was written.


def test_bad_batch_sizes_are_a_message():
  proc = subprocess.run(
      [sys.executable, '-m', 'bn_study.benchmark', '--batch_sizes=128,x'],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 2 and 'must be positive integers' in proc.stderr


def test_batch_sizes_a_ghost_batch_cannot_split_are_a_message():
  # The model's own rule (models/normalizers.check_ghost_batch, through
  # training/validate.py), told each of --batch_sizes; the message reaches
  # the user as test_bad_batch_sizes_are_a_message's does.
  config = helpers.tiny_config(**{'model.norm': 'ghost_batch',
                                  'model.virtual_batch_size': 4})
  with pytest.raises(errors.UserError,
                     match=r'does not divide --batch_sizes\[1\]=6'):
    benchmark._check(config, [8, 6], False)  # pylint: disable=protected-access


def test_a_family_config_benchmarks_on_mock_data(tmp_path):
  # configs/resnet20.py as given (augmented, normalized input), shrunk, where
  # the dataset is not prepared.
  out = tmp_path / 'bench.json'
  proc = subprocess.run(
      [sys.executable, '-m', 'bn_study.benchmark',
       '--config=configs/resnet20.py', '--config.model.depth=8',
       '--config.model.width=4', '--config.model.dtype=bfloat16',
       '--config.batch_size=8', '--config.eval_batch_size=8',
       f'--config.data_dir={tmp_path / "empty"}', '--batch_sizes=8',
       '--repeats=1', '--warmup=1', '--pipeline_batches=2',
       '--epoch_batch_size=0', '--mock_examples=64', '--matmul_size=512',
       f'--json={out}'],
      cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(out.read_text())
  assert 'TFDS mock data' in result['data']  # No dataset there.
  (row,) = result['results']
  assert row['batch_size'] == 8 and row['step_s'] > 0 and row['bn_overhead'] > 0


def test_steps_are_timed_before_anything_is_decoded(monkeypatch):
  # A heap the decoding has churned faults more in the steps that follow
  # (docs/performance.md): the table must not depend on the pipeline.
  events = []
  real_init = input_pipeline.Pipeline.__init__
  real_measure = step_timing.measure_batch_size

  def init(self, *args, **kwargs):
    events.append('pipeline')
    real_init(self, *args, **kwargs)

  def measure(*args, **kwargs):
    events.append('steps')
    return real_measure(*args, **kwargs)

  monkeypatch.setattr(input_pipeline.Pipeline, '__init__', init)
  monkeypatch.setattr(step_timing, 'measure_batch_size', measure)
  config = helpers.tiny_config(batch_size=8, eval_batch_size=8)
  with tfds.testing.mock_data(num_examples=16):
    result = benchmark.run(config, [8], 1, 1, 1, 0, False, 'mock',
                           matmul_size=64)
  assert events == ['steps', 'pipeline'], events
  assert result['results'][0]['step_s'] > 0


def test_kernel_usage_reads_this_process_so_far():
  before = step_timing.kernel_usage()
  if before is None:
    pytest.skip('no `resource` module on this platform: kernel_usage is None')
  import resource  # pylint: disable=g-import-not-at-top
  usage = resource.getrusage(resource.RUSAGE_SELF)
  # (system seconds, minor faults) of this process so far, in that order.
  assert isinstance(before[0], float) and isinstance(before[1], int)
  assert before[0] <= usage.ru_stime and before[1] <= usage.ru_minflt


def test_kernel_stalls_sum_the_direct_reclaim_zones(tmp_path):
  vmstat = tmp_path / 'vmstat'
  vmstat.write_text('nr_free_pages 10\nallocstall_dma32 2\n'
                    'allocstall_normal 3\nallocstall_movable 5\n'
                    'compact_stall 7\ncompact_fail 4\n')
  assert step_timing.kernel_stalls(str(vmstat)) == {
      'compaction_stalls': 7, 'reclaim_stalls': 10}
  assert step_timing.kernel_stalls(str(tmp_path / 'absent')) is None


def test_loop_rows_write_overhead_and_startup(learnable_data_dir):
  # In this process, as benchmark.main runs a --loop row: the row's two
  # main.py launches are processes of their own either way.
  row = (f'configs/tiny.py@8 dataset={helpers.LEARNABLE} '
         f'data_dir={learnable_data_dir} log_every_steps=4 num_epochs=3')
  # The session's persistent cache (conftest), which this process uses.
  cache = jax.config.jax_compilation_cache_dir
  assert cache
  result = loop_rows.measure(loop_rows.parse_loop([row]), cache,
                             loop_seconds=0.01, repeats=2, warmup=1)
  table = loop_rows.format_loop_table(result)
  assert 'overhead' in table and 'startup s' in table
  (result,) = result['loop']
  assert result['batch_size'] == 8 and result['data_on_device'] is True
  # At least 20 of its 24 steps were asked for: the timed ones follow its
  # first call (one step), up to the end of the call that held step 20.
  assert result['loop_steps'] >= 19
  assert result['loop_overhead'] > 0 and result['startup_s'] > 0
  assert result['loop_step_s'] == pytest.approx(
      result['loop_overhead'] * result['step_s'])


def test_bad_loop_rows_are_a_message():
  with pytest.raises(errors.UserError, match='CONFIG@BATCH'):
    loop_rows.parse_loop(['configs/tiny.py'])
  # Checked with the row's config, before any row is measured.
  with pytest.raises(errors.UserError,
                     match='no_such_field is not a config field'):
    loop_rows.row_config(loop_rows.parse_loop(
        ['configs/tiny.py@8 no_such_field=1'])[0])
