"""Instruments: what a normalizer does inside the network, not only the loss.

Each reads the train state and a batch and returns scalars; none writes
anything back: BN runs in train mode (batch statistics) with the updated
running averages thrown away, and the optimizer's update is computed from a
copy of its state. A run with the instruments on follows the same trajectory
as one without (tested). Definitions: Ioffe & Szegedy 2015 (Fig. 1) and
Santurkar et al. 2018.

- act/<layer>/...: percentiles (15, 50, 85), mean and std of the input to the
  layer's nonlinearity on a fixed probe batch, over all its units and, under
  unit0/, for its first unit (channel) alone.
- ics/<layer>/{l2,cos}: G = dL/dW_i; G' = the same after the layers before i
  took this step's update, same batch. ||G - G'|| and cos(G, G').
- smoothness/...: along the gradient g, for step sizes eta = m * lr over a
  grid of m: the range of L(w - eta g), the largest ||grad L(w - eta g) - g||,
  and that change over ||eta g|| (the effective beta-smoothness).
- norms/<module>/...: ||W||, ||grad W||, ||update W|| / ||W|| per layer (the
  effective learning rate BN's scale invariance implies), and the mean and
  std of each norm's scale (gamma).
"""

import functools
from typing import Callable, Dict, List, Sequence, Tuple

import jax
import jax.numpy as jnp

from bn_study import errors
from bn_study.runtime import cpu
from bn_study.training import losses
from bn_study import models

INSTRUMENTS = ('act', 'ics', 'smoothness', 'norms')
PERCENTILES = (15, 50, 85)


def enabled(analysis_config) -> List[str]:
  """The instruments switched on, in INSTRUMENTS order; [] when off."""
  if not analysis_config.every_steps:
    return []
  return [name for name in INSTRUMENTS if analysis_config[name]]


def percentile_summary(x) -> Dict[str, jax.Array]:
  """p15/p50/p85/mean/std of all of x, in float32."""
  x = jnp.ravel(x).astype(jnp.float32)
  out = {f'p{q}': v for q, v in zip(
      PERCENTILES, jnp.percentile(x, jnp.array(PERCENTILES, jnp.float32)))}
  out['mean'] = x.mean()
  out['std'] = x.std()
  return out


def ics(loss_fn: Callable, params, updates, layers: Sequence[str],
        grads=None) -> Dict[str, jax.Array]:
  """Santurkar et al.'s internal covariate shift of every layer but the first.

  loss_fn(params) -> scalar on a fixed batch; `updates` the optimizer's update
  of this step; a layer's update includes what belongs to it, its norm and
  norm-free scalars (`<layer>_<what>`); `grads` the gradient at `params` if
  the caller has it already.

  One gradient per layer, unrolled, so that each stops at its own layer. A
  loop (lax.map) would trace the network once, not once a layer, but take
  every layer's gradient each time: slower to run (docs/instruments.md).
  """
  if grads is None:
    grads = jax.grad(loss_fn)(params)
  out = {}
  for i, layer in enumerate(layers[1:], start=1):
    earlier = layers[:i]
    moved = {k: (jax.tree.map(jnp.add, v, updates[k])
                 if any(k == l or k.startswith(f'{l}_') for l in earlier)
                 else v)
             for k, v in params.items()}
    g = grads[layer]
    g_moved = jax.grad(loss_fn)(moved)[layer]
    diff = jax.tree.map(jnp.subtract, g, g_moved)
    dot = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g),
                                             jax.tree.leaves(g_moved)))
    out[f'ics/{layer}/l2'] = cpu.global_norm(diff)
    out[f'ics/{layer}/cos'] = dot / (
        cpu.global_norm(g) * cpu.global_norm(g_moved) + 1e-30)
  return out


def smoothness(loss_fn: Callable, params, learning_rate,
               multipliers: Sequence[float], loss_and_grads=None
               ) -> Dict[str, jax.Array]:
  """The loss and gradient along the gradient, at eta = m * learning_rate.

  `loss_and_grads`: (loss, gradient) at `params` if the caller has them.
  """
  loss, g = loss_and_grads or jax.value_and_grad(loss_fn)(params)
  g_norm = cpu.global_norm(g)
  losses, changes, betas = [loss], [], []
  for m in multipliers:
    eta = m * learning_rate
    moved = jax.tree.map(lambda p, d: p - eta * d, params, g)
    loss_m, g_m = jax.value_and_grad(loss_fn)(moved)
    change = cpu.global_norm(jax.tree.map(jnp.subtract, g_m, g))
    losses.append(loss_m)
    changes.append(change)
    betas.append(change / (eta * g_norm + 1e-30))
  losses = jnp.stack(losses)
  return {'smoothness/loss_range': losses.max() - losses.min(),
          'smoothness/grad_change_max': jnp.stack(changes).max(),
          'smoothness/beta_max': jnp.stack(betas).max()}


