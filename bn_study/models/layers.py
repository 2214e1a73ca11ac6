"""What every model family's layers share: convs and dense layers in the
compute dtype, weight standardization of the convs, norms from the one
factory (norms.py), and the activations the instruments read.

Naming, which the instruments and weight decay rely on: parameters are flat,
one top-level module per weight layer in forward order; what belongs to a
layer is named `<layer>_<what>`: its norm `<layer>_norm`, the normalizer-free
scalars (bn_study/models/norm_free.py) `<layer>_<scalar>`. The input of each
nonlinearity is sown as `<layer>_preact`, each layer's output as
`<layer>_out` (models.layer_shapes).
"""

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bn_study.models import norms
# gelu: the exact (erf) form, torch.nn.GELU's default, as airbench uses.
ACTIVATIONS = {'relu': nn.relu, 'sigmoid': nn.sigmoid,
               'gelu': functools.partial(nn.gelu, approximate=False)}
KERNEL_INITS = {
    # tf.layers' default, the seed's.
    'glorot_uniform': lambda cfg: nn.initializers.glorot_uniform(),
    # N(0, stddev^2): the BN paper's "small random Gaussian".
    'normal': lambda cfg: nn.initializers.normal(cfg.kernel_init_stddev),
    # He et al. 2015, N(0, 2 / fan_out) as fb.resnet.torch and torchvision
    # initialize ResNets and VGGs.
    'he_normal': lambda cfg: nn.initializers.variance_scaling(
        2.0, 'fan_out', 'normal'),
}
DTYPES = ('float32', 'bfloat16')
BIAS_INIT = nn.initializers.zeros  # tf.layers' and torch's conv bias start.
# ReLU's gain for NF-ResNets (Brock et al. 2021a): for z ~ N(0, 1),
# Var(relu(z)) = (1 - 1/pi) / 2, so gamma * relu keeps unit variance.
RELU_GAMMA = math.sqrt(2 / (1 - 1 / math.pi))
WS_EPSILON = 1e-5  # Qiao et al.'s, inside the square root.
SCALED_WS_EPSILON = 1e-4  # NF-ResNets': a floor on var * fan_in.


def standardize(kernel, gain=None):
  """A conv kernel (HWIO) standardized per output channel over (H, W, I).

  Weight Standardization (Qiao et al. 2019): (W - mean) / sqrt(var + eps).
  With `gain` (per output channel), NF-ResNets' Scaled WS (Brock et al.
  2021a): gain * (W - mean) / (std * sqrt(fan_in)), so that a conv of
  unit-variance inputs has unit-variance outputs. (The paper folds the ReLU's
  gain into W too; here it multiplies the ReLU, the same function.)
  """
  axes = tuple(range(kernel.ndim - 1))
  kernel = kernel.astype(jnp.float32)
  centered = kernel - kernel.mean(axes, keepdims=True)
  var = kernel.var(axes, keepdims=True)
  if gain is None:
    return centered * jax.lax.rsqrt(var + WS_EPSILON)
  fan_in = math.prod(kernel.shape[:-1])
  return centered * jax.lax.rsqrt(
      jnp.maximum(var * fan_in, SCALED_WS_EPSILON)) * gain


@functools.cache  # One class per (conv, scaled), not one per model call.
def standardized(conv: type, scaled: bool) -> type:
  """`conv` (any module with nn.Conv's fields that reads its kernel through
  self.param) whose kernel is standardized each time it is read: the stored
  parameter stays the raw W, the gradient flows through the
  standardization. `scaled` adds NF's per-output-channel `gain` (from 1)."""

  class Standardized(conv):

    def param(self, name, init_fn, *args, **kwargs):
      value = super().param(name, init_fn, *args, **kwargs)
      if name != 'kernel':
        return value
      gain = (super().param('gain', nn.initializers.ones, (value.shape[-1],))
              if scaled else None)
      return standardize(value, gain).astype(value.dtype)

  Standardized.__name__ = f'Standardized{conv.__name__}'
  return Standardized


