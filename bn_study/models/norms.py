"""Every normalizer the model can use, behind one factory.

The model asks `make_norm` for a norm at each place its placement puts one and
never learns which normalizer it got. Flax's BatchNorm, GroupNorm, LayerNorm
and InstanceNorm are used as they are; ghost batch norm, batch renorm, noisy
BN, the zero-debiased running averages, FRN and the EvoNorms, which Flax
lacks, are written here. Conventions (momentum as a decay, biased variance) follow Flax;
see configs/default.py. Weight standardization, which acts on the conv
kernels rather than the activations, is in bn_study/models/layers.py; the
layers Flax lacks are in normalizers.py.
"""

import dataclasses
import math
from typing import Any, Callable, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bn_study import errors
from bn_study.models import normalizers
from bn_study.models.normalizers import (
    BatchRenorm, EvoNormB0, EvoNormS0, FRN, GhostBatchNorm, StepNoise)

PLACEMENTS = ('input', 'pre_act', 'post_act')
# global: statistics over the whole global batch (what jit over a mesh gives).
# per_device: each device's shard by its own statistics, as pmap without
#   axis_name did: exactly ghost batches of batch_size / num_devices.
STATS_SCOPES = ('global', 'per_device')

# norm(x, mask): mask (N,) marks the real examples of a padded batch; only
# batch-statistics norms use it.
Norm = Callable[[jax.Array, Optional[jax.Array]], jax.Array]


def validate(model_config, batch_sizes: Optional[Dict[str, int]] = None):
  """The normalizer's fields; `batch_sizes` ({field: size}) are the batches
  it will normalize in train mode, which a ghost batch norm must split."""
  errors.check_choice('model.norm', model_config.norm, NORMS)
  errors.check_choice('model.placement', model_config.placement, PLACEMENTS)
  errors.check_choice('model.stats_scope', model_config.stats_scope,
                      STATS_SCOPES)
  if (model_config.stats_scope == 'per_device'
      and model_config.norm in BATCH_NORMS
      and 'stats_scope' not in REGISTRY[model_config.norm].fields):
    scoped = ' or '.join(n for n, spec in REGISTRY.items()
                         if 'stats_scope' in spec.fields)
    raise errors.UserError(
        f'model.stats_scope=per_device is for model.norm={scoped}, not '
        f'{model_config.norm!r}; for ghost_batch choose a virtual_batch_size '
        'that divides the per-device batch instead.')
  # A debiased average divides by 1 - momentum^t: momentum 1 never moves.
  errors.check_number('model.bn_momentum', model_config.bn_momentum, 0, 1,
                      high_open=model_config.zero_debias)
  errors.check_number('model.bn_epsilon', model_config.bn_epsilon, 0,
                      low_open=True)
  for field in ('use_scale', 'use_bias'):
    if not isinstance(model_config[field], bool):
      raise errors.UserError(
          f'model.{field}={model_config[field]!r} must be True or False.')
  if model_config.norm == 'ghost_batch':
    errors.check_positive_int('model.virtual_batch_size',
                              model_config.virtual_batch_size)
    for field, size in (batch_sizes or {}).items():
      normalizers.check_ghost_batch(model_config.virtual_batch_size, field,
                                    size)
  if 'num_groups' in REGISTRY[model_config.norm].fields:
    errors.check_positive_int('model.num_groups', model_config.num_groups)
  if not isinstance(model_config.zero_debias, bool):
    raise errors.UserError(
        f'model.zero_debias={model_config.zero_debias!r} must be True or '
        'False.')
  if model_config.zero_debias and model_config.norm not in DEBIASED_NORMS:
    raise errors.UserError(
        f'model.zero_debias=True debiases running averages, and '
        f'model.norm={model_config.norm!r} keeps none; use it with one of '
        f'{list(DEBIASED_NORMS)}.')
  if (model_config.norm in NORM_ACTS
      and model_config.placement != 'pre_act'):
    raise errors.UserError(
        f'model.norm={model_config.norm!r} replaces a norm and the activation '
        f'after it, so it goes only at model.placement=pre_act, not '
        f'{model_config.placement!r}; add --config.model.placement=pre_act.')
  if model_config.norm in NORM_ACTS and model_config.activation != 'relu':
    raise errors.UserError(
        f'model.norm={model_config.norm!r} brings its own nonlinearity in '
        f'place of a ReLU, so model.activation must be \'relu\', not '
        f'{model_config.activation!r}.')
  if model_config.norm == 'noisy_batch':
    errors.check_number('model.noise_shift', model_config.noise_shift, 0)
    errors.check_number('model.noise_scale', model_config.noise_scale, 1)
  if model_config.norm == 'batch_renorm':
    cfg = model_config
    errors.check_number('model.renorm_momentum', cfg.renorm_momentum, 0, 1,
                        high_open=cfg.zero_debias)
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



