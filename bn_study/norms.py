"""Every normalizer the model can use, behind one factory.

The model asks `make_norm` for a norm at each place its placement puts one and
never learns which normalizer it got. Flax's BatchNorm, GroupNorm and
LayerNorm are used as they are; ghost batch norm and batch renorm, which Flax
lacks, are written here. Conventions (momentum as a decay, biased variance)
follow Flax; see configs/default.py.
"""

import math
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from bn_study import errors

NORMS = ('none', 'batch', 'ghost_batch', 'batch_renorm', 'group', 'layer')
PLACEMENTS = ('input', 'pre_act', 'post_act')
# Normalizers whose training output depends on the other examples of the
# batch: these keep running averages in `batch_stats`.
BATCH_NORMS = ('batch', 'ghost_batch', 'batch_renorm')
# global: statistics over the whole global batch (what jit over a mesh gives).
# per_device: each device's shard by its own statistics, as pmap without
#   axis_name did: exactly ghost batches of batch_size / num_devices.
STATS_SCOPES = ('global', 'per_device')

# norm(x, mask): mask (N,) marks the real examples of a padded batch; only
# batch-statistics norms use it.
Norm = Callable[[jax.Array, Optional[jax.Array]], jax.Array]


def validate(model_config):
  errors.check_choice('model.norm', model_config.norm, NORMS)
  errors.check_choice('model.placement', model_config.placement, PLACEMENTS)
  errors.check_choice('model.stats_scope', model_config.stats_scope,
                      STATS_SCOPES)
  if (model_config.stats_scope == 'per_device'
      and model_config.norm in ('ghost_batch', 'batch_renorm')):
    raise errors.UserError(
        f'model.stats_scope=per_device is for model.norm=batch, not '
        f'{model_config.norm!r}; for ghost_batch choose a virtual_batch_size '
        'that divides the per-device batch instead.')
  errors.check_number('model.bn_momentum', model_config.bn_momentum, 0, 1)
  errors.check_number('model.bn_epsilon', model_config.bn_epsilon, 0,
                      low_open=True)
  for field in ('use_scale', 'use_bias'):
    if not isinstance(model_config[field], bool):
      raise errors.UserError(
          f'model.{field}={model_config[field]!r} must be True or False.')
  if model_config.norm == 'ghost_batch':
    errors.check_positive_int('model.virtual_batch_size',
                              model_config.virtual_batch_size)
  if model_config.norm == 'group':
    errors.check_positive_int('model.num_groups', model_config.num_groups)
  if model_config.norm == 'batch_renorm':
    cfg = model_config
    errors.check_number('model.renorm_momentum', cfg.renorm_momentum, 0, 1)
    for field in ('renorm_r_max_at', 'renorm_d_max_at'):
      errors.check_number(f'model.{field}', cfg[field], 0, 1)
    if cfg.renorm_r_max < 1 or cfg.renorm_d_max < 0:
      raise errors.UserError(
          f'model.renorm_r_max={cfg.renorm_r_max} must be >= 1 and '
          f'model.renorm_d_max={cfg.renorm_d_max} >= 0.')
    if not 0 <= cfg.renorm_warmup <= min(cfg.renorm_r_max_at,
                                         cfg.renorm_d_max_at):
      raise errors.UserError(
          f'model.renorm_warmup={cfg.renorm_warmup} must be between 0 and '
          f'model.renorm_r_max_at={cfg.renorm_r_max_at} and '
          f'model.renorm_d_max_at={cfg.renorm_d_max_at} (fractions of the '
          'run).')


def check_ghost_batch(virtual_batch_size: int, field: str, batch_size: int):
  """Ghost batches split every batch they normalize: the one rule for
  model.virtual_batch_size, checked by train.validate for each batch size
  before any work, and by GhostBatchNorm on the batch it is given."""
  if batch_size % virtual_batch_size:
    raise errors.UserError(
        f'model.virtual_batch_size={virtual_batch_size} does not divide '
        f'{field}={batch_size}; use a divisor of it (ghost batches split '
        'every batch they normalize).')


def _per_example(mask, x):
  """mask (N,) -> broadcastable to x (N, ...)."""
  return None if mask is None else mask.reshape((-1,) + (1,) * (x.ndim - 1))


