"""The seed CNN: convs, then dense layers, with norms where `placement` says."""

from typing import Any, Dict, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

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


CONV_IMPLS = ('auto', 'xla', 'im2col')


def _patches(x, kh: int, kw: int, strides: Tuple[int, int]):
  """(N, Ho, Wo, kh * kw * C): each output position's receptive field, taps
  in the order of an HWIO kernel reshaped to (kh * kw * C, F)."""
  (sh, sw) = strides
  ho = (x.shape[1] - kh) // sh + 1
  wo = (x.shape[2] - kw) // sw + 1
  return jnp.concatenate(
      [x[:, i:i + (ho - 1) * sh + 1:sh, j:j + (wo - 1) * sw + 1:sw, :]
       for i in range(kh) for j in range(kw)], axis=-1)


@jax.custom_jvp
def _patches_matmul(patches, kernel):
  """patches (..., K) @ kernel (K, F), its kernel gradient spelled for
  XLA:CPU (see the JVP below)."""
  return patches @ kernel


@_patches_matmul.defjvp
def _patches_matmul_jvp(primals, tangents):
  patches, kernel = primals
  d_patches, d_kernel = tangents
  rows = patches.reshape(-1, patches.shape[-1])
  # The kernel's term, written so that its transpose, the kernel gradient,
  # comes out as (g^T rows)^T: a (F, K) matmul over every output position
  # (N * Ho * Wo, hundreds of thousands), then a small transpose. XLA's own
  # (K, F) form of it runs slower in Eigen on CPU (docs/performance.md);
  # the barrier keeps XLA from folding the transpose back into the dot.
  kernel_term = (jax.lax.optimization_barrier(d_kernel.T) @ rows.T).T
  return (patches @ kernel,
          d_patches @ kernel + kernel_term.reshape(*patches.shape[:-1], -1))


class Im2colConv(nn.Module):
  """nn.Conv computed as one matmul over the input's patches (im2col).

  On CPU, XLA's convolutions run far below its matmuls, the kernel gradient
  worst (docs/performance.md); as a matmul, forward pass and both gradients
  (JAX's derivatives of slicing, `_patches_matmul`'s of the dot) are matmuls
  and copies. The same sums in another order. Parameters are nn.Conv's (`kernel`
  (kh, kw, C, F), `bias`), initialized the same way, so checkpoints and
  initial values match.
  """
  features: int
  kernel_size: Tuple[int, int]
  strides: Tuple[int, int]
  padding: str
  use_bias: bool
  kernel_init: Any
  bias_init: Any

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    kernel = self.param('kernel', self.kernel_init,
                        (kh, kw, x.shape[-1], self.features))
    if self.padding == 'SAME':
      pads = jax.lax.padtype_to_pads(x.shape[1:3], self.kernel_size,
                                     self.strides, 'SAME')
      x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    patches = _patches(x, kh, kw, tuple(self.strides))
    y = _patches_matmul(patches, kernel.reshape(-1, self.features))
    if self.use_bias:
      y = y + self.param('bias', self.bias_init, (self.features,))
    return y


def conv_impl(model_config) -> str:
  """'xla' or 'im2col' for this config on this backend."""
  if model_config.conv_impl != 'auto':
    return model_config.conv_impl
  return 'im2col' if jax.default_backend() == 'cpu' else 'xla'


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

    conv = Im2colConv if conv_impl(cfg) == 'im2col' else nn.Conv
    kernel_init = _kernel_init(cfg)
    filters, strides, dense = stacks(cfg)
    for i, (features, stride) in enumerate(zip(filters, strides)):
      name = f'conv{i + 1}'
      x = layer(x, name, lambda use_bias, name=name, f=features, s=stride: conv(
          features=f, kernel_size=(cfg.kernel_size, cfg.kernel_size),
          strides=(s, s), padding=cfg.padding, use_bias=use_bias,
          kernel_init=kernel_init, bias_init=_BIAS_INIT, name=name))
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
  errors.check_choice('model.conv_impl', model_config.conv_impl, CONV_IMPLS)
  norms.validate(model_config)


def create_model(model_config, num_classes: int, total_steps: int = 0,
                 num_devices: int = 1) -> nn.Module:
  validate(model_config)
  return SeedCNN(model_config=model_config, num_classes=num_classes,
                 total_steps=total_steps, num_devices=num_devices)


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
