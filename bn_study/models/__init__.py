"""The model families, behind one registry: `model.kind` picks one.

A family is a module here (seed.py, resnet.py, vgg.py, airbench.py) whose
network takes its norms from norms.py's factory through layers.Layers, so
every normalizer works in every family. Adding a family: its module, an entry in
FAMILIES, and its tests (tests/models/models_test.py).
"""

import dataclasses
from typing import Callable, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bn_study.runtime import cpu
from bn_study import errors
from bn_study.models import norms
from bn_study.models import airbench
from bn_study.models import layers
from bn_study.models import norm_free
from bn_study.models import resnet
from bn_study.models import seed
from bn_study.models import vgg


@dataclasses.dataclass(frozen=True)
class Family:
  module: type  # A layers.Family subclass.
  placements: Tuple[str, ...]  # The model.placement values it implements.
  default_depth: int = 0  # model.depth when None; 0: the family has none.
  validate: Callable = lambda cfg: None  # Its own fields.
  # {param path: epochs it trains before it is frozen (0: never trains)}.
  frozen: Callable = lambda cfg: {}
  # Params fit to the training data before the first step: (how many of the
  # split's first images, images -> {param path: value}), or None.
  data_init: Optional[Tuple[int, Callable]] = None


FAMILIES: Dict[str, Family] = {
    'cnn': Family(seed.SeedCNN, seed.PLACEMENTS, validate=seed.validate),
    'mlp': Family(seed.SeedCNN, seed.PLACEMENTS, validate=seed.validate),
    'resnet_cifar': Family(resnet.ResNetCIFAR, ('pre_act',), 20,
                           resnet.validate_cifar),
    'preact_resnet': Family(resnet.PreActResNet, ('pre_act',), 18,
                            resnet.validate_preact),
    'vgg': Family(vgg.VGG, vgg.PLACEMENTS, 16, vgg.validate),
    'airbench': Family(airbench.AirBench, airbench.PLACEMENTS,
                       validate=airbench.validate, frozen=airbench.frozen,
                       data_init=(airbench.WHITEN_IMAGES,
                                  airbench.data_init)),
}
KINDS = tuple(FAMILIES)


def frozen(model_config) -> Dict[Tuple[str, ...], float]:
  """{param path: epochs it trains} for the params the family freezes
  (the optimizer zeroes their updates from then on)."""
  return FAMILIES[model_config.kind].frozen(model_config)


def data_init(model_config) -> Optional[Tuple[int, Callable]]:
  """(n, fit): the family's params fit to the split's first n training
  images by fit(images) -> {param path: value}, or None."""
  return FAMILIES[model_config.kind].data_init


def variables(params, batch_stats):
  """What `apply` takes; a model without batch statistics has no such
  collection (an empty one would be an error)."""
  if batch_stats:
    return {'params': params, 'batch_stats': batch_stats}
  return {'params': params}


def noise_rngs(seed: int, step) -> Dict[str, jax.Array]:
  """The `rngs` of a training step's `apply`: the 'noise' stream that
  norms.StepNoise draws from, a function of the run's seed and the step
  alone, so a resumed run redraws exactly what it would have drawn."""
  return {'noise': jax.random.fold_in(jax.random.key(seed), step)}


def resolved(model_config):
  """The model block with the family's published depth filled in where
  model.depth is None."""
  family = FAMILIES[model_config.kind]
  if model_config.depth is None and family.default_depth:
    model_config = model_config.copy_and_resolve_references()
    model_config.depth = family.default_depth
  return model_config


