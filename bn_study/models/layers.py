"""What every model family's layers share: convs and dense layers in the
compute dtype, norms from the one factory (bn_study/norms.py), and the
activations the instruments read.

Naming, which the instruments and weight decay rely on: parameters are flat,
one top-level module per weight layer in forward order, and a layer's norm is
`<layer>_norm`; the input of each nonlinearity is sown as `<layer>_preact`,
each layer's output as `<layer>_out` (models.layer_shapes).
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from bn_study import norms

ACTIVATIONS = {'relu': nn.relu, 'sigmoid': nn.sigmoid}
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

  def input(self, x):
    return x.astype(self.dtype)

  def conv(self, x, name: str, features: int, *, kernel: int = 3,
           stride: int = 1, use_bias: bool = None):
    """A SAME-padded conv; by default biased only where no norm follows
    (a norm's mean subtraction cancels a bias)."""
    if use_bias is None:
      use_bias = not self.normed
    return self.module.conv(
        features=features, kernel_size=(kernel, kernel),
        strides=(stride, stride), padding='SAME', use_bias=use_bias,
        kernel_init=self.kernel_init, bias_init=BIAS_INIT, dtype=self.dtype,
        name=name)(x)

  def norm(self, x, layer: str, zero_scale: bool = False):
    """The config's normalizer called `<layer>_norm`, or x for norm=none."""
    module = self.module
    norm = norms.make_norm(self.cfg, train=self.train, name=f'{layer}_norm',
                           total_steps=module.total_steps,
                           num_devices=module.num_devices,
                           zero_scale=zero_scale)
    return x if norm is None else norm(x, self.mask)

  def act(self, x, layer: str):
    """The nonlinearity; its input sown for the act/ instrument."""
    self.module.sow('intermediates', f'{layer}_preact', x)
    return ACTIVATIONS[self.cfg.activation](x)

  def out(self, x, layer: str):
    self.module.sow('intermediates', f'{layer}_out', x)
    return x

  def logits(self, x, num_classes: int):
    """Global average pooling, then the classifier; logits in float32 so
    the loss is computed in float32."""
    x = self.out(x.mean(axis=(1, 2)), 'pool')
    x = nn.Dense(num_classes, dtype=self.dtype, name='logits')(x)
    return self.out(x.astype(jnp.float32), 'logits')


class Family(nn.Module):
  """The fields every family's module takes (models.create_model sets them)."""
  model_config: Any  # The config's `model` block.
  num_classes: int
  total_steps: int = 0  # The run's length, for schedules inside norms.
  num_devices: int = 1  # The mesh's size, for stats_scope=per_device.
  conv: Any = nn.Conv  # Any module with nn.Conv's fields and parameters.
