"""The optimizer: optax transformations, learning-rate schedules, which
params weight decay applies to, which are frozen, and lookahead."""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from bn_study import models
from bn_study import workdir as workdir_lib

OPTIMIZERS = ('adam', 'sgd')
LR_SCHEDULES = ('constant', 'cosine', 'piecewise', 'triangular')
WEIGHT_DECAY_STYLES = ('decoupled', 'coupled')


def kilostep_scale(config) -> float:
  """airbench's divisor of hyperparameters given per `per_examples`
  examples: N (1 + 1 / (1 - momentum)), about the size of a Nesterov step
  over N examples' summed gradients (Jordan 2024)."""
  return config.per_examples * (1 + 1 / (1 - config.momentum))


def learning_rate(config) -> float:
  """The peak rate applied to the mean loss's gradient. With per_examples
  N, learning_rate is airbench's per N examples: on the summed loss it is
  learning_rate / kilostep_scale, so batch_size times that on the mean."""
  if not config.per_examples:
    return config.learning_rate
  return config.learning_rate * config.batch_size / kilostep_scale(config)


def weight_decay(config) -> float:
  """The coefficient added times w to the gradient (coupled) or taken
  times lr w off the weights (decoupled). With per_examples, weight_decay
  is airbench's per N examples: lr * this is weight_decay * batch_size /
  kilostep_scale of the weights a step at the peak rate, whatever the rate."""
  if not config.per_examples:
    return config.weight_decay
  return config.weight_decay / config.learning_rate


def make_schedule(config, steps_per_epoch: int):
  """step -> learning rate: a linear warmup from 0 over warmup_epochs, then
  constant, cosine (to 0 at the end of the run), piecewise (multiplied by
  lr_decay_factor at each of lr_boundaries, fractions of the run; the new
  rate applies from the boundary's step on) or triangular (airbench's:
  linear from lr_start_factor times the rate to the rate at lr_peak_at, a
  fraction of the run, then linear to lr_end_factor times it at the end)."""
  total = workdir_lib.run_steps(config.num_epochs, steps_per_epoch)
  warmup = int(config.warmup_epochs * steps_per_epoch)
  lr = learning_rate(config)
  if config.lr_schedule == 'triangular':
    return _triangular(lr, total, config.lr_start_factor, config.lr_peak_at,
                       config.lr_end_factor)
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


def _triangular(lr, total, start, peak_at, end):
  peak = int(total * peak_at)  # airbench's int(total_train_steps * 0.23).

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    up = start + (1 - start) * step / max(peak, 1)
    down = 1 + (end - 1) * (step - peak) / max(total - peak, 1)
    return lr * jnp.where(step < peak, up, down)

  return schedule


def make_optimizer(config, steps_per_epoch: int):
  """The optax transformation and its learning-rate schedule (step -> lr).

  Weight decay, weight_decay_style:
  - coupled: L2 as the ResNet and VGG papers used it, wd * w added to the
    gradient before momentum (or Adam's moments);
  - decoupled: lr * wd * w subtracted from the weights beside the update
    (AdamW, and SGDW for sgd; Loshchilov & Hutter 2019).
  agc_clipping > 0 clips the gradient first (adaptive gradient clipping).
  norm_bias_lr_multiplier scales the norms' bias gradients before momentum
  and decay: their rate times it, their weight decay not (airbench's
  bias_scaler; sgd). Params the model family freezes (models.frozen) get no
  update from their epoch on. lookahead_every > 0 wraps it all in lookahead.
  """
  tx, schedule = _optimizer(config, steps_per_epoch)
  first = []
  if config.agc_clipping:
    # NFNets clip every layer but the classifier (Brock et al. 2021b).
    first.append(optax.masked(
        optax.adaptive_grad_clip(config.agc_clipping),
        lambda params: {k: jax.tree.map(lambda _: k != 'logits', v)
                        for k, v in params.items()}))
  if config.norm_bias_lr_multiplier != 1:
    first.append(optax.masked(optax.scale(config.norm_bias_lr_multiplier),
                              _norm_bias_mask))
  last = []
  frozen = models.frozen(config.model)
  if frozen:
    last.append(_freeze({path: round(epochs * steps_per_epoch)
                         for path, epochs in frozen.items()}))
  tx = optax.chain(*first, tx, *last) if first or last else tx
  if config.lookahead_every:
    tx = lookahead(tx, config.lookahead_every, config.lookahead_decay,
                   workdir_lib.run_steps(config.num_epochs, steps_per_epoch),
                   steps_per_epoch, config.lookahead_start_epochs)
  # The train step passes batch_stats= to every optimizer; only lookahead
  # reads it.
  return optax.with_extra_args_support(tx), schedule


