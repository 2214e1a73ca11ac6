"""The normalizer layers Flax lacks: ghost batch norm, batch renorm, noisy
BN's step noise, FRN and the EvoNorms, and the (optionally zero-debiased)
running averages they keep. norms.py's registry builds them; conventions
(momentum as a decay, biased variance) follow Flax's nn.BatchNorm."""

import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from bn_study import errors


def check_ghost_batch(virtual_batch_size: int, field: str, batch_size: int):
  """Ghost batches split every batch they normalize: the one rule for
  model.virtual_batch_size, checked by norms.validate for each batch size
  the run normalizes before any work, and by GhostBatchNorm on the batch it is given."""
  if batch_size % virtual_batch_size:
    raise errors.UserError(
        f'model.virtual_batch_size={virtual_batch_size} does not divide '
        f'{field}={batch_size}; use a divisor of it (ghost batches split '
        'every batch they normalize).')


def per_example(mask, x):
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


def update_average(average, steps, value, momentum: float, debias: bool):
  """The running average's update with this step's `value`.

  Plain: momentum * average + (1 - momentum) * value, from its initial value.
  Debiased (zero_debias): the average Adam and TF's
  assign_moving_average(zero_debias=True) would report, an EMA started at 0
  divided by 1 - momentum^t after t updates; kept in that divided form, so
  eval, PreciseBN and the checkpoint read it as they read the plain one. The
  update is the same EMA rewritten for the divided form:
  a_t = (m (1 - m^(t-1)) a_(t-1) + (1 - m) x_t) / (1 - m^t).
  `steps` (t - 1, the updates so far) is read only when debiasing.
  """
  if not debias:
    return momentum * average + (1 - momentum) * value
  t = (steps + 1).astype(jnp.float32)
  kept = momentum * (1 - momentum**(t - 1))
  return (kept * average + (1 - momentum) * value) / (1 - momentum**t)


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
  zero_debias: bool = False

  @nn.compact
  def __call__(self, x, mask=None):
    ra_mean, ra_var, steps = _mean_var_averages(self, x.shape[-1])
    if self.use_running_average:
      y = (x - ra_mean.value) * jax.lax.rsqrt(ra_var.value + self.epsilon)
    else:
      n, size = x.shape[0], self.virtual_batch_size
      check_ghost_batch(size, 'the batch', n)
      if size == n:  # One group: plain BN, without a group axis.
        mean, mean_sq, _ = _moments(x, tuple(range(x.ndim - 1)),
                                    per_example(mask, x))
        var = jnp.maximum(mean_sq - mean * mean, 0.0)
        y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
        batch_mean, batch_var = mean.reshape(-1), var.reshape(-1)
      else:
        groups = x.reshape((n // size, size) + x.shape[1:])
        gmask = None if mask is None else mask.reshape(
            (n // size, size) + (1,) * (x.ndim - 1))
        axes = tuple(range(1, groups.ndim - 1))
        mean, mean_sq, count = _moments(groups, axes, gmask)
        var = jnp.maximum(mean_sq - mean * mean, 0.0)
        y = ((groups - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(
            x.shape)
        total = count.sum(0)
        batch_mean = ((mean * count).sum(0) / total).reshape(-1)
        batch_var = ((mean_sq * count).sum(0) / total).reshape(-1) - batch_mean**2
      if not self.is_initializing():
        _update(self, ((ra_mean, batch_mean),
                       (ra_var, jnp.maximum(batch_var, 0.0))), steps)
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
  zero_debias: bool = False
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
      mean, mean_sq, _ = _moments(x, axes, per_example(mask, x))
      mean, mean_sq = mean.reshape(-1), mean_sq.reshape(-1)
      std = jnp.sqrt(jnp.maximum(mean_sq - mean * mean, 0.0) + self.epsilon)
      r_max, d_max = self.limits(steps.value)
      r = jax.lax.stop_gradient(jnp.clip(std / ra_std.value, 1 / r_max, r_max))
      d = jax.lax.stop_gradient(
          jnp.clip((mean - ra_mean.value) / ra_std.value, -d_max, d_max))
      y = (x - mean) / std * r + d
      if not self.is_initializing():
        _update(self, ((ra_mean, mean), (ra_std, std)), steps)
    return _scale_bias(self, y, x.dtype)


class StepNoise(nn.Module):
  """Santurkar et al. (2018)'s noise for "noisy BN": each channel scaled by s
  and shifted by m, both redrawn every training step and shared by every
  example and position, so the next layer's input distribution moves from
  step to step (covariate shift, made on purpose) while each example keeps
  its information. m ~ U(-shift, shift), log s ~ U(-log scale, log scale).

  The draws come from the 'noise' RNG stream, which only the train step (and
  the instruments measuring it) pass, derived from the seed and the step
  (models.noise_rngs). Without it (PreciseBN, eval by batch statistics) this
  is the identity; eval with the running averages never builds it.

  The paper draws i.i.d. noise for each activation of each example from a
  distribution redrawn every step; its exact form and magnitudes were not
  available here. This keeps the part that makes covariate shift (the
  distribution each layer sees moves every step) and draws it per channel,
  shared by the batch, so it adds no per-example noise on top.
  """
  shift: float
  scale: float

  @nn.compact
  def __call__(self, x):
    if not self.has_rng('noise'):
      return x
    k_shift, k_scale = jax.random.split(self.make_rng('noise'))
    channels = x.shape[-1:]
    m = jax.random.uniform(k_shift, channels, jnp.float32, -self.shift,
                           self.shift)
    log_scale = math.log(self.scale)
    s = jnp.exp(jax.random.uniform(k_scale, channels, jnp.float32,
                                   -log_scale, log_scale))
    return (x * s + m).astype(x.dtype)


def _spatial_axes(x):
  """H and W of an NHWC input; none for a dense layer's (N, C)."""
  return tuple(range(1, x.ndim - 1))


class FRN(nn.Module):  # epsilon: model.bn_epsilon; the paper's is 1e-6.
  """Filter Response Normalization with its TLU (Singh & Krishnan 2020).

  nu2 = mean(x^2) over H, W per example and channel;
  y = gamma * x / sqrt(nu2 + eps) + beta, then TLU: max(y, tau) with a
  learned per-channel tau (when `act`; otherwise FRN alone). No mean is
  subtracted and no batch statistic is used. Where H * W = 1 (a dense layer,
  a 1x1 map) nu2 = x^2 and FRN would be nearly sign(x), with nearly no
  gradient; there, as the paper prescribes, eps is learned: eps + |eps_l|,
  eps_l one scalar per layer (`learned_eps`) from LEARNED_EPS_INIT (no
  initial value from the paper was checked here).
  """
  act: bool
  epsilon: float = 1e-6
  use_scale: bool = True
  use_bias: bool = True
  scale_init: Callable = nn.initializers.ones

  LEARNED_EPS_INIT = 1e-4

  @nn.compact
  def __call__(self, x, mask=None):
    del mask  # Per-example statistics.
    features = (x.shape[-1],)
    xf = x.astype(jnp.float32)
    nu2 = jnp.mean(xf * xf, axis=_spatial_axes(x), keepdims=True)
    eps = self.epsilon
    if math.prod(x.shape[1:-1]) == 1:
      eps = eps + jnp.abs(self.param(
          'learned_eps', nn.initializers.constant(self.LEARNED_EPS_INIT), ()))
    y = _scale_bias(self, xf * jax.lax.rsqrt(nu2 + eps), jnp.float32)
    if self.act:
      y = jnp.maximum(y, self.param('tau', nn.initializers.zeros, features))
    return y.astype(x.dtype)


class EvoNormB0(nn.Module):
  """EvoNorm-B0 (Liu et al. 2020), a batch-dependent normalization-activation
  layer: y = x / max(sqrt(s_b^2 + eps), v * x + sqrt(s_i^2 + eps)) * gamma
  + beta, s_b^2 the batch variance per channel (over N, H, W; the running
  average in eval), s_i^2 the instance variance (over H, W), v learned per
  channel from 1. Without `act` (where no activation follows), the paper's
  layer is the affine part alone, y = x * gamma + beta, with no statistics.
  Keeps a running mean beside the running variance so that PreciseBN can
  pool the variances of its batches; the mean normalizes nothing.
  """
  act: bool
  use_running_average: bool
  momentum: float = 0.99
  epsilon: float = 1e-3
  use_scale: bool = True
  use_bias: bool = True
  scale_init: Callable = nn.initializers.ones
  zero_debias: bool = False

  @nn.compact
  def __call__(self, x, mask=None):
    features = x.shape[-1]
    xf = x.astype(jnp.float32)
    if not self.act:
      return _scale_bias(self, xf, x.dtype)
    ra_mean, ra_var, steps = _mean_var_averages(self, features)
    if self.use_running_average:
      batch_var = ra_var.value
    else:
      mean, mean_sq, _ = _moments(xf, tuple(range(x.ndim - 1)),
                                  per_example(mask, x))
      mean, mean_sq = mean.reshape(-1), mean_sq.reshape(-1)
      batch_var = jnp.maximum(mean_sq - mean * mean, 0.0)
      if not self.is_initializing():
        _update(self, ((ra_mean, mean), (ra_var, batch_var)), steps)
    v = self.param('v', nn.initializers.ones, (features,))
    instance_var = jnp.var(xf, axis=_spatial_axes(x), keepdims=True)
    denominator = jnp.maximum(jnp.sqrt(batch_var + self.epsilon),
                              v * xf + jnp.sqrt(instance_var + self.epsilon))
    return _scale_bias(self, xf / denominator, x.dtype)


class EvoNormS0(nn.Module):
  """EvoNorm-S0 (Liu et al. 2020), batch-independent:
  y = x * sigmoid(v * x) / sqrt(s_g^2 + eps) * gamma + beta, s_g^2 the
  variance of each example's group of channels (over H, W and the group's
  C / G channels), v learned per channel from 1. Without `act`, the
  paper's layer is the affine part alone, y = x * gamma + beta."""
  act: bool
  num_groups: int
  epsilon: float = 1e-3
  use_scale: bool = True
  use_bias: bool = True
  scale_init: Callable = nn.initializers.ones

  @nn.compact
  def __call__(self, x, mask=None):
    del mask  # Per-example statistics.
    features = x.shape[-1]
    xf = x.astype(jnp.float32)
    if not self.act:
      return _scale_bias(self, xf, x.dtype)
    groups = xf.reshape(x.shape[:-1] + (self.num_groups,
                                        features // self.num_groups))
    axes = _spatial_axes(x) + (groups.ndim - 1,)
    group_var = jnp.var(groups, axis=axes, keepdims=True)
    y = (groups * jax.lax.rsqrt(group_var + self.epsilon)).reshape(x.shape)
    v = self.param('v', nn.initializers.ones, (features,))
    return _scale_bias(self, y * nn.sigmoid(v * xf), x.dtype)


def _mean_var_averages(module, features: int):
  """`module`'s running mean (from 0) and variance (from 1) in
  `batch_stats`, and its step count (None without zero_debias)."""
  return (module.variable('batch_stats', 'mean', jnp.zeros, (features,),
                          jnp.float32),
          module.variable('batch_stats', 'var', jnp.ones, (features,),
                          jnp.float32),
          _steps(module))


def _steps(module):
  """The updates a zero-debiased average has had (`batch_stats/steps`), or
  None without zero_debias."""
  if module.zero_debias:
    return module.variable('batch_stats', 'steps', jnp.zeros, (), jnp.int32)
  return None


def _update(module, pairs, steps):
  """Each (running average, this batch's value) of `pairs` updated, and the
  step count (None: none kept)."""
  for average, value in pairs:
    average.value = update_average(
        average.value, None if steps is None else steps.value, value,
        module.momentum, module.zero_debias)
  if steps is not None:
    steps.value = steps.value + 1
