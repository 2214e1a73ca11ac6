"""The harness against plain Flax: bn_study's train step timed in turn with
a plain one, the same model, optimizer and loss with nothing else (no norm
metrics, no NaN guard, no metric collection, no learning-rate readout), as
flax's examples write it. `harness_overhead` = bn_study's step / the plain
step."""

from typing import Dict

import jax
import jax.numpy as jnp
import optax

from bn_study import models
from bn_study.tools import step_timing
from bn_study.training import losses
from bn_study.training import steps as steps_lib


def plain_train_step(state, batch, label_smoothing: float = 0.0,
                     seed: int = 0):
  """One optimizer step and the BN statistics it updates; nothing else."""

  def loss_fn(params):
    logits, new_vars = state.apply_fn(
        models.variables(params, state.batch_stats), batch['image'],
        train=True, mutable=['batch_stats'],
        rngs=models.noise_rngs(seed, state.step))
    loss = losses.cross_entropy(logits, batch['label'], label_smoothing)
    return loss.mean(), new_vars.get('batch_stats', {})

  grads, batch_stats = jax.grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  return state.replace(step=state.step + 1,
                       params=optax.apply_updates(state.params, updates),
                       opt_state=opt_state, batch_stats=batch_stats)


def harness_overhead(setup: step_timing.Setup, batch_size: int, repeats: int,
                     warmup: int) -> Dict[str, float]:
  """Both steps on the same batch, each from its own copy of the state,
  timed alternately (medians)."""
  batch = step_timing.fake_batch(setup, batch_size)
  plain = jax.jit(plain_train_step, donate_argnums=0,
                  static_argnames=('label_smoothing', 'seed'))
  holder = {'ours': jax.tree.map(jnp.copy, setup.state),
            'plain': jax.tree.map(jnp.copy, setup.state),
            'metrics': steps_lib.TrainMetrics.empty()}

  def ours():
    holder['ours'], holder['metrics'] = setup.steps.train(
        holder['ours'], batch, holder['metrics'])
    jax.block_until_ready(holder['ours'])

  def bare():
    holder['plain'] = plain(holder['plain'], batch,
                            label_smoothing=setup.config.label_smoothing,
                            seed=setup.config.seed)
    jax.block_until_ready(holder['plain'])

  ours_s, plain_s = (step_timing.median_seconds(t) for t in
                     step_timing.time_alternately([ours, bare], repeats,
                                                  warmup))
  return {'harness_step_s': ours_s, 'plain_step_s': plain_s,
          'harness_overhead': ours_s / plain_s}