def weight_norms(params, grads, updates, layers) -> Dict[str, jax.Array]:
  out = {}
  for layer in layers:
    w = params[layer]['kernel']
    w_norm = jnp.linalg.norm(w.ravel())
    out[f'norms/{layer}/w'] = w_norm
    out[f'norms/{layer}/grad'] = jnp.linalg.norm(grads[layer]['kernel'].ravel())
    out[f'norms/{layer}/update_ratio'] = (
        jnp.linalg.norm(updates[layer]['kernel'].ravel()) / (w_norm + 1e-30))
  for module, p in params.items():
    if module.endswith('_norm') and 'scale' in p:
      out[f'norms/{module}/gamma_mean'] = p['scale'].mean()
      out[f'norms/{module}/gamma_std'] = p['scale'].std()
  return out


def activations(state, probe, seed: int = 0) -> Dict[str, jax.Array]:
  """act/ summaries of every `<layer>_preact` the model sows, on `probe`."""
  _, inter = state.apply_fn(
      models.variables(state.params, state.batch_stats), probe, train=True,
      mutable=['intermediates', 'batch_stats'],
      rngs=models.noise_rngs(seed, state.step))
  out = {}
  for name, values in inter['intermediates'].items():
    if not name.endswith('_preact'):
      continue
    layer = name[:-len('_preact')]
    x = values[0]
    for k, v in percentile_summary(x).items():
      out[f'act/{layer}/{k}'] = v
    for k, v in percentile_summary(x[..., 0]).items():
      out[f'act/{layer}/unit0/{k}'] = v
  return out


def measure(state, batch, probe, learning_rate, *, instruments: Tuple[str, ...],
            multipliers: Tuple[float, ...], layers: Tuple[str, ...],
            label_smoothing: float = 0.0, seed: int = 0
            ) -> Dict[str, jax.Array]:
  """Every instrument asked for, on this step's state and batch; `layers`
  the weight layers in forward order (models.weight_layers). The loss is
  the training loss (losses.cross_entropy), with the step's own noise
  (`seed`; models.noise_rngs) in every evaluation of it."""

  def loss_fn(params):
    logits, _ = state.apply_fn(models.variables(params, state.batch_stats),
                               batch['image'], train=True,
                               mutable=['batch_stats'],
                               rngs=models.noise_rngs(seed, state.step))
    return losses.cross_entropy(logits, batch['label'],
                                label_smoothing).mean()

  out = {}
  if 'act' in instruments:
    out.update(activations(state, probe, seed))
  if instruments == ('act',):
    return out
  # One gradient at the current weights serves every other instrument.
  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  updates, _ = state.tx.update(grads, state.opt_state, state.params)
  if 'ics' in instruments:
    out.update(ics(loss_fn, state.params, updates, layers, grads))
  if 'smoothness' in instruments:
    out.update(smoothness(loss_fn, state.params, learning_rate, multipliers,
                          (loss, grads)))
  if 'norms' in instruments:
    out.update(weight_norms(state.params, grads, updates, layers))
  return out


def jit_measure(mesh_repl, data_sharding, instruments, multipliers, layers,
                label_smoothing: float = 0.0, seed: int = 0):
  """`measure` compiled over the mesh; nothing donated (it only reads)."""
  return jax.jit(
      functools.partial(measure, instruments=tuple(instruments),
                        multipliers=tuple(multipliers), layers=tuple(layers),
                        label_smoothing=label_smoothing, seed=seed),
      in_shardings=(mesh_repl, data_sharding, data_sharding, mesh_repl),
      out_shardings=mesh_repl)


def validate(cfg):
  """The analysis block's fields."""
  if (isinstance(cfg.every_steps, bool) or not isinstance(cfg.every_steps, int)
      or cfg.every_steps < 0):
    raise errors.UserError(f'analysis.every_steps={cfg.every_steps!r} must be '
                           'a non-negative integer (0 = off).')
  for name in INSTRUMENTS:
    if not isinstance(cfg[name], bool):
      raise errors.UserError(f'analysis.{name}={cfg[name]!r} must be True or '
                             'False.')
  errors.check_positive_int('analysis.probe_size', cfg.probe_size)
  multipliers = cfg.smoothness_lr_multipliers
  if (not isinstance(multipliers, (tuple, list)) or not multipliers or
      not all(isinstance(m, (int, float)) and m > 0 for m in multipliers)):
    raise errors.UserError(
        f'analysis.smoothness_lr_multipliers={multipliers!r} must be a '
        'non-empty tuple of positive numbers, e.g. "(0.5,1.0,2.0,4.0)".')
