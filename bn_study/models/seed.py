"""The seed CNN (model.kind=cnn) and the BN paper's MLP (model.kind=mlp):
convs, then dense layers, with norms where `placement` says."""

import flax.linen as nn
import jax.numpy as jnp

from bn_study import errors
from bn_study.models import norms
from bn_study.models import layers

PLACEMENTS = norms.PLACEMENTS  # input, pre_act, post_act: all three.


def stacks(cfg):
  """((conv filters), (conv strides), (dense sizes)) of the config's model."""
  if cfg.kind == 'mlp':
    return (), (), tuple(cfg.hidden)
  return tuple(cfg.filters), tuple(cfg.strides), tuple(cfg.dense)


class SeedCNN(layers.Family):
  """Convs -> flatten -> dense layers -> logits, each followed by
  `model.activation` (ReLU in the seed). With model.kind=mlp there are no
  convs and the dense layers are `model.hidden` (the BN paper's MLP).

  Each layer's output (after its ReLU) is sown into flax's `intermediates`
  collection as `<layer>_out` (flax forbids reusing the layer's own name), and
  the input to its ReLU as `<layer>_preact`, for shape tables and instruments;
  they cost nothing unless the caller asks for that collection.
  """

  @nn.compact
  def __call__(self, x, *, train: bool, mask=None):
    """Logits for images x (N, H, W, C).

    mask (N,), optional, marks the real examples of a padded batch, so that
    padding never enters batch statistics.
    """
    cfg = self.model_config
    normed = cfg.norm != 'none'
    norm_at_input = normed and cfg.placement == 'input'
    norm_pre_act = normed and cfg.placement == 'pre_act'
    norm_post_act = normed and cfg.placement == 'post_act'

    norm_act = norm_pre_act and cfg.norm in norms.NORM_ACTS

    def norm(x, layer, act=False):
      layer_norm = norms.make_norm(cfg, train=train, name=f'{layer}_norm',
                                   total_steps=self.total_steps,
                                   num_devices=self.num_devices, act=act)
      return x if layer_norm is None else layer_norm(x, mask)

    def layer(x, name, make_layer, last=False):
      if norm_at_input:
        x = norm(x, name)
      # A norm right after the layer subtracts the mean: a bias is dead weight
      # (FRN and the EvoNorms subtract none; their papers drop it too).
      x = make_layer(use_bias=not norm_pre_act or last)(x)
      if not last and norm_act:  # FRN+TLU, an EvoNorm: norm and activation.
        self.sow('intermediates', f'{name}_preact', x)
        x = norm(x, name, act=True)
      elif not last:
        if norm_pre_act:
          x = norm(x, name)
        self.sow('intermediates', f'{name}_preact', x)  # The act/ instrument.
        x = layers.ACTIVATIONS[cfg.activation](x)
        if norm_post_act:
          x = norm(x, name)
      self.sow('intermediates', f'{name}_out', x)
      return x

    kernel_init = layers.KERNEL_INITS[cfg.kernel_init](cfg)
    conv = (layers.standardized(self.conv, scaled=False)
            if cfg.weight_standardization else self.conv)
    dtype = jnp.dtype(cfg.dtype)
    x = x.astype(dtype)
    filters, strides, dense = stacks(cfg)
    for i, (features, stride) in enumerate(zip(filters, strides)):
      name = f'conv{i + 1}'
      x = layer(x, name, lambda use_bias, name=name, f=features, s=stride:
                conv(features=f,
                          kernel_size=(cfg.kernel_size, cfg.kernel_size),
                          strides=(s, s), padding=cfg.padding,
                          use_bias=use_bias, kernel_init=kernel_init,
                          bias_init=layers.BIAS_INIT, dtype=dtype, name=name))
    x = x.reshape((x.shape[0], -1))
    self.sow('intermediates', 'flatten_out', x)
    for i, features in enumerate(dense):
      name = f'dense{i + 1}'
      x = layer(x, name, lambda use_bias, name=name, f=features: nn.Dense(
          f, use_bias=use_bias, kernel_init=kernel_init,
          bias_init=layers.BIAS_INIT, dtype=dtype, name=name))
    logits = layer(x, 'logits', lambda use_bias: nn.Dense(
        self.num_classes, use_bias=use_bias, kernel_init=kernel_init,
        bias_init=layers.BIAS_INIT, dtype=dtype, name='logits'), last=True)
    return logits.astype(jnp.float32)  # The loss in float32.


def validate(model_config):
  """The seed's own fields."""
  for field in ('filters', 'strides', 'dense', 'hidden'):
    value = model_config[field]
    if (not isinstance(value, (tuple, list)) or
        not all(isinstance(v, int) and v > 0 for v in value)):
      raise errors.UserError(
          f'model.{field}={value!r} must be a tuple of positive integers, '
          'e.g. --config.model.filters="(30,50,60)".')
  if len(model_config.filters) != len(model_config.strides):
    raise errors.UserError(
        f'model.filters={tuple(model_config.filters)} and model.strides='
        f'{tuple(model_config.strides)} must have the same length (one stride '
        'per conv layer).')
  errors.check_positive_int('model.kernel_size', model_config.kernel_size)
  errors.check_choice('model.padding', model_config.padding, ('VALID', 'SAME'))