class Layers:
  """Builds layers inside `module`'s compact __call__ (they bind to it)."""

  def __init__(self, module: 'Family', *, train: bool, mask=None):
    self.module = module
    self.cfg = module.model_config
    self.train = train
    self.mask = mask  # (N,) real examples of a padded eval batch.
    self.dtype = jnp.dtype(self.cfg.dtype)
    self.kernel_init = KERNEL_INITS[self.cfg.kernel_init](self.cfg)
    self.normed = self.cfg.norm != 'none'
    self.nf = self.cfg.norm_free == 'nf'
    self.conv_module = module.conv
    if self.cfg.weight_standardization or self.nf:
      self.conv_module = standardized(module.conv, scaled=self.nf)

  def input(self, x):
    return x.astype(self.dtype)

  def conv(self, x, name: str, features: int, *, kernel: int = 3,
           stride: int = 1, use_bias: bool = None, kernel_init=None):
    """A SAME-padded conv; by default biased only where no norm follows
    (a norm's mean subtraction cancels a bias; FRN and the EvoNorms subtract
    no mean, but their papers' networks have no bias there either)."""
    if use_bias is None:  # Fixup replaces conv biases by scalar ones.
      use_bias = not self.normed and self.cfg.norm_free != 'fixup'
    return self.conv_module(
        features=features, kernel_size=(kernel, kernel),
        strides=(stride, stride), padding='SAME', use_bias=use_bias,
        kernel_init=kernel_init or self.kernel_init, bias_init=BIAS_INIT,
        dtype=self.dtype, name=name)(x)

  def _norm(self, x, layer: str, zero_scale: bool, act: bool):
    module = self.module
    norm = norms.make_norm(self.cfg, train=self.train, name=f'{layer}_norm',
                           total_steps=module.total_steps,
                           num_devices=module.num_devices,
                           zero_scale=zero_scale, act=act)
    return x if norm is None else norm(x, self.mask)

  def norm(self, x, layer: str, zero_scale: bool = False):
    """The config's normalizer called `<layer>_norm` where no activation
    follows it, or x for norm=none."""
    return self._norm(x, layer, zero_scale, act=False)

  def norm_act(self, x, layer: str):
    """The norm, then the activation; a normalization-activation layer
    (norms.NORM_ACTS: FRN+TLU, EvoNorm) is both, and the act/ instrument
    then reads its input."""
    if self.cfg.norm in norms.NORM_ACTS:
      self.module.sow('intermediates', f'{layer}_preact', x)
      return self._norm(x, layer, zero_scale=False, act=True)
    return self.act(self._norm(x, layer, zero_scale=False, act=False), layer)

  def act(self, x, layer: str):
    """The nonlinearity; its input sown for the act/ instrument. NF-ResNets
    scale the ReLU by its gain, so it keeps unit variance."""
    self.module.sow('intermediates', f'{layer}_preact', x)
    y = ACTIVATIONS[self.cfg.activation](x)
    return y * RELU_GAMMA if self.nf else y

  def out(self, x, layer: str):
    self.module.sow('intermediates', f'{layer}_out', x)
    return x

  def logits(self, x, num_classes: int, zero_init: bool = False):
    """Global average pooling, then the classifier; logits in float32 so
    the loss is computed in float32. `zero_init`: Fixup's zero classifier."""
    x = self.out(x.mean(axis=(1, 2)), 'pool')
    x = nn.Dense(num_classes, dtype=self.dtype, name='logits',
                 **({'kernel_init': nn.initializers.zeros} if zero_init
                    else {}))(x)
    return self.out(x.astype(jnp.float32), 'logits')


class Family(nn.Module):
  """The fields every family's module takes (models.create_model sets them)."""
  model_config: Any  # The config's `model` block.
  num_classes: int
  total_steps: int = 0  # The run's length, for schedules inside norms.
  num_devices: int = 1  # The mesh's size, for stats_scope=per_device.
  conv: Any = nn.Conv  # Any module with nn.Conv's fields and parameters.
