"""model.conv_impl=auto, decided by measuring where it runs (as
torch.backends.cudnn.benchmark does): on CPU, both convolutions are timed on
this model's train step at this batch size, and the other replaces the
rule's convolution only when clearly faster (MARGIN).

The decision is cached beside the compilation cache (keyed by the CPU, the
JAX version, XLA's flags, the model and the batch), logged with its
timings, and written into the run folder, where a relaunch reads it back:
the two convolutions sum in different orders, so a resumed run must keep
the one it started with. The seed's CNN and MLP (im2col measured
faster for them, docs/performance.md), steps too small for the timing to pay for two
compilations, other platforms and multi-process jobs keep
cpu.conv_module's rule.
"""

import dataclasses
import hashlib
import json
import os
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from bn_study import models
from bn_study import workdir as workdir_lib
from bn_study.runtime import cpu
from bn_study.runtime import mesh as mesh_lib
from bn_study.training import optim
from bn_study.training import steps as steps_lib

CHOICE = workdir_lib.CONV_IMPL  # In the run folder and the cache folder.
# A train step below this many conv FLOPs (about 0.1 s on a 2-core CPU)
# keeps the rule: measuring costs two compilations and a few steps.
MIN_STEP_FLOPS = 10e9
TIMED_STEPS = 3
WARMUP_STEPS = 2  # The first compiles; the next still faults memory in.
# The other convolution replaces the rule's only when this much faster: the
# rule holds what was measured elsewhere (eval too), and a near tie is noise.
MARGIN = 0.9


@dataclasses.dataclass(frozen=True)
class Choice:
  conv_impl: str  # xla | im2col
  why: str


def _conv_flops(model_config, batch_size: int, image_shape) -> float:
  """Forward and backward conv FLOPs of a train step (3x the forward's),
  from shapes alone."""
  model = models.create_model(model_config, 10)
  shape = (batch_size, *image_shape)
  outputs = models.layer_shapes(model, shape)
  params = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros(shape), train=False))['params']
  flops = 0.0
  for name, p in params.items():
    kernel = p.get('kernel') if isinstance(p, dict) else None
    if kernel is not None and kernel.ndim == 4 and name in outputs:
      kh, kw, c, _ = kernel.shape
      flops += 2 * np.prod(outputs[name]) * kh * kw * c
  return 3 * flops


def _key(config, image_shape, num_devices) -> str:
  model = config.model.to_dict()
  model.pop('conv_impl')
  text = json.dumps([cpu.identity(), jax.__version__,
                     os.environ.get('XLA_FLAGS', ''), model,
                     config.batch_size, list(image_shape), num_devices,
                     config.optimizer], sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _step_seconds(config, conv_impl, mesh, image_shape, num_classes):
  model_config = config.model.copy_and_resolve_references()
  model_config.conv_impl = conv_impl
  model = models.create_model(model_config, num_classes, 1000, mesh.size)
  tx, schedule = optim.make_optimizer(config, 1000)
  state = steps_lib.create_train_state(config, model, image_shape, tx, mesh)
  train = steps_lib.jit_steps(mesh, schedule, seed=config.seed).train
  rng = np.random.default_rng(0)
  batch = jax.device_put(
      {'image': rng.normal(size=(config.batch_size, *image_shape)).astype(
          np.float32),
       'label': rng.integers(0, num_classes, config.batch_size).astype(
           np.int32)}, mesh_lib.batch_sharding(mesh))
  metrics = steps_lib.TrainMetrics.empty()
  for _ in range(WARMUP_STEPS):
    state, metrics = train(state, batch, metrics)
  jax.block_until_ready(state)
  start = time.perf_counter()
  for _ in range(TIMED_STEPS):
    state, metrics = train(state, batch, metrics)
  jax.block_until_ready(state)
  return (time.perf_counter() - start) / TIMED_STEPS


def choose(config, mesh, image_shape, num_classes, workdir) -> Choice:
  """The convolution this run computes with; config.model.conv_impl unless
  it is auto on CPU, then what the run folder, the cache or a timing
  says."""
  cfg = config.model
  platform = mesh.devices.flat[0].platform
  rule = ('im2col' if cpu.conv_module(cfg.conv_impl, platform, cfg.dtype,
                                      cfg.kind) is cpu.Im2colConv else 'xla')
  if cfg.conv_impl != 'auto':
    return Choice(cfg.conv_impl, 'model.conv_impl')
  if platform != 'cpu':
    return Choice(rule, f'auto on {platform}: the rule')
  if cfg.kind in cpu.IM2COL_FAMILIES:
    # The seed's CNN and MLP: im2col measured faster (docs/performance.md).
    return Choice(rule, 'auto: the rule for the seed\'s models')
  if jax.process_count() > 1:
    # Every process must compile the same step, and a timing (or a cache,
    # or a run folder) on one host is not another's.
    return Choice(rule, 'auto over several processes: the rule')
  saved = workdir_lib.path(workdir) / CHOICE
  if saved.exists():
    chosen = json.loads(saved.read_text())
    return Choice(chosen['conv_impl'],
                  f'auto: as this run chose before ({chosen["why"]})')
  flops = _conv_flops(cfg, config.batch_size, image_shape)
  if flops < MIN_STEP_FLOPS:
    choice = Choice(rule, f'auto: the rule ({flops / 1e9:.2f} GFLOP of convs '
                    f'a step, under {MIN_STEP_FLOPS / 1e9:g} to time)')
  else:
    choice = _cached_or_timed(config, mesh, image_shape, num_classes, rule)
  saved.write_text(json.dumps(dataclasses.asdict(choice), indent=2))
  return choice


def _cache_dir() -> str:
  """The compilation cache's folder ('' when it is off)."""
  return jax.config.jax_compilation_cache_dir or ''


def _cached_or_timed(config, mesh, image_shape, num_classes,
                     rule: str) -> Choice:
  directory = _cache_dir()
  key = _key(config, image_shape, mesh.size)
  cache_file = os.path.join(directory, CHOICE) if directory else None
  cache = {}
  if cache_file and os.path.exists(cache_file):
    try:
      with open(cache_file) as f:
        cache = json.load(f)
    except (OSError, ValueError):
      cache = {}
  if key in cache:
    return Choice(cache[key]['conv_impl'],
                  f'auto: cached in {cache_file} ({cache[key]["why"]})')
  seconds = {impl: _step_seconds(config, impl, mesh, image_shape,
                                 num_classes) for impl in ('xla', 'im2col')}
  other = 'im2col' if rule == 'xla' else 'xla'
  best = other if seconds[other] < MARGIN * seconds[rule] else rule
  choice = Choice(best, 'auto: timed here, ' + ', '.join(
      f'{impl} {s:.3f} s' for impl, s in seconds.items()) + ' a train step; '
      f'{other} replaces the rule\'s {rule} only when under {MARGIN:g}x')
  if cache_file:
    cache[key] = dataclasses.asdict(choice)
    os.makedirs(directory, exist_ok=True)
    with open(cache_file, 'w') as f:
      json.dump(cache, f, indent=2)
  return choice


def resolved(config, choice: Choice):
  """config.model with conv_impl set to the choice."""
  model_config = config.model.copy_and_resolve_references()
  model_config.conv_impl = choice.conv_impl
  return model_config
