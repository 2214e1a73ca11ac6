"""The train state and the jitted steps: one optimizer step, a loop of them
in one call, and the eval step. They read as the math; how XLA compiles them
on each platform is runtime/cpu.py's."""

import dataclasses
import functools
from typing import Any, Callable

from clu import metrics
import flax
from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bn_study import models
from bn_study.runtime import cpu
from bn_study.runtime import mesh as mesh_lib
from bn_study.training import losses
from bn_study.training import optim
from bn_study.training import tta

# What a step whose loss or gradient is not finite does (config.nonfinite).
NONFINITE = ('stop', 'skip')


class TrainState(train_state.TrainState):
  """Params and optimizer state, plus BN running averages ({} without BN)."""
  batch_stats: Any


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
  """Means over the steps since the last write."""
  loss: metrics.Average.from_output('loss')
  accuracy: metrics.Accuracy
  learning_rate: metrics.Average.from_output('learning_rate')
  param_norm: metrics.Average.from_output('param_norm')
  grad_norm: metrics.Average.from_output('grad_norm')
  update_norm: metrics.Average.from_output('update_norm')
  # Fraction of steps whose loss or gradient norm was not finite.
  nonfinite_steps: metrics.Average.from_output('nonfinite_steps')


@flax.struct.dataclass
class EvalMetrics(metrics.Collection):
  loss: metrics.Average.from_output('loss')
  accuracy: metrics.Accuracy



def create_train_state(config, model, image_shape, tx, mesh) -> TrainState:
  """Initialized state, replicated over the mesh."""

  def init(rng):
    x = jnp.zeros((1, *image_shape), jnp.float32)
    variables = model.init(rng, x, train=False)
    batch_stats = variables.get('batch_stats', {})
    state = TrainState.create(apply_fn=model.apply,
                              params=variables['params'], tx=tx,
                              batch_stats=batch_stats)
    return state.replace(
        opt_state=optim.with_batch_stats(state.opt_state, batch_stats))

  rng = jax.random.key(config.seed)
  return jax.jit(init, out_shardings=mesh_lib.replicated(mesh))(rng)


def train_step(state: TrainState, batch, train_metrics: TrainMetrics,
               schedule, skip_nonfinite: bool = False,
               label_smoothing: float = 0.0, seed: int = 0
               ) -> tuple[TrainState, TrainMetrics]:
  """One optimizer step; BN normalizes by batch statistics and updates its
  running averages, which are kept in the new state.

  With `skip_nonfinite`, a step whose loss or gradient norm is not finite
  leaves params, optimizer state and BN statistics as they were (the step
  counter still advances, so the data order is unchanged). Randomness in
  the model (noisy BN's noise) comes from `seed` and the step.
  """

  def loss_fn(params):
    logits, new_vars = state.apply_fn(
        models.variables(params, state.batch_stats), batch['image'],
        train=True, mutable=['batch_stats'],
        rngs=models.noise_rngs(seed, state.step))
    loss = losses.cross_entropy(logits, batch['label'], label_smoothing)
    return loss.mean(), (logits, loss, new_vars.get('batch_stats', {}))

  grads, (logits, loss, batch_stats) = jax.grad(loss_fn, has_aux=True)(
      state.params)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params,
                                       batch_stats=batch_stats)
  params = optax.apply_updates(state.params, updates)
  batch_stats = optim.synced_batch_stats(opt_state, batch_stats)
  grad_norm = cpu.global_norm(grads)
  # The update as applied, new minus old params (XLA fuses it with the
  # update itself; docs/performance.md).
  update_norm = cpu.global_norm(
      jax.tree.map(jnp.subtract, params, state.params))
  finite = jnp.isfinite(loss.mean()) & jnp.isfinite(grad_norm)
  new = (params, opt_state, batch_stats)
  if skip_nonfinite:
    new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new,
                       (state.params, state.opt_state, state.batch_stats))
    # Keep the skipped step's NaNs out of the logged means.
    loss = jnp.where(finite, loss, 0.0)
    grad_norm = jnp.where(finite, grad_norm, 0.0)
    update_norm = jnp.where(finite, update_norm, 0.0)
  new_state = state.replace(step=state.step + 1, params=new[0],
                            opt_state=new[1], batch_stats=new[2])
  step_metrics = TrainMetrics.single_from_model_output(
      loss=loss, logits=logits, labels=batch['label'],
      learning_rate=schedule(state.step),
      param_norm=cpu.global_norm(state.params), grad_norm=grad_norm,
      update_norm=update_norm,
      nonfinite_steps=(~finite).astype(jnp.float32))
  return new_state, train_metrics.merge(step_metrics)


