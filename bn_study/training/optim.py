"""The optimizer: optax transformations, learning-rate schedules and which
params weight decay applies to."""

import functools

import jax
import numpy as np
import optax
from flax import traverse_util

OPTIMIZERS = ('adam', 'sgd')
LR_SCHEDULES = ('constant', 'cosine', 'piecewise')
WEIGHT_DECAY_STYLES = ('decoupled', 'coupled')


def make_schedule(config, steps_per_epoch: int):
  """step -> learning rate: a linear warmup from 0 over warmup_epochs, then
  constant, cosine (to 0 at the end of the run) or piecewise (multiplied by
  lr_decay_factor at each of lr_boundaries, fractions of the run; the new
  rate applies from the boundary's step on)."""
  total = config.num_epochs * steps_per_epoch
  warmup = int(config.warmup_epochs * steps_per_epoch)
  lr = config.learning_rate
  if config.lr_schedule == 'cosine':
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=lr, warmup_steps=warmup,
        decay_steps=max(total, warmup + 1))
  if config.lr_schedule == 'piecewise':
    scales = {}
    for fraction in config.lr_boundaries:
      step = round(fraction * total)
      scales[step] = scales.get(step, 1.0) * config.lr_decay_factor
    main = optax.piecewise_constant_schedule(lr, scales)
  else:
    main = optax.constant_schedule(lr)
  if not warmup:
    return main
  # join_schedules counts the second schedule's steps from the join: shift
  # them back so boundaries stay fractions of the whole run.
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup), lambda s: main(s + warmup)],
      [warmup])


def make_optimizer(config, steps_per_epoch: int):
  """The optax transformation and its learning-rate schedule (step -> lr).

  Weight decay, weight_decay_style:
  - coupled: L2 as the ResNet and VGG papers used it, wd * w added to the
    gradient before momentum (or Adam's moments);
  - decoupled: lr * wd * w subtracted from the weights beside the update
    (AdamW, and SGDW for sgd; Loshchilov & Hutter 2019).
  agc_clipping > 0 clips the gradient first (adaptive gradient clipping).
  """
  tx, schedule = _optimizer(config, steps_per_epoch)
  if config.agc_clipping:
    # NFNets clip every layer but the classifier (Brock et al. 2021b).
    agc = optax.masked(optax.adaptive_grad_clip(config.agc_clipping),
                       lambda params: {k: jax.tree.map(lambda _: k != 'logits', v)
                                       for k, v in params.items()})
    tx = optax.chain(agc, tx)
  return tx, schedule


def _optimizer(config, steps_per_epoch: int):
  schedule = make_schedule(config, steps_per_epoch)
  mask = functools.partial(_decay_mask, include_norms=config.weight_decay_norms,
                           include_biases=config.weight_decay_biases)
  decay = optax.add_decayed_weights(config.weight_decay, mask=mask)
  coupled = config.weight_decay_style == 'coupled'
  if config.optimizer == 'adam':
    if coupled:
      tx = optax.chain(decay, optax.adam(schedule, b1=config.b1, b2=config.b2,
                                         eps=config.eps))
    else:
      tx = optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps,
                       weight_decay=config.weight_decay, mask=mask)
    return tx, schedule
  momentum = (optax.trace(decay=config.momentum, nesterov=config.nesterov)
              if config.momentum else optax.identity())
  if coupled:
    tx = optax.chain(decay, momentum, optax.scale_by_learning_rate(schedule))
  else:
    tx = optax.chain(momentum, decay, optax.scale_by_learning_rate(schedule))
  return tx, schedule


def _decay_mask(params, include_norms: bool, include_biases: bool):
  """True for the params weight decay applies to; norms are the modules
  named `*_norm` (bn_study/models/layers.py), and the normalizer-free
  scalars (norm_free.py) and Scaled WS's gains, which play their part,
  count as norms; biases are the other `bias`es."""
  def decayed(path, value):
    if (any(p.endswith('_norm') for p in path) or not np.ndim(value)
        or path[-1] == 'gain'):
      return include_norms
    return include_biases or path[-1] != 'bias'
  flat = traverse_util.flatten_dict(params)
  return traverse_util.unflatten_dict(
      {path: decayed(path, value) for path, value in flat.items()})