@dataclasses.dataclass(frozen=True)
class Site:
  """Where make_norm builds a norm: what every builder reads."""
  cfg: Any  # The model block, validated.
  train: bool
  act: bool  # The activation follows (a norm-act applies its own).
  common: dict  # epsilon, use_scale, use_bias, scale_init, name.
  total_steps: int
  num_devices: int

  @property
  def running(self):
    return dict(momentum=self.cfg.bn_momentum,
                zero_debias=self.cfg.zero_debias)


def _batch(site):
  cfg = site.cfg
  if cfg.stats_scope == 'per_device' or cfg.zero_debias:
    # The batch is split over the mesh in contiguous blocks, so the ghost
    # groups are exactly the devices' shards; one group is plain BN.
    groups = site.num_devices if cfg.stats_scope == 'per_device' else 1
    def batch_groups(x, mask=None):
      return GhostBatchNorm(x.shape[0] // groups, not site.train,
                            **site.running, **site.common)(x, mask)
    return batch_groups
  def batch_norm(x, mask=None):
    # Flax reduces in float32 (force_float32_reductions); dtype sets the
    # output's, which would otherwise be promoted to the params' float32.
    return nn.BatchNorm(use_running_average=not site.train,
                        momentum=cfg.bn_momentum, dtype=x.dtype, **site.common)(
                            x, mask=(None if mask is None else
                                     jnp.broadcast_to(normalizers.per_example(mask, x),
                                                      x.shape)))
  return batch_norm


def _noisy_batch(site):
  batch_norm = _batch(site)
  if not site.train:
    return batch_norm
  noise = StepNoise(site.cfg.noise_shift, site.cfg.noise_scale,
                    name=site.common['name'] + '_noise')
  def noisy_batch_norm(x, mask=None):
    return noise(batch_norm(x, mask))
  return noisy_batch_norm


def _ghost_batch(site):
  return GhostBatchNorm(site.cfg.virtual_batch_size, not site.train,
                        **site.running, **site.common)


def _batch_renorm(site):
  cfg, steps = site.cfg, site.total_steps
  return BatchRenorm(
      not site.train, momentum=cfg.renorm_momentum,
      zero_debias=cfg.zero_debias, r_max=cfg.renorm_r_max,
      d_max=cfg.renorm_d_max, warmup_steps=round(cfg.renorm_warmup * steps),
      r_max_steps=round(cfg.renorm_r_max_at * steps),
      d_max_steps=round(cfg.renorm_d_max_at * steps), **site.common)


def _groups(site, x):
  # Wu & He fix G for every layer; a layer whose channels G does not divide
  # (the raw image's 3) gets the largest G' dividing both.
  return math.gcd(site.cfg.num_groups, x.shape[-1])


def _group(site):
  def group_norm(x, mask=None):
    del mask  # Per-example statistics: padding cannot leak in.
    return nn.GroupNorm(num_groups=_groups(site, x), dtype=x.dtype,
                        **site.common)(x)
  return group_norm


def _layer(site):
  def layer_norm(x, mask=None):
    del mask
    return nn.LayerNorm(reduction_axes=tuple(range(1, x.ndim)),
                        feature_axes=-1, dtype=x.dtype, **site.common)(x)
  return layer_norm


def _instance(site):
  def instance_norm(x, mask=None):
    del mask
    return nn.InstanceNorm(dtype=x.dtype, **site.common)(x)
  return instance_norm


def _evonorm_s0(site):
  def evonorm_s0(x, mask=None):
    return EvoNormS0(site.act, _groups(site, x), **site.common)(x, mask)
  return evonorm_s0


@dataclasses.dataclass(frozen=True)
class Normalizer:
  """One `model.norm`: how to build it and what the rest of the project
  must know about it (docs/normalizers.md has a row for each)."""
  build: Optional[Callable[[Site], Norm]]  # None: no norm.
  paper: str
  fields: Tuple[str, ...] = ()  # The model.* fields it reads beyond eps etc.
  running_stats: bool = False  # Keeps running averages in batch_stats.
  norm_act: bool = False  # Replaces the activation after it.
  debiasable: bool = False  # Takes model.zero_debias.