def validate(model_config, batch_sizes: Optional[Dict[str, int]] = None):
  """The fields every family reads, the family's own, then the
  normalizer's (norms.validate), for the batches of `batch_sizes`
  ({field: size}) it will normalize in train mode."""
  errors.check_choice('model.kind', model_config.kind, KINDS)
  family = FAMILIES[model_config.kind]
  errors.check_choice('model.activation', model_config.activation,
                      tuple(layers.ACTIVATIONS))
  errors.check_choice('model.kernel_init', model_config.kernel_init,
                      tuple(layers.KERNEL_INITS))
  errors.check_number('model.kernel_init_stddev',
                      model_config.kernel_init_stddev, 0, low_open=True)
  errors.check_choice('model.conv_impl', model_config.conv_impl,
                      cpu.CONV_IMPLS)
  errors.check_choice('model.dtype', model_config.dtype, layers.DTYPES)
  if model_config.width is not None:
    errors.check_positive_int('model.width', model_config.width)
  if not isinstance(model_config.zero_init_residual, bool):
    raise errors.UserError(f'model.zero_init_residual='
                           f'{model_config.zero_init_residual!r} must be '
                           'True or False.')
  if model_config.zero_init_residual and model_config.kind != 'resnet_cifar':
    raise errors.UserError(
        f'model.zero_init_residual=True is for model.kind=resnet_cifar, not '
        f'{model_config.kind!r} (it zeroes the norm that ends each residual '
        'branch).')
  if not isinstance(model_config.weight_standardization, bool):
    raise errors.UserError(
        f'model.weight_standardization={model_config.weight_standardization!r}'
        ' must be True or False.')
  if model_config.weight_standardization and (
      model_config.norm == 'none' or model_config.kind == 'mlp'):
    raise errors.UserError(
        'model.weight_standardization=True gives every conv kernel unit '
        'variance per weight, which only a normalizer after it undoes; '
        f'model.norm={model_config.norm!r} with model.kind='
        f'{model_config.kind!r} has '
        + ('no convs' if model_config.kind == 'mlp' else 'none')
        + '. Choose a model.norm (BiT: group) or leave it False; '
        'model.norm_free=nf brings its own (Scaled WS).')
  norms.validate(model_config, batch_sizes)
  norm_free.validate(model_config)
  if model_config.norm == 'instance' and model_config.kind in ('cnn', 'mlp'):
    raise errors.UserError(
        f'model.norm=instance normalizes each example\'s channel over H and '
        f'W, and model.kind={model_config.kind!r} normalizes dense layers, '
        'which have none (their output would be the bias alone); use it with '
        f'a conv family: {[k for k in KINDS if k not in ("cnn", "mlp")]}.')
  if model_config.placement not in family.placements:
    raise errors.UserError(
        f'model.placement={model_config.placement!r} is not implemented for '
        f'model.kind={model_config.kind!r}; it has {list(family.placements)} '
        '(docs/models.md).')
  family.validate(resolved(model_config))


def create_model(model_config, num_classes: int, total_steps: int = 0,
                 num_devices: int = 1) -> nn.Module:
  """The config's model; `model.conv_impl` picks how its convs are computed
  (bn_study/runtime/cpu.py), the math is the same. The block is validated
  once, before any work (validate)."""
  family = FAMILIES[model_config.kind]
  return family.module(model_config=resolved(model_config),
                       num_classes=num_classes, total_steps=total_steps,
                       num_devices=num_devices,
                       conv=cpu.conv_module(model_config.conv_impl,
                                            dtype=model_config.dtype,
                                            kind=model_config.kind))


def _traced(model: nn.Module, input_shape: Sequence[int]):
  """(weight layers, intermediates) of one eval-mode init, as shapes, in the
  order the model created them: forward order. (Read while tracing: JAX
  returns dicts with sorted keys.) A weight layer is a module with a
  kernel."""
  seen = {}

  def init(x):
    model_vars = model.init(jax.random.key(0), x, train=False, mutable=True)
    seen['params'] = [name for name, p in model_vars['params'].items()
                      if isinstance(p, dict) and 'kernel' in p]
    seen['intermediates'] = [
        (name, value[0].shape)
        for name, value in model_vars.get('intermediates', {}).items()]

  jax.eval_shape(init, jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32))
  return seen['params'], seen['intermediates']


def weight_layers(model: nn.Module, input_shape: Sequence[int]
                  ) -> Tuple[str, ...]:
  """The weight layers (modules with a kernel) in forward order, for the
  per-layer instruments; what belongs to a layer (its norm, norm-free
  scalars) is named `<layer>_<what>`."""
  params, _ = _traced(model, input_shape)
  return tuple(params)


def layer_shapes(model: nn.Module, input_shape: Sequence[int]
                 ) -> Dict[str, Tuple[int, ...]]:
  """Output shape of every layer the model sows (`<layer>_out`), in forward
  order, computed without any FLOPs."""
  _, intermediates = _traced(model, input_shape)
  return {name[:-len('_out')]: tuple(shape) for name, shape in intermediates
          if name.endswith('_out')}


def num_params(model: nn.Module, input_shape: Sequence[int]) -> int:
  """Parameters (weights, biases, norms' scales and shifts; not running
  averages), computed without any FLOPs."""
  x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
  model_vars = jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, train=False), x)
  return sum(p.size for p in jax.tree.leaves(model_vars['params']))


def summary(model: nn.Module, input_shape: Sequence[int]) -> str:
  """Flax's table of every module: inputs, outputs and parameter counts."""
  x = jnp.zeros(tuple(input_shape), jnp.float32)
  return model.tabulate(
      jax.random.key(0), x, train=False,
      console_kwargs={'width': 140, 'force_terminal': False,
                      'color_system': None})
