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
"""

import ast
import contextlib
import dataclasses
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags
from ml_collections import config_flags

import jax
import jax.numpy as jnp
import numpy as np

from bn_study import analysis
from bn_study import checkpoints
from bn_study import compilation_cache
from bn_study import cpu
from bn_study import errors
from bn_study import feeds
from bn_study import mesh as mesh_lib
from bn_study import models
from bn_study import norms
from bn_study import preemption
from bn_study import runs
from bn_study import sweep
from bn_study import train

try:
  import resource  # pylint: disable=g-import-not-at-top
except ImportError:  # Windows
  resource = None

MATMUL_SIZE = 4096


# Arithmetic, kept apart so tests can check it on fixed inputs.


def median_seconds(times: Sequence[float]) -> float:
  if not times:
    raise ValueError('no timings')
  return float(statistics.median(times))


def flops_per_sec(flops: float, seconds: float) -> float:
  return flops / seconds


def matmul_flops(n: int) -> float:
  """Multiply-adds of an n x n by n x n matmul, counted as 2 FLOPs each."""
  return 2.0 * n ** 3


def roofline_fraction(achieved: float, reference: float) -> float:
  return achieved / reference


def images_per_sec(batch_size: int, seconds: float) -> float:
  return batch_size / seconds


def predicted_epoch_s(steps: int, step_s: float, eval_s: float) -> float:
  """What an epoch should take: steps x step time + one eval."""
  return steps * step_s + eval_s


def epoch_gap(wall: float, predicted: float) -> float:
  """How far the measured epoch is above steps x step time + eval (0.1 = 10%)."""
  return wall / predicted - 1.0


def kernel_usage() -> Optional[Tuple[float, int]]:
  """(system CPU seconds, minor page faults) of this process so far: what the
  kernel spends on it, mostly faulting in (and zeroing) fresh memory. None
  where Python has no `resource` module (Windows)."""
  if resource is None:
    return None
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_stime, usage.ru_minflt


def time_calls(fn: Callable[[], object], repeats: int, warmup: int
               ) -> List[float]:
  """Seconds per call of fn (which must block until its result is ready)."""
  return time_alternately([fn], repeats, warmup)[0]


def time_alternately(fns: Sequence[Callable[[], object]], repeats: int,
                     warmup: int) -> List[List[float]]:
  """Seconds per call of each fn, calling them in turn `repeats` times after
  `warmup` untimed turns, so that drift in the machine's speed reaches all
  of them alike."""
  for _ in range(warmup):
    for fn in fns:
      fn()
  times = [[] for _ in fns]
  for _ in range(repeats):
    for fn, out in zip(fns, times):
      start = time.perf_counter()
      fn()
      out.append(time.perf_counter() - start)
  return times


# Measurements.


def matmul_call(n: int = MATMUL_SIZE) -> Callable[[], None]:
  """One n x n float32 matmul on the default device, blocking."""
  a = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(2), (n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  return lambda: dot(a, b).block_until_ready()


@dataclasses.dataclass
class Setup:
  config: object
  mesh: object
  model: object
  state: object
  steps: train.Steps
  image_shape: tuple
  num_classes: int


def _setup(config, info, steps_per_epoch) -> Setup:
  mesh = mesh_lib.make_mesh()
  model = models.create_model(config.model, info.num_classes,
                              config.num_epochs * steps_per_epoch, mesh.size)
  tx, schedule = train.make_optimizer(config, steps_per_epoch)
  state = train.create_train_state(config, model, info.image_shape, tx, mesh)
  return Setup(config, mesh, model, state, train.jit_steps(
      mesh, schedule, label_smoothing=config.label_smoothing),
               info.image_shape, info.num_classes)


def _fake_batch(setup: Setup, batch_size: int, eval_mask: bool = False):
  rng = np.random.default_rng(0)
  batch = {'image': rng.random((batch_size, *setup.image_shape), np.float32),
           'label': rng.integers(0, setup.num_classes, batch_size)}
  if eval_mask:
    batch['mask'] = np.ones(batch_size, np.float32)
  return mesh_lib.global_batch(batch, setup.mesh)


def compile_times(setup: Setup, batch_size: int) -> Dict[str, float]:
  """Train-step compile seconds: cold, then from the persistent cache."""
  batch = _fake_batch(setup, batch_size)
  metrics = train.TrainMetrics.empty()
  out = {}
  for label in ('compile_cold_s', 'compile_warm_cache_s'):
    jax.clear_caches()  # Drop in-memory executables; the disk cache stays.
    lowered = setup.steps.train.lower(setup.state, batch, metrics)
    start = time.perf_counter()
    lowered.compile()
    out[label] = time.perf_counter() - start
  return out


def measure_batch_size(setup: Setup, batch_size: int, repeats: int,
                       warmup: int, matmul: Optional[Callable[[], None]]
                       ) -> Dict[str, float]:
  """Step and eval rates; with `matmul` (a MATMUL_SIZE reference call, timed
  in turn with the steps) also the roofline fraction."""
  batch = _fake_batch(setup, batch_size)
  compiled = setup.steps.train.lower(
      setup.state, batch, train.TrainMetrics.empty()).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost['flops'])
  # The step donates its state: thread it through the timed calls.
  holder = {'state': jax.tree.map(jnp.copy, setup.state),
            'metrics': train.TrainMetrics.empty()}
  kernel = []  # Per call: the kernel's system seconds and page faults.

  def step():
    before = kernel_usage()
    holder['state'], holder['metrics'] = setup.steps.train(
        holder['state'], batch, holder['metrics'])
    jax.block_until_ready(holder['state'])
    if before is not None:
      after = kernel_usage()
      kernel.append((after[0] - before[0], after[1] - before[1]))

  if matmul is None:
    step_s = median_seconds(time_calls(step, repeats, warmup))
  else:
    step_times, matmul_times = time_alternately([step, matmul], repeats,
                                                warmup)
    step_s = median_seconds(step_times)
  eval_batch = _fake_batch(setup, batch_size, eval_mask=True)

  def eval_call():
    jax.block_until_ready(setup.steps.eval(
        holder['state'], eval_batch, train.EvalMetrics.empty()))

  eval_s = median_seconds(time_calls(eval_call, repeats, warmup))
  achieved = flops_per_sec(flops, step_s)
  row = {'batch_size': batch_size, 'step_s': step_s,
         'images_per_sec': images_per_sec(batch_size, step_s),
         'eval_images_per_sec': images_per_sec(batch_size, eval_s),
         'flops_per_step': flops, 'flops_per_sec': achieved}
  if kernel:  # The timed calls are the last `repeats`.
    timed = kernel[-repeats:]
    row.update(system_s_per_step=statistics.median(k[0] for k in timed),
               page_faults_per_step=statistics.median(k[1] for k in timed))
  if matmul is not None:
    reference = flops_per_sec(matmul_flops(MATMUL_SIZE),
                              median_seconds(matmul_times))
    row.update(matmul_flops_per_sec=reference,
               roofline_fraction=roofline_fraction(achieved, reference))
  return row


def instrument_times(setup: Setup, batch_size: int, repeats: int,
                     warmup: int) -> Dict[str, float]:
  """Seconds of one measurement by each instrument alone (bn_study.analysis),
  on a batch of `batch_size` and a probe of config.analysis.probe_size."""
  batch = _fake_batch(setup, batch_size)
  probe_size = setup.config.analysis.probe_size
  probe = _fake_batch(setup, probe_size)['image']
  out = {}
  for name in analysis.INSTRUMENTS:
    measure = analysis.jit_measure(
        mesh_lib.replicated(setup.mesh), mesh_lib.batch_sharding(setup.mesh),
        [name], setup.config.analysis.smoothness_lr_multipliers,
        models.weight_layers(setup.model, (1, *setup.image_shape)))
    out[f'instrument_{name}_s'] = median_seconds(time_calls(
        lambda: jax.block_until_ready(measure(setup.state, batch, probe, 1e-3)),
        repeats, warmup))
  return out


def pipeline_rate(config, num_batches: int) -> Dict[str, float]:
  """Input pipeline images/s alone, as training reads it: the first epoch
  (decoding every image into the cache and filling the shuffle buffer) and a
  later one (from the cache), each over up to `num_batches` batches."""
  from bn_study import input_pipeline  # pylint: disable=g-import-not-at-top
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


def epoch_end_to_end(config, workdir: str, step_s: float, eval_s: float
                     ) -> Dict[str, float]:
  """Epoch 2 of a real 2-epoch run (compilation and the first epoch's
  decoding excluded), from its eval events' wall times, against
  steps x step time + eval. The epoch's last train summary, written once its
  last step is done, splits the wall time into the steps and the eval."""
  config = config.copy_and_resolve_references()
  config.num_epochs = 2
  config.eval_stats = 'ema'
  train.train_and_evaluate(config, workdir)
  scalars = runs.read_scalars(workdir)
  evals = scalars['eval/accuracy']
  wall = float(evals.wall_times[1] - evals.wall_times[0])
  steps_per_epoch = int(evals.steps[1] - evals.steps[0])
  predicted = predicted_epoch_s(steps_per_epoch, step_s, eval_s)
  out = {'epoch_wall_s': wall, 'epoch_predicted_s': predicted,
         'epoch_gap': epoch_gap(wall, predicted), 'epoch_step_s': step_s,
         'epoch_steps': steps_per_epoch, 'epoch_eval_s': eval_s}
  losses = scalars.get('train/loss')
  last = ([] if losses is None else
          np.flatnonzero(losses.steps == evals.steps[1]))
  if len(last):  # The last step was a log step.
    steps_done = float(losses.wall_times[last[0]])
    out.update(epoch_steps_wall_s=steps_done - float(evals.wall_times[0]),
               epoch_eval_wall_s=float(evals.wall_times[1]) - steps_done)
  return out


def _config_from_file(spec: str):
  """`configs/x.py` or `configs/x.py:arg` -> its ConfigDict."""
  path, _, arg = spec.partition(':')
  module = sweep.load_module(path)
  return module.get_config(arg) if arg else module.get_config()


def _override(config, field: str, text: str):
  """config.FIELD = the Python literal in `text` (else the string)."""
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text
  *parents, leaf = field.split('.')
  target = config
  for p in parents:
    target = target[p]
  target[leaf] = value


def _launch(config_spec, batch_size, overrides, workdir, cache_dir,
            stop_step):
  """main.py on `config_spec` at `batch_size`, stopping itself (SIGTERM,
  at the end of the call that holds `stop_step`); returns (launch time,
  its timing.json)."""
  env = dict(os.environ)
  env[preemption.SELF_SIGNAL_ENV] = f'{stop_step}:SIGTERM'
  cmd = [sys.executable, os.path.join(sweep.ROOT, 'main.py'),
         f'--config={config_spec}', f'--workdir={workdir}',
         f'--compilation_cache_dir={cache_dir}',
         f'--config.batch_size={batch_size}']
  cmd += [f'--config.{o}' for o in overrides]
  launched = time.time()
  proc = subprocess.run(cmd, cwd=sweep.ROOT, env=env, capture_output=True,
                        text=True, check=False)
  if proc.returncode not in (0, errors.Preempted.EXIT_STATUS):
    raise RuntimeError(f'{" ".join(cmd)} failed:\n{proc.stderr[-3000:]}')
  with open(os.path.join(workdir, 'timing.json')) as f:
    return launched, json.load(f)


def loop_row(config_spec: str, batch_size: int, overrides, cache_dir: str,
             loop_seconds: float, repeats: int, warmup: int) -> dict:
  """The train loop against the step: `loop_overhead`, a real run's wall
  time per train step (evals, instruments, log writes and checkpoints
  excluded: bn_study/loop_timing.py) over the jitted step timed alone; and
  `startup_s`, from launching main.py to its first step done, with the
  compilation cache already warm."""
  config = _config_from_file(config_spec)
  config.batch_size = batch_size
  for o in overrides:
    _override(config, *o.split('=', 1))
  feed = feeds.make_feed(config, mesh_lib.make_mesh(), 1)
  info, steps_per_epoch = feed.info, feed.steps_per_epoch
  on_device = feed.on_device
  del feed
  step_s = measure_batch_size(_setup(config, info, steps_per_epoch),
                              batch_size, repeats, warmup, None)['step_s']
  num_steps = config.num_epochs * steps_per_epoch
  stop = int(min(num_steps, max(20, loop_seconds / step_s)))
  with tempfile.TemporaryDirectory() as tmp:
    # The first launch fills the compilation cache; its steps are timed
    # after its first call, so compiling is not in them.
    _, timing = _launch(config_spec, batch_size, overrides,
                        os.path.join(tmp, 'run'), cache_dir, stop)
    launched, warm = _launch(config_spec, batch_size, overrides,
                             os.path.join(tmp, 'startup'), cache_dir, 1)
  loop_step_s = timing['train_s'] / max(1, timing['train_steps'])
  return {'config': config_spec, 'batch_size': batch_size,
          'overrides': list(overrides), 'data': info.name,
          'model': describe_model(config.model),
          'data_on_device': on_device,
          'step_s': step_s, 'loop_step_s': loop_step_s,
          'loop_steps': timing['train_steps'],
          'loop_overhead': loop_step_s / step_s,
          'startup_s': warm['first_step_at'] - launched}


def format_loop_table(result: dict) -> str:
  lines = [f'{result["device"]} x{result["device_count"]}, jax '
           f'{result["jax_version"]}, {result["date"]}', '',
           f'{"config":<28} {"batch":>6} {"step ms":>9} {"loop ms":>9} '
           f'{"overhead":>9} {"steps":>7} {"startup s":>10}']
  for r in result['loop']:
    lines.append(f'{r["config"]:<28} {r["batch_size"]:>6} '
                 f'{r["step_s"] * 1e3:>9.3f} {r["loop_step_s"] * 1e3:>9.3f} '
                 f'{r["loop_overhead"]:>9.2f} {r["loop_steps"]:>7} '
                 f'{r["startup_s"]:>10.1f}')
  return '\n'.join(lines)


def _parse_loop(specs) -> List[Tuple[str, int, List[str]]]:
  rows = []
  for spec in specs:
    first, *overrides = spec.split()
    config_spec, _, batch = first.rpartition('@')
    if (not config_spec or not batch.isdigit() or int(batch) <= 0
        or not all('=' in o for o in overrides)):
      raise errors.UserError(
          f'--loop={spec!r}: give CONFIG@BATCH, then any FIELD=VALUE '
          'overrides, e.g. "configs/bn_paper_fig1.py@60" or '
          '"configs/wbn.py@2500 data_dir=/data".')
    rows.append((config_spec, int(batch), overrides))
  return rows


def _environment() -> dict:
  return {'device': str(jax.devices()[0].device_kind),
          'platform': jax.devices()[0].platform,
          'device_count': jax.device_count(),
          'jax_version': jax.__version__,
          'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
              timespec='seconds')}


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
  flags.DEFINE_bool('instruments', False, 'Also time each instrument of '
                    'bn_study.analysis once (as a multiple of the step).')
  flags.DEFINE_integer('mock_examples', 50000, 'Examples per split of the '
                       'mock data used when the dataset is not prepared.')
  flags.DEFINE_multi_string(
      'loop', None, '"CONFIG@BATCH [FIELD=VALUE ...]", repeatable: measure '
      'the train loop (loop_overhead, startup_s) of each config at that batch '
      'size, through main.py, instead of the step table.')
  flags.DEFINE_float('loop_seconds', 20.0, 'Seconds of train steps in each '
                     '--loop row\'s real run (at most the whole run).')
  flags.DEFINE_string('json', None, 'Write the results here.')
  flags.DEFINE_string('compilation_cache_dir', None, 'Persistent cache for '
                      'the warm-compile figure (default: a fresh temp dir).')


def run(config, batch_sizes, repeats, warmup, pipeline_batches,
        epoch_batch_size, bn_overhead, cache_dir, data: str,
        instruments: bool = False) -> dict:
  """Every measurement; `data` says what the pipeline reads (real or mock)."""
  compilation_cache.enable(cache_dir)
  from bn_study import input_pipeline  # pylint: disable=g-import-not-at-top
  pipeline = input_pipeline.Pipeline(config)
  info, steps_per_epoch = pipeline.info, pipeline.steps_per_epoch
  matmul = matmul_call()
  reference = flops_per_sec(matmul_flops(MATMUL_SIZE),
                            median_seconds(time_calls(matmul, repeats, 2)))
  rows = []
  none_config = config.copy_and_resolve_references()
  none_config.model.norm = 'none'
  first = True
  for batch_size in batch_sizes:
    cfg = config.copy_and_resolve_references()
    cfg.batch_size = cfg.eval_batch_size = batch_size
    setup = _setup(cfg, info, steps_per_epoch)
    row = {}
    if first:
      row.update(compile_times(setup, batch_size))
      first = False
    row.update(measure_batch_size(setup, batch_size, repeats, warmup,
                                  matmul))
    if instruments:
      row.update(instrument_times(setup, batch_size, max(1, repeats // 3),
                                  1))
    if bn_overhead and config.model.norm != 'none':
      ncfg = none_config.copy_and_resolve_references()
      ncfg.batch_size = ncfg.eval_batch_size = batch_size
      none_row = measure_batch_size(_setup(ncfg, info, steps_per_epoch),
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
      ecfg = config.copy_and_resolve_references()
      ecfg.batch_size = ecfg.eval_batch_size = size
      eval_s = _eval_seconds(info, row)
      with tempfile.TemporaryDirectory() as workdir:
        extras.update(epoch_end_to_end(ecfg, workdir, row['step_s'], eval_s))
      extras['epoch_batch_size'] = size
      # The step and eval again, right after the epoch: with the timings
      # before it they bracket the epoch, so the machine's drift in between
      # does not read as the training loop's own cost.
      after = measure_batch_size(_setup(ecfg, info, steps_per_epoch), size,
                                 repeats, warmup, None)
      predicted = predicted_epoch_s(
          extras['epoch_steps'], (row['step_s'] + after['step_s']) / 2,
          (eval_s + _eval_seconds(info, after)) / 2)
      extras.update(epoch_step_s_after=after['step_s'],
                    epoch_predicted_bracketed_s=predicted,
                    epoch_gap_bracketed=epoch_gap(extras['epoch_wall_s'],
                                                  predicted))
  return {'device': str(jax.devices()[0].device_kind),
          'platform': jax.devices()[0].platform,
          'device_count': jax.device_count(),
          'jax_version': jax.__version__,
          'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
              timespec='seconds'),
          'config_norm': config.model.norm,
          'model': describe_model(config.model), 'data': data,
          'train_compiler_options': cpu.compiler_options(
              jax.devices()[0].platform),
          'reference': f'{MATMUL_SIZE}x{MATMUL_SIZE} float32 jnp.dot',
          'matmul_flops_per_sec': reference, 'results': rows, **extras}


def describe_model(model_config) -> str:
  """The family, depth, norm, compute dtype and conv module, in words."""
  resolved = models.resolved(model_config)
  depth = f'-{resolved.depth}' if resolved.depth else ''
  conv = cpu.conv_module(model_config.conv_impl, dtype=model_config.dtype,
                         kind=model_config.kind)
  return (f'{model_config.kind}{depth}, norm={model_config.norm}, '
          f'{model_config.dtype}, conv {conv.__name__}')


def format_table(result: dict) -> str:
  lines = [f'{result["device"]} x{result["device_count"]}, jax '
           f'{result["jax_version"]}, {result["date"]}, data: {result["data"]}',
           f'model: {result.get("model")}',
           f'reference: {result["reference"]}, timed in turn with each '
           f'batch size\'s steps ("ref"); '
           f'{result["matmul_flops_per_sec"] / 1e9:.1f} GFLOP/s at the start',
           f'huge_pages: {result.get("huge_pages")}, '
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
                       for name in analysis.INSTRUMENTS))
  kernel = [r for r in result['results'] if 'page_faults_per_step' in r]
  if kernel:
    lines.append('kernel time per train step (median; faulting in and zeroing '
                 'fresh memory): ' + ', '.join(
                     f'batch {r["batch_size"]} {r["system_s_per_step"] * 1e3:.0f}'
                     f' ms system, {r["page_faults_per_step"]:.0f} page faults'
                     for r in kernel))
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
  if 'epoch_wall_s' in result:
    lines.append(f'epoch 2 of 2 at batch {result["epoch_batch_size"]}: '
                 f'{result["epoch_wall_s"]:.1f} s wall vs '
                 f'{result["epoch_predicted_s"]:.1f} s steps x step time + '
                 f'eval ({result["epoch_gap"] * 100:+.1f}%)')
    if 'epoch_eval_wall_s' in result:
      steps = result['epoch_steps']
      lines.append(f'  of which its {steps} steps '
                   f'{result["epoch_steps_wall_s"]:.1f} s '
                   f'({result["epoch_steps_wall_s"] / steps * 1e3:.1f} ms '
                   f'each) and its eval {result["epoch_eval_wall_s"]:.1f} s '
                   f'(timed alone: {result["epoch_eval_s"]:.1f} s)')
    if 'epoch_gap_bracketed' in result:
      lines.append(f'  against the step timed again after it '
                   f'({result["epoch_step_s_after"] * 1e3:.1f} ms, before '
                   f'{result["epoch_step_s"] * 1e3:.1f} ms) and their mean: '
                   f'{result["epoch_predicted_bracketed_s"]:.1f} s '
                   f'({result["epoch_gap_bracketed"] * 100:+.1f}%)')
  return '\n'.join(lines)


def _write_json(result: dict, path: Optional[str]):
  if path:
    with open(path, 'w') as f:
      json.dump(result, f, indent=2)
    print(f'wrote {path}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # As main.py does, first thing: huge pages (re-executes once), TF off the
  # accelerators, orbax's INFO lines dropped.
  cpu.use_huge_pages()
  feeds.hide_accelerators_from_tf()
  checkpoints.quiet_orbax_logs()
  if FLAGS.loop:
    try:
      rows = _parse_loop(FLAGS.loop)
      with tempfile.TemporaryDirectory() as tmp:
        cache = FLAGS.compilation_cache_dir or tmp
        compilation_cache.enable(cache)
        result = {**_environment(), 'loop': [
            loop_row(spec, batch, overrides, cache, FLAGS.loop_seconds,
                     FLAGS.repeats, FLAGS.warmup)
            for spec, batch, overrides in rows]}
    except errors.UserError as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(2)
    print(format_loop_table(result))
    _write_json(result, FLAGS.json)
    return
  try:
    sizes = [int(b) for b in FLAGS.batch_sizes]
    if not sizes or min(sizes) <= 0:
      raise ValueError
  except ValueError:
    print(f'error: --batch_sizes={",".join(FLAGS.batch_sizes)} must be '
          'positive integers, e.g. 128,2500.', file=sys.stderr)
    sys.exit(2)
  try:
    train.validate(FLAGS.config)
    for size in sizes:
      mesh_lib.check_batch_size('--batch_sizes', size, mesh_lib.make_mesh())
      if FLAGS.config.model.norm == 'ghost_batch':
        norms.check_ghost_batch(FLAGS.config.model.virtual_batch_size,
                                '--batch_sizes', size)
    config = FLAGS.config
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    from bn_study import input_pipeline  # pylint: disable=g-import-not-at-top
    data, mock = f'{config.dataset} (prepared TFDS)', contextlib.nullcontext()
    if not input_pipeline.is_prepared(config):
      # Same shapes and sizes, random pixels: step times are the same, the
      # pipeline rate is not that of decoding the real files.
      data = f'{config.dataset} (TFDS mock data: not prepared here)'
      mock = tfds.testing.mock_data(num_examples=FLAGS.mock_examples)
    with tempfile.TemporaryDirectory() as tmp, mock:
      result = run(config, sizes, FLAGS.repeats, FLAGS.warmup,
                   FLAGS.pipeline_batches, FLAGS.epoch_batch_size,
                   FLAGS.bn_overhead, FLAGS.compilation_cache_dir or tmp, data,
                   FLAGS.instruments)
    result.update(huge_pages=cpu.huge_pages_active(),
                  xla_flags=os.environ.get('XLA_FLAGS', ''))
  except errors.UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(format_table(result))
  _write_json(result, FLAGS.json)


if __name__ == '__main__':
  _define_flags()
  app.run(main, flags_parser=errors.parse_flags)