_RUNNING = ('bn_momentum', 'zero_debias')
REGISTRY: Dict[str, Normalizer] = {
    'none': Normalizer(None, ''),
    'batch': Normalizer(_batch, 'Ioffe & Szegedy 2015',
                        _RUNNING + ('stats_scope',), running_stats=True,
                        debiasable=True),
    'ghost_batch': Normalizer(_ghost_batch, 'Hoffer et al. 2017',
                              _RUNNING + ('virtual_batch_size',),
                              running_stats=True, debiasable=True),
    'batch_renorm': Normalizer(
        _batch_renorm, 'Ioffe 2017',
        ('renorm_momentum', 'zero_debias', 'renorm_r_max', 'renorm_d_max',
         'renorm_warmup', 'renorm_r_max_at', 'renorm_d_max_at'),
        running_stats=True, debiasable=True),
    'noisy_batch': Normalizer(
        _noisy_batch, 'Santurkar et al. 2018',
        _RUNNING + ('stats_scope', 'noise_shift', 'noise_scale'),
        running_stats=True, debiasable=True),
    'group': Normalizer(_group, 'Wu & He 2018', ('num_groups',)),
    'layer': Normalizer(_layer, 'Ba et al. 2016'),
    'instance': Normalizer(_instance, 'Ulyanov et al. 2016'),
    'frn': Normalizer(lambda site: FRN(site.act, **site.common),
                      'Singh & Krishnan 2020', norm_act=True),
    'evonorm_b0': Normalizer(
        lambda site: EvoNormB0(site.act, not site.train, **site.running,
                               **site.common),
        'Liu et al. 2020', _RUNNING, running_stats=True, norm_act=True,
        debiasable=True),
    'evonorm_s0': Normalizer(_evonorm_s0, 'Liu et al. 2020', ('num_groups',),
                             norm_act=True),
}


def make_norm(model_config, *, train: bool, name: str, total_steps: int = 0,
              num_devices: int = 1, zero_scale: bool = False,
              act: bool = False) -> Optional[Norm]:
  """The norm called `name`, or None for `norm=none`.

  Statistics are reduced in float32 whatever the input's dtype; the output
  has the input's (the compute) dtype. `zero_scale` starts the scale (gamma)
  at 0, e.g. the last norm of a residual branch (Goyal et al. 2017). `act`
  says that the activation follows: a normalization-activation layer
  (NORM_ACTS) then applies its own nonlinearity in place of it, and the
  caller applies none; the other norms ignore it.

  Call it inside a compact method so the layer binds to its parent. In
  training the batch norms normalize by batch statistics and update their
  running averages in `batch_stats`; in eval they use the averages and change
  nothing. `total_steps` (the run's length) scales the renorm schedule;
  `num_devices` (the mesh's size) sizes the groups of stats_scope=per_device.
  """
  cfg = model_config  # Validated once, before any work (models.validate).
  normalizer = REGISTRY[cfg.norm]
  if normalizer.build is None:
    return None
  common = dict(epsilon=cfg.bn_epsilon, use_scale=cfg.use_scale,
                use_bias=cfg.use_bias, name=name,
                scale_init=(nn.initializers.zeros if zero_scale
                            else nn.initializers.ones))
  layer = normalizer.build(Site(cfg, train, act, common, total_steps,
                                num_devices))
  return lambda x, mask=None: layer(x, mask)


NORMS = tuple(REGISTRY)
# Normalizers whose training output depends on the other examples of the
# batch: these keep running averages in `batch_stats`.
BATCH_NORMS = tuple(n for n, spec in REGISTRY.items() if spec.running_stats)
# Normalization-activation layers: each replaces the norm and the activation
# after it (FRN's TLU, the EvoNorms' nonlinear terms), so they go only where
# a norm feeds the activation (placement=pre_act). Where a family's norm is
# not followed by one (the end of a ResNet v1 branch), FRN runs without its
# TLU and the EvoNorms, as their paper does, are the affine part alone.
NORM_ACTS = tuple(n for n, spec in REGISTRY.items() if spec.norm_act)
# zero_debias: the running averages these keep, bias-corrected as Adam's.
DEBIASED_NORMS = tuple(n for n, spec in REGISTRY.items() if spec.debiasable)