def _moments(x, axes, mask):
  """Masked mean, mean of squares and count over `axes`, in float32."""
  x = x.astype(jnp.float32)
  weight = jnp.ones_like(x) if mask is None else jnp.broadcast_to(
      mask.astype(jnp.float32), x.shape)
  count = jnp.maximum(weight.sum(axes, keepdims=True), 1.0)
  mean = (x * weight).sum(axes, keepdims=True) / count
  mean_sq = (x * x * weight).sum(axes, keepdims=True) / count
  return mean, mean_sq, count


def _scale_bias(module, y, dtype):
  """The learned per-channel affine part, as `scale` and `bias` of `module`
  (the names Flax's own norms use), applied in float32; the result in the
  compute dtype."""
  features = (y.shape[-1],)
  if module.use_scale:
    y = y * module.param('scale', module.scale_init, features)
  if module.use_bias:
    y = y + module.param('bias', nn.initializers.zeros, features)
  return y.astype(dtype)


class GhostBatchNorm(nn.Module):
  """Ghost batch norm (Hoffer et al. 2017).

  Training splits the batch into consecutive groups of `virtual_batch_size`
  examples and normalizes each by its own statistics; eval uses the running
  averages. The running averages track the statistics of the whole batch
  (mean of the group means, and mean of the group second moments minus its
  square), i.e. the population they are meant to estimate; averaging the
  group variances alone would underestimate it.
  """
  virtual_batch_size: int
  use_running_average: bool
  momentum: float = 0.99
  epsilon: float = 1e-3
  use_scale: bool = True
  use_bias: bool = True
  scale_init: Callable = nn.initializers.ones

  @nn.compact
  def __call__(self, x, mask=None):
    features = x.shape[-1]
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,),
                            jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, (features,),
                           jnp.float32)
    if self.use_running_average:
      y = (x - ra_mean.value) * jax.lax.rsqrt(ra_var.value + self.epsilon)
    else:
      n, size = x.shape[0], self.virtual_batch_size
      check_ghost_batch(size, 'the batch', n)
      groups = x.reshape((n // size, size) + x.shape[1:])
      gmask = None if mask is None else mask.reshape(
          (n // size, size) + (1,) * (x.ndim - 1))
      axes = tuple(range(1, groups.ndim - 1))
      mean, mean_sq, count = _moments(groups, axes, gmask)
      var = jnp.maximum(mean_sq - mean * mean, 0.0)
      y = ((groups - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape)
      if not self.is_initializing():
        total = count.sum(0)
        batch_mean = ((mean * count).sum(0) / total).reshape(-1)
        batch_var = ((mean_sq * count).sum(0) / total).reshape(-1) - batch_mean**2
        m = self.momentum
        ra_mean.value = m * ra_mean.value + (1 - m) * batch_mean
        ra_var.value = m * ra_var.value + (1 - m) * jnp.maximum(batch_var, 0.0)
    return _scale_bias(self, y, x.dtype)


class BatchRenorm(nn.Module):
  """Batch renormalization (Ioffe 2017).

  Training: y = (x - mu_B) / sigma_B * r + d with
  r = stop_grad(clip(sigma_B / sigma, 1/r_max, r_max)) and
  d = stop_grad(clip((mu_B - mu) / sigma, -d_max, d_max)), where mu and sigma
  are the running mean and standard deviation (sigma_B includes epsilon).
  Eval: y = (x - mu) / sigma. r_max and d_max follow the paper's schedule:
  1 and 0 until `warmup_steps`, then linear to `r_max` at `r_max_steps` and
  `d_max` at `d_max_steps`; the layer counts its own training steps.
  """
  use_running_average: bool
  momentum: float = 0.99
  epsilon: float = 1e-3
  use_scale: bool = True
  use_bias: bool = True
  scale_init: Callable = nn.initializers.ones
  r_max: float = 3.0
  d_max: float = 5.0
  warmup_steps: int = 0
  r_max_steps: int = 0
  d_max_steps: int = 0

  def limits(self, step):
    """(r_max, d_max) in force at training step `step`."""
    def ramp(end):
      span = max(end - self.warmup_steps, 1)
      return jnp.clip((step - self.warmup_steps) / span, 0.0, 1.0)
    return (1.0 + (self.r_max - 1.0) * ramp(self.r_max_steps),
            self.d_max * ramp(self.d_max_steps))

  @nn.compact
  def __call__(self, x, mask=None):
    features = x.shape[-1]
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,),
                            jnp.float32)
    ra_std = self.variable('batch_stats', 'std', jnp.ones, (features,),
                           jnp.float32)
    steps = self.variable('batch_stats', 'steps', jnp.zeros, (), jnp.int32)
    if self.use_running_average:
      y = (x - ra_mean.value) / ra_std.value
    else:
      axes = tuple(range(x.ndim - 1))
      mean, mean_sq, _ = _moments(x, axes, _per_example(mask, x))
      mean, mean_sq = mean.reshape(-1), mean_sq.reshape(-1)
      std = jnp.sqrt(jnp.maximum(mean_sq - mean * mean, 0.0) + self.epsilon)
      r_max, d_max = self.limits(steps.value)
      r = jax.lax.stop_gradient(jnp.clip(std / ra_std.value, 1 / r_max, r_max))
      d = jax.lax.stop_gradient(
          jnp.clip((mean - ra_mean.value) / ra_std.value, -d_max, d_max))
      y = (x - mean) / std * r + d
      if not self.is_initializing():
        m = self.momentum
        ra_mean.value = m * ra_mean.value + (1 - m) * mean
        ra_std.value = m * ra_std.value + (1 - m) * std
        steps.value = steps.value + 1
    return _scale_bias(self, y, x.dtype)


def make_norm(model_config, *, train: bool, name: str, total_steps: int = 0,
              num_devices: int = 1, zero_scale: bool = False) -> Optional[Norm]:
  """The norm called `name`, or None for `norm=none`.

  Statistics are reduced in float32 whatever the input's dtype; the output
  has the input's (the compute) dtype. `zero_scale` starts the scale (gamma)
  at 0, e.g. the last norm of a residual branch (Goyal et al. 2017).

  Call it inside a compact method so the layer binds to its parent. In
  training the batch norms normalize by batch statistics and update their
  running averages in `batch_stats`; in eval they use the averages and change
  nothing. `total_steps` (the run's length) scales the renorm schedule;
  `num_devices` (the mesh's size) sizes the groups of stats_scope=per_device.
  """
  cfg = model_config  # Validated once, by models.create_model.
  common = dict(epsilon=cfg.bn_epsilon, use_scale=cfg.use_scale,
                use_bias=cfg.use_bias, name=name,
                scale_init=(nn.initializers.zeros if zero_scale
                            else nn.initializers.ones))
  if cfg.norm == 'none':
    return None
  if cfg.norm == 'batch' and cfg.stats_scope == 'per_device':
    # The batch is split over the mesh in contiguous blocks, so the ghost
    # groups are exactly the devices' shards.
    def per_device(x, mask=None):
      return GhostBatchNorm(x.shape[0] // num_devices, not train,
                            momentum=cfg.bn_momentum, **common)(x, mask)
    return per_device
  if cfg.norm == 'batch':
    def batch_norm(x, mask=None):
      # Flax reduces in float32 (force_float32_reductions); dtype sets the
      # output's, which would otherwise be promoted to the params' float32.
      return nn.BatchNorm(use_running_average=not train,
                          momentum=cfg.bn_momentum, dtype=x.dtype, **common)(
                              x, mask=(None if mask is None else
                                       jnp.broadcast_to(_per_example(mask, x),
                                                        x.shape)))
    return batch_norm
  if cfg.norm == 'ghost_batch':
    layer = GhostBatchNorm(cfg.virtual_batch_size, not train,
                           momentum=cfg.bn_momentum, **common)
    return lambda x, mask=None: layer(x, mask)
  if cfg.norm == 'batch_renorm':
    layer = BatchRenorm(
        not train, momentum=cfg.renorm_momentum, r_max=cfg.renorm_r_max,
        d_max=cfg.renorm_d_max,
        warmup_steps=round(cfg.renorm_warmup * total_steps),
        r_max_steps=round(cfg.renorm_r_max_at * total_steps),
        d_max_steps=round(cfg.renorm_d_max_at * total_steps), **common)
    return lambda x, mask=None: layer(x, mask)
  if cfg.norm == 'group':
    def group_norm(x, mask=None):
      del mask  # Per-example statistics: padding cannot leak in.
      # Wu & He fix G for every layer; a layer whose channels G does not
      # divide (the raw image's 3) gets the largest G' dividing both.
      groups = math.gcd(cfg.num_groups, x.shape[-1])
      return nn.GroupNorm(num_groups=groups, dtype=x.dtype, **common)(x)
    return group_norm
  # layer: statistics per example over every axis but the batch (Ba et al.;
  # group norm with G = 1), with a per-channel scale and bias.
  def layer_norm(x, mask=None):
    del mask
    return nn.LayerNorm(reduction_axes=tuple(range(1, x.ndim)),
                        feature_axes=-1, dtype=x.dtype, **common)(x)
  return layer_norm
