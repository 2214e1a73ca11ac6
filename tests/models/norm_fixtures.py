"""What the normalizer tests share: one norm from the factory as a family
gets it, a model block for it, inputs, and variables with every parameter
and statistic randomized so that each term of each formula matters."""

from typing import Any

import flax.linen as nn
import jax
import numpy as np

from bn_study.models import norms
from configs import default

EPS = 1e-3
MOMENTUM = 0.9
GROUPS = 2
SHAPES = {'dense': (16, 6), 'conv': (8, 5, 5, 4)}


class Wrap(nn.Module):
  """One norm from the factory, at a norm-act place (`act`) or where no
  activation follows."""
  cfg: Any
  train: bool
  act: bool = False
  total_steps: int = 100

  @nn.compact
  def __call__(self, x, mask=None):
    return norms.make_norm(self.cfg, train=self.train, name='norm',
                           total_steps=self.total_steps, act=self.act)(x, mask)


def cfg(norm, **overrides):
  """The model block for `norm`: small groups, ghost batches of 4, the
  tests' momentum and epsilon."""
  block = default.get_config().model
  block.norm, block.placement = norm, 'pre_act'
  block.bn_momentum = block.renorm_momentum = MOMENTUM
  block.bn_epsilon, block.num_groups = EPS, GROUPS
  block.virtual_batch_size = 4
  for key, value in overrides.items():
    block[key] = value
  return block


def inputs(shape, seed=1, loc=0.5, scale=2.0):
  """Normal inputs, each channel with its own spread."""
  rng = np.random.default_rng(seed)
  return (rng.normal(loc, scale, shape)
          * rng.uniform(0.2, 2, shape[-1])).astype(np.float32)


_DRAWS = {'scale': lambda rng, c: rng.uniform(0.5, 1.5, c),
          'bias': lambda rng, c: rng.normal(0, 1, c),
          'tau': lambda rng, c: rng.normal(0, 0.5, c),
          'v': lambda rng, c: rng.uniform(0.2, 1.5, c),
          'learned_eps': lambda rng, c: -0.3,  # |eps_l| is used.
          'mean': lambda rng, c: rng.normal(0, 0.5, c),
          'var': lambda rng, c: rng.uniform(0.5, 2, c),
          'std': lambda rng, c: rng.uniform(0.7, 1.4, c)}


def variables(block, x, act=False, seed=0):
  """Initialized variables of Wrap(block), every parameter and statistic
  drawn at random (a zero-debiased step count is left as it is)."""
  rng = np.random.default_rng(seed)
  v = jax.tree.map(np.array, jax.device_get(
      Wrap(block, train=False, act=act).init(jax.random.key(0), x)))
  c = x.shape[-1]
  for collection in ('params', 'batch_stats'):
    group = v.get(collection, {}).get('norm', {})
    for key in group:
      if key in _DRAWS:
        group[key] = np.asarray(_DRAWS[key](rng, c), np.float32)
  return v


def apply(block, v, x, train_mode, act=False, mask=None, total_steps=100):
  """(output, updated batch_stats) of Wrap(block)."""
  return Wrap(block, train=train_mode, act=act, total_steps=total_steps
              ).apply(v, x, mask, mutable=['batch_stats'])
