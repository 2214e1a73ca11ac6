"""The jitted train step timed alone, as both modes of the benchmark time it
(the per-batch-size table, bn_study/tools/benchmark.py, and the --loop rows,
bn_study/tools/loop_rows.py): the arithmetic, the timers, the model and
steps as training builds them, and one batch size's step and eval rates."""

import dataclasses
import datetime
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from bn_study import models
from bn_study import workdir as workdir_lib
from bn_study.runtime import cpu
from bn_study.runtime import mesh as mesh_lib
from bn_study.training import optim
from bn_study.training import steps as steps_lib
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


def kernel_stalls(path: str = '/proc/vmstat') -> Optional[Dict[str, int]]:
  """The kernel's machine-wide counts of allocations that stalled on direct
  compaction (for a huge page: malloc asks for them under THP `madvise`,
  whose `defrag` setting compacts in the faulting thread) and on direct
  reclaim. None where there is no /proc/vmstat."""
  try:
    with open(path, encoding='ascii') as f:
      counts = dict(line.split() for line in f if line.strip())
  except (OSError, ValueError):
    return None
  reclaim = sum(int(v) for k, v in counts.items()
                if k.startswith('allocstall_'))
  return {'compaction_stalls': int(counts.get('compact_stall', 0)),
          'reclaim_stalls': reclaim}


def peak_rss_mib() -> Optional[float]:
  """The most resident memory this process has had so far, in MiB; None
  where Python has no `resource` module."""
  if resource is None:
    return None
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak / (2**20 if sys.platform == 'darwin' else 2**10)  # B, KiB.


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


class Matmul:
  """The roofline reference: calling it runs one n x n float32 matmul on the
  default device, blocking; `flops` is that matmul's."""

  def __init__(self, n: int = MATMUL_SIZE):
    self.n, self.flops = n, matmul_flops(n)
    self._a = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    self._b = jax.random.normal(jax.random.key(2), (n, n), jnp.float32)
    self._dot = jax.jit(jnp.dot)

  def __call__(self):
    self._dot(self._a, self._b).block_until_ready()


@dataclasses.dataclass
class Setup:
  config: object
  mesh: object
  model: object
  state: object
  steps: steps_lib.Steps
  image_shape: tuple
  num_classes: int


def make_setup(config, info, steps_per_epoch) -> Setup:
  """The model, state and jitted steps of `config` (validated by the caller:
  training/validate.py), on dataset `info`."""
  mesh = mesh_lib.make_mesh()
  model = models.create_model(
      config.model, info.num_classes,
      workdir_lib.run_steps(config.num_epochs, steps_per_epoch), mesh.size)
  tx, schedule = optim.make_optimizer(config, steps_per_epoch)
  state = steps_lib.create_train_state(config, model, info.image_shape, tx,
                                       mesh)
  # The same arguments as train_and_evaluate's (training/loop.py): the time
  # is that of the step a run compiles.
  steps = steps_lib.jit_steps(mesh, schedule, config.nonfinite == 'skip',
                              config.label_smoothing, config.seed)
  return Setup(config, mesh, model, state, steps, info.image_shape,
               info.num_classes)


def fake_batch(setup: Setup, batch_size: int, eval_mask: bool = False):
  """Random images and labels of the dataset's shapes, on the mesh."""
  rng = np.random.default_rng(0)
  batch = {'image': rng.random((batch_size, *setup.image_shape), np.float32),
           'label': rng.integers(0, setup.num_classes, batch_size)}
  if eval_mask:
    batch['mask'] = np.ones(batch_size, np.float32)
  return mesh_lib.global_batch(batch, setup.mesh)


def measure_batch_size(setup: Setup, batch_size: int, repeats: int,
                       warmup: int, matmul: Optional[Matmul]
                       ) -> Dict[str, float]:
  """Step and eval rates; with `matmul` (the reference, timed in turn with
  the steps) also the roofline fraction."""
  batch = fake_batch(setup, batch_size)
  compiled = setup.steps.train.lower(
      setup.state, batch, steps_lib.TrainMetrics.empty()).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost['flops'])
  # The step donates its state: thread it through the timed calls.
  holder = {'state': jax.tree.map(jnp.copy, setup.state),
            'metrics': steps_lib.TrainMetrics.empty()}
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
  eval_batch = fake_batch(setup, batch_size, eval_mask=True)

  def eval_call():
    jax.block_until_ready(setup.steps.eval(
        holder['state'], eval_batch, steps_lib.EvalMetrics.empty()))

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
    reference = flops_per_sec(matmul.flops,
                              median_seconds(matmul_times))
    row.update(matmul_flops_per_sec=reference,
               roofline_fraction=roofline_fraction(achieved, reference))
  return row


def describe_model(model_config) -> str:
  """The family, depth, norm, compute dtype and conv module, in words."""
  resolved = models.resolved(model_config)
  depth = f'-{resolved.depth}' if resolved.depth else ''
  conv = cpu.conv_module(model_config.conv_impl, dtype=model_config.dtype,
                         kind=model_config.kind)
  return (f'{model_config.kind}{depth}, norm={model_config.norm}, '
          f'{model_config.dtype}, conv {conv.__name__}')


def environment() -> dict:
  """The device, the host's CPU, JAX's version and the date, heading every
  result: a CPU figure means little without which CPU gave it."""
  return {'device': str(jax.devices()[0].device_kind),
          'host_cpu': cpu.identity(),
          'platform': jax.devices()[0].platform,
          'device_count': jax.device_count(),
          'jax_version': jax.__version__,
          'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
              timespec='seconds')}
