"""Every normalizer the model can use, behind one factory.

The model asks `make_norm` for a norm layer at each place its placement puts
one and never learns which normalizer it got. Conventions (momentum as a
decay, epsilon) follow Flax; see configs/default.py.
"""

from typing import Callable, Optional

import flax.linen as nn
import jax

from bn_study import errors

NORMS = ('none', 'batch')
PLACEMENTS = ('input', 'pre_act')

Norm = Callable[[jax.Array], jax.Array]


def validate(model_config):
  errors.check_choice('model.norm', model_config.norm, NORMS)
  errors.check_choice('model.placement', model_config.placement, PLACEMENTS)


def make_norm(model_config, *, train: bool, name: str) -> Optional[Norm]:
  """The norm layer called `name`, or None for `norm=none`.

  Must be called inside a compact method so the layer binds to its parent.
  In training a batch norm normalizes by the batch's statistics and updates
  the running averages in `batch_stats`; in eval it uses the averages and
  changes nothing.
  """
  validate(model_config)
  if model_config.norm == 'none':
    return None
  return nn.BatchNorm(
      use_running_average=not train,
      momentum=model_config.bn_momentum,
      epsilon=model_config.bn_epsilon,
      name=name)