def _optimizer(config, steps_per_epoch: int):
  schedule = make_schedule(config, steps_per_epoch)
  mask = functools.partial(_decay_mask, include_norms=config.weight_decay_norms,
                           include_biases=config.weight_decay_biases)
  wd = weight_decay(config)
  decay = optax.add_decayed_weights(wd, mask=mask)
  coupled = config.weight_decay_style == 'coupled'
  if config.optimizer == 'adam':
    if coupled:
      tx = optax.chain(decay, optax.adam(schedule, b1=config.b1, b2=config.b2,
                                         eps=config.eps))
    else:
      tx = optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps,
                       weight_decay=wd, mask=mask)
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



def _norm_bias_mask(params):
  """True for the norms' biases (beta): `bias` in a `*_norm` module."""
  flat = traverse_util.flatten_dict(params)
  return traverse_util.unflatten_dict(
      {path: path[-1] == 'bias' and any(p.endswith('_norm') for p in path)
       for path in flat})


class FreezeState(NamedTuple):
  count: jax.Array


def _freeze(until: dict) -> optax.GradientTransformation:
  """Zeroes the updates of the params at `until`'s paths ({path: step}) from
  that step on: as if PyTorch's requires_grad were False then (no step, no
  momentum, no decay)."""

  def init(params):
    del params
    return FreezeState(jnp.zeros([], jnp.int32))

  def update(updates, state, params=None):
    del params
    flat = traverse_util.flatten_dict(updates)
    for path, step in until.items():
      flat[path] = jnp.where(state.count < step, flat[path], 0.0)
    return (traverse_util.unflatten_dict(flat),
            FreezeState(state.count + 1))

  return optax.GradientTransformation(init, update)


class LookaheadState(NamedTuple):
  """The inner optimizer's state, the step count, and the averages (the
  'slow' weights) of the params and of the norms' running averages."""
  inner: Any
  count: jax.Array
  params: Any
  batch_stats: Any
  started: jax.Array  # The averages exist (from start_step on).
  synced: jax.Array  # This step's batch_stats are the averages'.


def lookahead(inner: optax.GradientTransformation, every: int, decay: float,
              total: int, steps_per_epoch: int, start_epochs: float
              ) -> optax.GradientTransformationExtraArgs:
  """airbench94's lookahead (Jordan 2024; Zhang et al. 2019's idea with a
  schedule). From epoch `start_epochs` on, at every `every`-th step: the
  first time, the averages start as the weights; after that they move
  toward the new weights, avg += (1 - rho) (w - avg) with rho = decay^every
  (step / total)^3, and the weights are set to them. At the run's last step
  the weights are set to the averages again (airbench's final update with
  decay 1); an epoch's end is no such moment (airbench94.py's loop). The
  norms' running averages, which airbench's state_dict holds beside the
  weights, go the same way when the train step passes them (`batch_stats=`;
  read back with `synced_batch_stats`)."""

  def init(params):
    false = jnp.zeros([], bool)
    return LookaheadState(inner.init(params), jnp.zeros([], jnp.int32),
                          params, {}, false, false)

  def update(updates, state, params=None, *, batch_stats=None, **extra):
    del extra
    updates, inner_state = inner.update(updates, state.inner, params)
    count = state.count + 1
    epoch = (count - 1) // steps_per_epoch  # The epoch this step is in.
    due = (epoch >= start_epochs) & (count % every == 0)
    start = due & ~state.started
    move = due & state.started
    rho = decay**every * (count.astype(jnp.float32) / total)**3
    started = state.started | start
    sync = started & (move | (count >= total))
    new = optax.apply_updates(params, updates)

    def average(avg, w):
      return jnp.where(start, w, jnp.where(move, avg + (1 - rho) * (w - avg),
                                           avg))

    averages = jax.tree.map(average, state.params, new)
    updates = jax.tree.map(lambda a, w, p: jnp.where(sync, a, w) - p,
                           averages, new, params)
    stats = state.batch_stats
    if batch_stats is not None and jax.tree.leaves(batch_stats):
      stats = jax.tree.map(average, state.batch_stats, batch_stats)
    return updates, LookaheadState(inner_state, count, averages, stats,
                                   started, sync)

  return optax.GradientTransformationExtraArgs(init, update)


def with_batch_stats(opt_state, batch_stats):
  """`opt_state` whose lookahead (if any) starts its running averages'
  average at `batch_stats`, the model's initial ones."""
  if not _lookahead_state(opt_state):
    return opt_state
  return opt_state._replace(batch_stats=batch_stats)


def synced_batch_stats(opt_state, batch_stats):
  """The running averages a train step keeps: the lookahead's averages at
  its sync steps, else `batch_stats` as the step left them."""
  if not _lookahead_state(opt_state) or not jax.tree.leaves(batch_stats):
    return batch_stats
  return jax.tree.map(lambda a, b: jnp.where(opt_state.synced, a, b),
                      opt_state.batch_stats, batch_stats)


def _lookahead_state(opt_state) -> bool:
  return isinstance(opt_state, LookaheadState)
