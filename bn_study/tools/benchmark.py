r"""How fast the train step runs, against what the device can do.

  python -m bn_study.benchmark --config=configs/wbn.py --batch_sizes=128,2500 --json=out.json

For each batch size, after warm-up, timing with `block_until_ready` and taking
medians over repeats: train step time and images/s, eval images/s, the step's
FLOPs from XLA's cost analysis and the FLOP/s achieved, and
`roofline_fraction` = achieved FLOP/s / the FLOP/s of a large float32 matmul
on the same device, timed alternately with that batch size's steps (a shared
or throttled machine then slows both alike). Once per run: train-step compile
time cold and with the persistent compilation cache warm, input pipeline
images/s on its own, the end-to-end wall time of one epoch against
steps x step time + eval (split into the epoch's steps and its eval from the
event files, and also against the mean of those and the same timed again
right after the epoch, since a shared machine's speed drifts in between),
and BN's overhead (this config's step time over the same config
with model.norm=none). Where Python has `resource`, each row also has the
kernel's system CPU seconds and minor page faults per step (medians):
XLA:CPU mallocs a step's temporaries afresh, and the kernel zeroes every page
it faults in. Prints a table; --json writes
{"device", "jax_version", "date", "matmul_flops_per_sec" (the reference at
the start), "results": [...]}, each row with its own "matmul_flops_per_sec".

--loop measures the train loop against the step instead (loop_rows.py). Both
time the step alone as step_timing.py does.
"""

import contextlib
import json
import os
import sys
import tempfile
import time
from typing import Dict, List, Optional

from absl import app
from absl import flags
from ml_collections import config_flags

import jax

from bn_study import errors
from bn_study import models
from bn_study.data import info as dataset_info
from bn_study.runtime import compilation_cache
from bn_study.runtime import cpu
from bn_study.runtime import malloc
from bn_study.runtime import mesh as mesh_lib
from bn_study.runtime import process
from bn_study.tools import epoch_timing
from bn_study.tools import loop_rows
from bn_study.tools import plain_step
from bn_study.tools import step_timing
from bn_study.training import instruments
from bn_study.training import steps as steps_lib
from bn_study.training import validate as validate_lib


def compile_times(setup: step_timing.Setup, batch_size: int
                  ) -> Dict[str, float]:
  """Train-step compile seconds: cold, then from the persistent cache."""
  batch = step_timing.fake_batch(setup, batch_size)
  metrics = steps_lib.TrainMetrics.empty()
  out = {}
  for label in ('compile_cold_s', 'compile_warm_cache_s'):
    jax.clear_caches()  # Drop in-memory executables; the disk cache stays.
    lowered = setup.steps.train.lower(setup.state, batch, metrics)
    start = time.perf_counter()
    lowered.compile()
    out[label] = time.perf_counter() - start
  return out


def instrument_times(setup: step_timing.Setup, batch_size: int, repeats: int,
                     warmup: int) -> Dict[str, float]:
  """Seconds of one measurement by each instrument alone
  (bn_study/training/instruments.py), on a batch of `batch_size` and a probe
  of config.analysis.probe_size."""
  batch = step_timing.fake_batch(setup, batch_size)
  probe_size = setup.config.analysis.probe_size
  probe = step_timing.fake_batch(setup, probe_size)['image']
  out = {}
  for name in instruments.INSTRUMENTS:
    measure = instruments.jit_measure(
        mesh_lib.replicated(setup.mesh), mesh_lib.batch_sharding(setup.mesh),
        [name], setup.config.analysis.smoothness_lr_multipliers,
        models.weight_layers(setup.model, (1, *setup.image_shape)),
        setup.config.label_smoothing, setup.config.seed)
    out[f'instrument_{name}_s'] = step_timing.median_seconds(
        step_timing.time_calls(
            lambda: jax.block_until_ready(
                measure(setup.state, batch, probe, 1e-3)),
            repeats, warmup))
  return out


def pipeline_rate(config, num_batches: int) -> Dict[str, float]:
  """Input pipeline images/s alone, as training reads it: the first epoch
  (decoding every image into the cache and filling the shuffle buffer) and a
  later one (from the cache), each over up to `num_batches` batches."""
  from bn_study.data import input_pipeline  # pylint: disable=g-import-not-at-top
  pipeline = input_pipeline.Pipeline(config)
  out = {}
  for epoch, key in ((0, 'pipeline_images_per_sec_first_epoch'),
                     (1, 'pipeline_images_per_sec')):
    if epoch == 1:
      for _ in pipeline.train(0):  # Finish filling the cache.
        pass
    start, n = time.perf_counter(), 0
    for i, batch in enumerate(pipeline.train(epoch)):
      n += len(batch['label'])
      if i + 1 >= num_batches:
        break
    out[key] = n / (time.perf_counter() - start)
  return out


