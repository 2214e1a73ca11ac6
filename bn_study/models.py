"""The seed CNN: convs, then dense layers, with norms where `placement` says."""

from typing import Any, Dict, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bn_study import cpu
from bn_study import errors
from bn_study import norms

# tf.layers' defaults, which the seed used.
_BIAS_INIT = nn.initializers.zeros
KINDS = ('cnn', 'mlp')
ACTIVATIONS = {'relu': nn.relu, 'sigmoid': nn.sigmoid}
KERNEL_INITS = ('glorot_uniform', 'normal')


def _kernel_init(cfg):
  if cfg.kernel_init == 'normal':
    return nn.initializers.normal(cfg.kernel_init_stddev)
  return nn.initializers.glorot_uniform()


def stacks(cfg):
  """((conv filters), (conv strides), (dense sizes)) of the config's model."""
  if cfg.kind == 'mlp':
    return (), (), tuple(cfg.hidden)
  return tuple(cfg.filters), tuple(cfg.strides), tuple(cfg.dense)


class SeedCNN(nn.Module):
  """Convs -> flatten -> dense layers -> logits, each followed by
  `model.activation` (ReLU in the seed). With model.kind=mlp there are no
  convs and the dense layers are `model.hidden` (the BN paper's MLP).

  Each layer's output (after its ReLU) is sown into flax's `intermediates`
  collection as `<layer>_out` (flax forbids reusing the layer's own name), and
  the input to its ReLU as `<layer>_preact`, for shape tables and instruments;
  they cost nothing unless the caller asks for that collection.
  """
  model_config: Any  # The config's `model` block.
  num_classes: int
  total_steps: int = 0  # The run's length, for schedules inside norms.
  num_devices: int = 1  # The mesh's size, for stats_scope=per_device.
  conv: Any = nn.Conv  # Any module with nn.Conv's fields and parameters.

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

    def norm(x, layer):
      layer_norm = norms.make_norm(cfg, train=train, name=f'{layer}_norm',
                                   total_steps=self.total_steps,
                                   num_devices=self.num_devices)
      return x if layer_norm is None else layer_norm(x, mask)

    def layer(x, name, make_layer, last=False):
      if norm_at_input:
        x = norm(x, name)
      # A norm right after the layer subtracts the mean: a bias is dead weight.
      x = make_layer(use_bias=not norm_pre_act or last)(x)
      if not last:
        if norm_pre_act:
          x = norm(x, name)
        self.sow('intermediates', f'{name}_preact', x)  # The act/ instrument.
        x = ACTIVATIONS[cfg.activation](x)
        if norm_post_act:
          x = norm(x, name)
      self.sow('intermediates', f'{name}_out', x)
      return x

    kernel_init = _kernel_init(cfg)
    filters, strides, dense = stacks(cfg)
    for i, (features, stride) in enumerate(zip(filters, strides)):
      name = f'conv{i + 1}'
      x = layer(x, name, lambda use_bias, name=name, f=features, s=stride:
                self.conv(features=f,
                          kernel_size=(cfg.kernel_size, cfg.kernel_size),
                          strides=(s, s), padding=cfg.padding,
                          use_bias=use_bias, kernel_init=kernel_init,
                          bias_init=_BIAS_INIT, name=name))
    x = x.reshape((x.shape[0], -1))
    self.sow('intermediates', 'flatten_out', x)
    for i, features in enumerate(dense):
      name = f'dense{i + 1}'
      x = layer(x, name, lambda use_bias, name=name, f=features: nn.Dense(
          f, use_bias=use_bias, kernel_init=kernel_init, bias_init=_BIAS_INIT,
          name=name))
    return layer(x, 'logits', lambda use_bias: nn.Dense(
        self.num_classes, use_bias=use_bias, kernel_init=kernel_init,
        bias_init=_BIAS_INIT, name='logits'), last=True)


def variables(params, batch_stats):
  """What `apply` takes; a model without batch statistics has no such
  collection (an empty one would be an error)."""
  if batch_stats:
    return {'params': params, 'batch_stats': batch_stats}
  return {'params': params}


def validate(model_config):
  """The architecture's fields, then the normalizer's (norms.validate)."""
  errors.check_choice('model.kind', model_config.kind, KINDS)
  errors.check_choice('model.activation', model_config.activation,
                      tuple(ACTIVATIONS))
  errors.check_choice('model.kernel_init', model_config.kernel_init,
                      KERNEL_INITS)
  errors.check_number('model.kernel_init_stddev',
                      model_config.kernel_init_stddev, 0, low_open=True)
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
  errors.check_choice('model.conv_impl', model_config.conv_impl,
                      cpu.CONV_IMPLS)
  norms.validate(model_config)


def create_model(model_config, num_classes: int, total_steps: int = 0,
                 num_devices: int = 1) -> nn.Module:
  """The config's model; `model.conv_impl` picks how its convs are computed
  (bn_study/cpu.py), the math is the same."""
  validate(model_config)
  return SeedCNN(model_config=model_config, num_classes=num_classes,
                 total_steps=total_steps, num_devices=num_devices,
                 conv=cpu.conv_module(model_config.conv_impl))


def layer_shapes(model: nn.Module, input_shape: Sequence[int]
                 ) -> Dict[str, Tuple[int, ...]]:
  """Output shape of every layer, in order, computed without any FLOPs."""
  x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, train=False), x)
  _, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False, mutable=['intermediates']),
      variables, x)
  filters, _, dense = stacks(model.model_config)
  order = ([f'conv{i + 1}' for i in range(len(filters))] + ['flatten']
           + [f'dense{i + 1}' for i in range(len(dense))] + ['logits'])
  return {name: tuple(state['intermediates'][f'{name}_out'][0].shape)
          for name in order}


def summary(model: nn.Module, input_shape: Sequence[int]) -> str:
  """Flax's table of every module: inputs, outputs and parameter counts."""
  x = jnp.zeros(tuple(input_shape), jnp.float32)
  return model.tabulate(
      jax.random.key(0), x, train=False,
      console_kwargs={'width': 140, 'force_terminal': False,
                      'color_system': None})