def train_loop(state: TrainState, train_metrics: TrainMetrics, inputs,
               num_steps, *, take, steps_per_epoch: int, **step_kwargs
               ) -> tuple[TrainState, TrainMetrics]:
  """`num_steps` train steps in one call (Keras' steps_per_execution): the
  i-th takes its batch from `inputs` (feeds), at its position in the epoch.
  Calls of any length run the same compiled loop, so a run is the same
  whatever its steps_per_call."""

  def body(i, carry):
    state, metrics = carry
    batch = take(inputs, state.step % steps_per_epoch, i)
    return train_step(state, batch, metrics, **step_kwargs)

  return jax.lax.fori_loop(0, num_steps, body, (state, train_metrics))


def eval_step(state: TrainState, batch, eval_metrics: EvalMetrics,
              batch_statistics: bool = False, tta_level: int = 0
              ) -> EvalMetrics:
  """Normalizes by the running averages, or with `batch_statistics` by each
  batch's own (padding masked out). Nothing is kept: the running averages
  cannot change (flax raises if a layer tries to mutate them). tta_level >
  0 averages the logits over tta.py's views."""
  variables = models.variables(state.params, state.batch_stats)
  if batch_statistics:
    logits, _ = state.apply_fn(variables, batch['image'], train=True,
                               mask=batch['mask'], mutable=['batch_stats'])
  elif tta_level:
    logits = tta.logits(
        lambda x: state.apply_fn(variables, x, train=False), batch['image'],
        tta_level)
  else:
    logits = state.apply_fn(variables, batch['image'], train=False)
  return eval_metrics.merge(EvalMetrics.single_from_model_output(
      loss=losses.cross_entropy(logits, batch['label']), logits=logits,
      labels=batch['label'], mask=batch['mask']))


@dataclasses.dataclass(frozen=True)
class Steps:
  train: Callable  # (state, batch, TrainMetrics) -> (state, TrainMetrics)
  eval: Callable  # (state, batch, EvalMetrics) -> EvalMetrics
  eval_batch: Callable  # Same, each batch normalized by its own statistics.
  eval_tta: Callable  # Same as eval, over test-time augmentation's views.


def jit_steps(mesh, schedule, skip_nonfinite: bool = False,
              label_smoothing: float = 0.0, seed: int = 0,
              tta_level: int = 2) -> Steps:
  """The steps compiled over the mesh, state and metrics donated so XLA
  updates them in place (eval never donates the state it reads)."""
  repl = mesh_lib.replicated(mesh)
  data = mesh_lib.batch_sharding(mesh)
  platform = mesh.devices.flat[0].platform

  def jit_eval(batch_statistics, tta_level=0):
    return jax.jit(
        functools.partial(eval_step, batch_statistics=batch_statistics,
                          tta_level=tta_level),
        in_shardings=(repl, data, repl), out_shardings=repl,
        donate_argnums=(2,))

  return Steps(
      train=jax.jit(functools.partial(train_step, schedule=schedule,
                                      skip_nonfinite=skip_nonfinite,
                                      label_smoothing=label_smoothing,
                                      seed=seed),
                    in_shardings=(repl, data, repl),
                    out_shardings=(repl, repl), donate_argnums=(0, 2),
                    compiler_options=cpu.compiler_options(platform)),
      eval=jit_eval(False), eval_batch=jit_eval(True),
      eval_tta=jit_eval(False, tta_level))


def jit_train_loop(mesh, schedule, take, steps_per_epoch: int,
                   skip_nonfinite: bool = False, label_smoothing: float = 0.0,
                   one_loop: bool = True, seed: int = 0):
  """(state, metrics, inputs, n) -> n train steps: train_loop compiled over
  the mesh, state and metrics donated; or, where one loop would be slow
  (`one_loop` False: cpu.steps_in_one_loop), the same step jitted alone and
  dispatched n times, without waiting for any of them."""
  repl = mesh_lib.replicated(mesh)
  step_kwargs = dict(schedule=schedule, skip_nonfinite=skip_nonfinite,
                     label_smoothing=label_smoothing, seed=seed)
  options = cpu.compiler_options(mesh.devices.flat[0].platform)
  if one_loop:
    return jax.jit(functools.partial(train_loop, take=take,
                                     steps_per_epoch=steps_per_epoch,
                                     **step_kwargs),
                   out_shardings=(repl, repl), donate_argnums=(0, 1),
                   compiler_options=options)

  def one_step(state, train_metrics, inputs, i):
    # train_loop's body, outside any loop.
    batch = take(inputs, state.step % steps_per_epoch, i)
    return train_step(state, batch, train_metrics, **step_kwargs)

  step = jax.jit(one_step, out_shardings=(repl, repl), donate_argnums=(0, 1),
                 compiler_options=options)

  def calls(state, train_metrics, inputs, num_steps):
    for i in range(num_steps):
      state, train_metrics = step(state, train_metrics, inputs, np.int32(i))
    return state, train_metrics

  return calls