def _eval_seconds(info, row) -> float:
  """One eval over the whole eval split at `row`'s measured rate."""
  return info.num_eval / row['eval_images_per_sec']


FLAGS = flags.FLAGS


def _define_flags():
  config_flags.DEFINE_config_file('config', 'configs/wbn.py',
                                  'The config to benchmark.')
  flags.DEFINE_list('batch_sizes', ['128', '2500'], 'Global batch sizes.')
  flags.DEFINE_integer('repeats', 10, 'Timed calls per measurement.')
  flags.DEFINE_integer('warmup', 2, 'Untimed calls before timing.')
  flags.DEFINE_integer('pipeline_batches', 20, 'Batches for the input '
                       'pipeline rate.')
  flags.DEFINE_integer('epoch_batch_size', None, 'Batch size of the '
                       'end-to-end epoch (default: the largest); 0 skips it.')
  flags.DEFINE_bool('bn_overhead', True, 'Also time model.norm=none.')
  flags.DEFINE_bool('harness', True, 'Also time a plain Flax step of the '
                    'same model and optimizer (harness_overhead).')
  flags.DEFINE_bool('instruments', False, 'Also time each instrument '
                    '(bn_study/training/instruments.py) once, as a multiple '
                    'of the step.')
  flags.DEFINE_integer('mock_examples', 50000, 'Examples per split of the '
                       'mock data used when the dataset is not prepared.')
  flags.DEFINE_multi_string(
      'loop', None, '"CONFIG@BATCH [FIELD=VALUE ...]", repeatable: measure '
      'the train loop (loop_overhead, startup_s) of each config at that batch '
      'size, through main.py, instead of the step table.')
  flags.DEFINE_float('loop_seconds', 20.0, 'Seconds of train steps in each '
                     '--loop row\'s real run (at most the whole run).')
  flags.DEFINE_integer('matmul_size', step_timing.MATMUL_SIZE, 'Side of the '
                       'square float32 matmul that is the roofline reference.')
  flags.DEFINE_string('json', None, 'Write the results here.')
  flags.DEFINE_string('compilation_cache_dir', None, 'Persistent cache for '
                      'the warm-compile figure (default: a fresh temp dir).')


def run(config, batch_sizes, repeats, warmup, pipeline_batches,
        epoch_batch_size, bn_overhead, data: str,
        with_instruments: bool = False, harness: bool = False,
        matmul_size: int = step_timing.MATMUL_SIZE) -> dict:
  """Every measurement of the step table, `config` validated (main's
  _check) and the persistent compilation cache enabled (main does it), which
  the warm compile reads; `data` says what the pipeline reads (or mocks)."""
  from bn_study.data import input_pipeline  # pylint: disable=g-import-not-at-top
  # Steps timed before any decoding, whose churned heap faults more.
  info = input_pipeline.shapes_info(config)
  for i, size in enumerate(batch_sizes):
    dataset_info.steps_per_epoch(info.num_train, size, config.train_split,
                                 field=f'--batch_sizes[{i}]')
  steps_per_epoch = dataset_info.steps_per_epoch(
      info.num_train, config.batch_size, config.train_split)
  matmul = step_timing.Matmul(matmul_size)
  reference = step_timing.flops_per_sec(
      matmul.flops,
      step_timing.median_seconds(step_timing.time_calls(matmul, repeats, 2)))
  rows = []
  none_config = config.copy_and_resolve_references()
  none_config.model.norm = 'none'

  def at(cfg, batch_size):
    cfg = cfg.copy_and_resolve_references()
    cfg.batch_size = cfg.eval_batch_size = batch_size
    return cfg

  for batch_size in batch_sizes:
    setup = step_timing.make_setup(at(config, batch_size), info,
                                   steps_per_epoch)
    row = {}
    if not rows:
      row.update(compile_times(setup, batch_size))
    row.update(step_timing.measure_batch_size(setup, batch_size, repeats,
                                              warmup, matmul))
    if harness:
      row.update(plain_step.harness_overhead(setup, batch_size, repeats,
                                             warmup))
    if with_instruments:
      row.update(instrument_times(setup, batch_size, max(1, repeats // 3),
                                  1))
    if bn_overhead and config.model.norm != 'none':
      none_row = step_timing.measure_batch_size(
          step_timing.make_setup(at(none_config, batch_size), info,
                                 steps_per_epoch),
          batch_size, repeats, warmup, None)
      row['bn_overhead'] = row['step_s'] / none_row['step_s']
    rows.append(row)
  extras = {}
  pcfg = config.copy_and_resolve_references()
  pcfg.batch_size = max(batch_sizes)
  extras.update(pipeline_rate(pcfg, pipeline_batches))
  if epoch_batch_size != 0:
    size = epoch_batch_size or max(batch_sizes)
    row = next((r for r in rows if r['batch_size'] == size), None)
    if row is not None:
      ecfg = at(config, size)
      eval_s = _eval_seconds(info, row)
      with tempfile.TemporaryDirectory() as workdir:
        extras.update(epoch_timing.epoch_end_to_end(ecfg, workdir,
                                                    row['step_s'], eval_s))
      extras['epoch_batch_size'] = size
      # The step and eval again, right after the epoch: with the timings
      # before it they bracket the epoch, so the machine's drift in between
      # does not read as the training loop's own cost.
      after = step_timing.measure_batch_size(
          step_timing.make_setup(ecfg, info, steps_per_epoch), size, repeats,
          warmup, None)
      predicted = step_timing.predicted_epoch_s(
          extras['epoch_steps'], (row['step_s'] + after['step_s']) / 2,
          (eval_s + _eval_seconds(info, after)) / 2)
      extras.update(epoch_step_s_after=after['step_s'],
                    epoch_predicted_bracketed_s=predicted,
                    epoch_gap_bracketed=step_timing.epoch_gap(
                        extras['epoch_wall_s'], predicted))
  return {**step_timing.environment(),
          'config_norm': config.model.norm,
          'model': step_timing.describe_model(config.model), 'data': data,
          'train_compiler_options': cpu.compiler_options(
              jax.devices()[0].platform),
          'reference': f'{matmul.n}x{matmul.n} float32 jnp.dot',
          'matmul_flops_per_sec': reference, 'results': rows, **extras}


def _per_row_line(result: dict, key: str, heading: str, describe) -> List[str]:
  """One line, `heading: batch B <describe(row)>, ...`, over the rows that
  have `key`; none where no row does."""
  rows = [r for r in result['results'] if key in r]
  return [f'{heading}: ' + ', '.join(
      f'batch {r["batch_size"]} {describe(r)}' for r in rows)] if rows else []


def format_table(result: dict) -> str:
  lines = [f'{result["device"]} x{result["device_count"]} '
           f'(host: {result.get("host_cpu", "?")}), jax '
           f'{result["jax_version"]}, {result["date"]}, data: {result["data"]}',
           f'model: {result.get("model")}',
           f'reference: {result["reference"]}, timed in turn with each '
           f'batch size\'s steps ("ref"); '
           f'{result["matmul_flops_per_sec"] / 1e9:.1f} GFLOP/s at the start',
           f'malloc: memory kept {result.get("memory_kept")}, huge pages '
           f'{result.get("huge_pages")}; peak RSS '
           f'{result.get("peak_rss_mib", 0):.0f} MiB; '
           f'XLA_FLAGS: {result.get("xla_flags") or "(none)"}, '
           f'train step compiler_options: '
           f'{result.get("train_compiler_options") or "(none)"}', '',
           f'{"batch":>6} {"step ms":>9} {"img/s":>9} {"eval img/s":>11} '
           f'{"GFLOP/step":>11} {"GFLOP/s":>9} {"ref":>7} {"roofline":>9} '
           f'{"BN x":>6}']
  for r in result['results']:
    bn = f'{r["bn_overhead"]:.2f}' if 'bn_overhead' in r else '-'
    lines.append(
        f'{r["batch_size"]:>6} {r["step_s"] * 1e3:>9.1f} '
        f'{r["images_per_sec"]:>9.0f} {r["eval_images_per_sec"]:>11.0f} '
        f'{r["flops_per_step"] / 1e9:>11.2f} {r["flops_per_sec"] / 1e9:>9.1f} '
        f'{r["matmul_flops_per_sec"] / 1e9:>7.1f} '
        f'{r["roofline_fraction"]:>9.2f} {bn:>6}')
  for r in result['results']:
    if 'instrument_act_s' in r:
      lines.append(f'instruments at batch {r["batch_size"]} (one measurement, '
                   'in train steps): ' + ', '.join(
                       f'{name} {r[f"instrument_{name}_s"] / r["step_s"]:.1f}'
                       for name in instruments.INSTRUMENTS))
  lines += _per_row_line(
      result, 'harness_overhead', 'harness: bn_study\'s step over a plain '
      'Flax step, timed in turn',
      lambda r: f'{r["harness_overhead"]:.2f} ({r["harness_step_s"] * 1e3:.1f}'
      f' against {r["plain_step_s"] * 1e3:.1f} ms)')
  lines += _per_row_line(
      result, 'page_faults_per_step', 'kernel time per train step (median; '
      'faulting in and zeroing fresh memory)',
      lambda r: f'{r["system_s_per_step"] * 1e3:.0f} ms system, '
      f'{r["page_faults_per_step"]:.0f} page faults')
  r0 = result['results'][0]
  if 'compile_cold_s' in r0:
    lines.append(f'\ntrain-step compile (batch {r0["batch_size"]}): cold '
                 f'{r0["compile_cold_s"]:.2f} s, warm persistent cache '
                 f'{r0["compile_warm_cache_s"]:.2f} s')
  if 'pipeline_images_per_sec' in result:
    best = max(r['images_per_sec'] for r in result['results'])
    lines.append(f'input pipeline alone: {result["pipeline_images_per_sec"]:.0f}'
                 f' img/s from the cache ({result["pipeline_images_per_sec"] / best:.1f}x the '
                 'fastest train step), '
                 f'{result["pipeline_images_per_sec_first_epoch"]:.0f} img/s '
                 'in the first epoch (decoding)')
  lines += epoch_timing.summary_lines(result)
  return '\n'.join(lines)


def _write_json(result: dict, path: Optional[str]):
  if path:
    with open(path, 'w') as f:
      json.dump(result, f, indent=2)
    print(f'wrote {path}')


def _batch_sizes(values) -> List[int]:
  try:
    sizes = [int(b) for b in values]
  except ValueError:
    sizes = []
  if not sizes or min(sizes) <= 0:
    raise errors.UserError(f'--batch_sizes={",".join(values)} must be '
                           'positive integers, e.g. 128,2500.')
  return sizes


def _check(config, sizes: List[int], with_instruments: bool):
  """Every mistake before any work: the config, told the batches the
  benchmark's steps normalize beyond its own (each of --batch_sizes, and
  with --instruments the activation probe), and those against the devices."""
  extra = ({'--batch_sizes': sizes[0]} if len(sizes) == 1 else
           {f'--batch_sizes[{i}]': size for i, size in enumerate(sizes)})
  if with_instruments:
    extra['analysis.probe_size'] = config.analysis.probe_size
  validate_lib.validate(config, extra)
  mesh = mesh_lib.make_mesh()
  for field, size in extra.items():
    mesh_lib.check_batch_size(field, size, mesh)


def _step_table(config, sizes: List[int]) -> dict:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from bn_study.data import input_pipeline  # pylint: disable=g-import-not-at-top
  data, mock = f'{config.dataset} (prepared TFDS)', contextlib.nullcontext()
  if not input_pipeline.is_prepared(config):
    # Same shapes and sizes, random pixels: step times are the same, the
    # pipeline rate is not that of decoding the real files.
    data = f'{config.dataset} (TFDS mock data: not prepared here)'
    mock = tfds.testing.mock_data(num_examples=FLAGS.mock_examples)
  with mock:
    result = run(config, sizes, FLAGS.repeats, FLAGS.warmup,
                 FLAGS.pipeline_batches, FLAGS.epoch_batch_size,
                 FLAGS.bn_overhead, data, FLAGS.instruments, FLAGS.harness,
                 FLAGS.matmul_size)
  result.update(memory_kept=malloc.memory_kept(),
                huge_pages=malloc.huge_pages_active(),
                glibc_tunables=os.environ.get('GLIBC_TUNABLES', ''),
                peak_rss_mib=step_timing.peak_rss_mib(),
                xla_flags=os.environ.get('XLA_FLAGS', ''))
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # As main.py does, first thing (malloc's tuning re-executes the process
  # once).
  # Not the compilation cache yet: by default it is a fresh temp dir, so that
  # the cold compile is cold, and one made before a re-exec would be left
  # behind.
  process.setup(compilation_cache_dir=None)
  try:
    if FLAGS.loop:
      rows = loop_rows.parse_loop(FLAGS.loop)
    else:
      errors.check_positive_int('--matmul_size', FLAGS.matmul_size)
      sizes = _batch_sizes(FLAGS.batch_sizes)
      _check(FLAGS.config, sizes, FLAGS.instruments)
    with tempfile.TemporaryDirectory() as tmp:
      cache = FLAGS.compilation_cache_dir or tmp
      compilation_cache.enable(cache)
      if FLAGS.loop:
        result = loop_rows.measure(rows, cache, FLAGS.loop_seconds,
                                   FLAGS.repeats, FLAGS.warmup)
      else:
        result = _step_table(FLAGS.config, sizes)
  except errors.UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(loop_rows.format_loop_table(result) if FLAGS.loop else
        format_table(result))
  _write_json(result, FLAGS.json)


def program():
  """`python -m bn_study.benchmark` (bn_study/benchmark.py calls this):
  defines the flags, then runs main. Only a program defines them, so that
  importing the modules has no side effects."""
  _define_flags()
  errors.run_program(main, __name__, __doc__)


if __name__ == '__main__':
  program()
