"""Training and evaluation: the train state, the jitted steps and the loop.

`train_and_evaluate(config, workdir)` is the library entry point; main.py,
tests and notebooks call it. Relaunching with the same workdir resumes from
the latest checkpoint; a finished run is left as it is.
"""

import functools
import json
import os
from typing import Any

from absl import logging
from clu import metric_writers
from clu import metrics
from clu import periodic_actions
import flax
from flax.training import train_state
import jax
import jax.numpy as jnp
import optax

from bn_study import checkpoints
from bn_study import errors
from bn_study import input_pipeline
from bn_study import mesh as mesh_lib
from bn_study import models

OPTIMIZERS = ('adam', 'sgd')
LR_SCHEDULES = ('constant', 'cosine')


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


@flax.struct.dataclass
class EvalMetrics(metrics.Collection):
  loss: metrics.Average.from_output('loss')
  accuracy: metrics.Accuracy


def make_optimizer(config, steps_per_epoch: int):
  """The optax transformation and its learning-rate schedule (step -> lr)."""
  errors.check_choice('optimizer', config.optimizer, OPTIMIZERS)
  errors.check_choice('lr_schedule', config.lr_schedule, LR_SCHEDULES)
  if config.learning_rate <= 0:
    raise errors.UserError(
        f'learning_rate={config.learning_rate} must be positive.')
  warmup = int(config.warmup_epochs * steps_per_epoch)
  if config.lr_schedule == 'cosine':
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.learning_rate, warmup_steps=warmup,
        decay_steps=max(config.num_epochs * steps_per_epoch, warmup + 1))
  elif warmup:
    schedule = optax.linear_schedule(0.0, config.learning_rate, warmup)
  else:
    schedule = optax.constant_schedule(config.learning_rate)
  if config.optimizer == 'adam':
    tx = optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps,
                     weight_decay=config.weight_decay)
  else:
    tx = optax.chain(
        optax.add_decayed_weights(config.weight_decay),
        optax.sgd(schedule, momentum=config.momentum or None))
  return tx, schedule


def create_train_state(config, model, image_shape, tx, mesh) -> TrainState:
  """Initialized state, replicated over the mesh."""

  def init(rng):
    x = jnp.zeros((1, *image_shape), jnp.float32)
    variables = model.init(rng, x, train=False)
    return TrainState.create(
        apply_fn=model.apply, params=variables['params'], tx=tx,
        batch_stats=variables.get('batch_stats', {}))

  rng = jax.random.key(config.seed)
  return jax.jit(init, out_shardings=mesh_lib.replicated(mesh))(rng)


def _variables(state, params):
  if state.batch_stats:
    return {'params': params, 'batch_stats': state.batch_stats}
  return {'params': params}


def cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def train_step(state: TrainState, batch, train_metrics: TrainMetrics,
               schedule) -> tuple[TrainState, TrainMetrics]:
  """One optimizer step; BN normalizes by batch statistics and updates its
  running averages, which are kept in the new state."""

  def loss_fn(params):
    logits, new_vars = state.apply_fn(
        _variables(state, params), batch['image'], train=True,
        mutable=['batch_stats'])
    loss = cross_entropy(logits, batch['label'])
    return loss.mean(), (logits, loss, new_vars.get('batch_stats', {}))

  grads, (logits, loss, batch_stats) = jax.grad(loss_fn, has_aux=True)(
      state.params)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(step=state.step + 1, params=params,
                            opt_state=opt_state, batch_stats=batch_stats)
  step_metrics = TrainMetrics.single_from_model_output(
      loss=loss, logits=logits, labels=batch['label'],
      learning_rate=schedule(state.step),
      param_norm=optax.global_norm(state.params),
      grad_norm=optax.global_norm(grads),
      update_norm=optax.global_norm(updates))
  return new_state, train_metrics.merge(step_metrics)


def eval_step(state: TrainState, batch, eval_metrics: EvalMetrics
              ) -> EvalMetrics:
  """Normalizes by the running averages; nothing is mutable, so BN state can't
  change (flax raises if a layer tries)."""
  logits = state.apply_fn(_variables(state, state.params), batch['image'],
                          train=False)
  return eval_metrics.merge(EvalMetrics.single_from_model_output(
      loss=cross_entropy(logits, batch['label']), logits=logits,
      labels=batch['label'], mask=batch['mask']))


def jit_steps(mesh, schedule):
  """train_step and eval_step compiled over the mesh, state and metrics
  donated so XLA updates them in place."""
  repl = mesh_lib.replicated(mesh)
  data = mesh_lib.batch_sharding(mesh)
  p_train = jax.jit(functools.partial(train_step, schedule=schedule),
                    in_shardings=(repl, data, repl),
                    out_shardings=(repl, repl), donate_argnums=(0, 2))
  p_eval = jax.jit(eval_step, in_shardings=(repl, data, repl),
                   out_shardings=repl, donate_argnums=(2,))
  return p_train, p_eval


def evaluate(p_eval, state, pipeline, mesh) -> dict:
  """Eval metrics over every example of the eval split, exactly once."""
  eval_metrics = jax.device_put(EvalMetrics.empty(), mesh_lib.replicated(mesh))
  for batch in pipeline.eval():
    eval_metrics = p_eval(state, mesh_lib.global_batch(batch, mesh),
                          eval_metrics)
  result = eval_metrics.compute()
  result['count'] = eval_metrics.accuracy.count  # Examples evaluated.
  return jax.device_get(result)


def _write_json(workdir, name, obj):
  with open(os.path.join(workdir, name), 'w') as f:
    f.write(obj if isinstance(obj, str) else json.dumps(obj, indent=2))


def validate(config):
  """Checks that need nothing but the config."""
  for field in ('batch_size', 'eval_batch_size', 'num_epochs',
                'log_every_steps', 'checkpoint_every_epochs'):
    if not isinstance(config[field], int) or config[field] <= 0:
      raise errors.UserError(
          f'{field}={config[field]!r} must be a positive integer.')


def train_and_evaluate(config, workdir: str) -> TrainState:
  """Trains `config` in `workdir` (resuming if it holds checkpoints)."""
  validate(config)
  workdir = os.path.abspath(workdir)
  mesh = mesh_lib.make_mesh()
  mesh_lib.check_batch_size('batch_size', config.batch_size, mesh)
  mesh_lib.check_batch_size('eval_batch_size', config.eval_batch_size, mesh)
  pipeline = input_pipeline.Pipeline(
      config, process_index=jax.process_index(),
      process_count=jax.process_count())
  info = pipeline.info
  model = models.create_model(config.model, info.num_classes)
  steps_per_epoch = pipeline.steps_per_epoch
  num_steps = config.num_epochs * steps_per_epoch
  tx, schedule = make_optimizer(config, steps_per_epoch)

  state = create_train_state(config, model, info.image_shape, tx, mesh)
  ckpts = checkpoints.Checkpoints(workdir, config.max_checkpoints_to_keep)
  if ckpts.latest_step() is not None:
    state = ckpts.restore(state)
    logging.info('Resumed from %s at step %d.', ckpts.directory,
                 int(state.step))
  step = int(state.step)
  if step >= num_steps:
    logging.info('Already trained %d steps of %d; nothing to do.', step,
                 num_steps)
    ckpts.close()
    return state

  is_chief = jax.process_index() == 0
  if is_chief:
    os.makedirs(workdir, exist_ok=True)
    _write_json(workdir, 'config.json', config.to_json_best_effort(indent=2))
    _write_json(workdir, 'dataset.json', {
        **info.__dict__, 'steps_per_epoch': steps_per_epoch})
  writer = metric_writers.create_default_writer(
      workdir, just_logging=not is_chief, asynchronous=True)
  logging.info('Model (batch %d):\n%s', config.batch_size, models.summary(
      model, (config.batch_size, *info.image_shape)))

  p_train, p_eval = jit_steps(mesh, schedule)
  repl = mesh_lib.replicated(mesh)
  train_metrics = jax.device_put(TrainMetrics.empty(), repl)
  report = periodic_actions.ReportProgress(num_train_steps=num_steps,
                                           writer=writer)
  start_epoch, start_in_epoch = divmod(step, steps_per_epoch)
  logging.info('Training %d epochs of %d steps (batch %d) from step %d on %d '
               'devices.', config.num_epochs, steps_per_epoch,
               config.batch_size, step, mesh.size)
  try:
    for epoch in range(start_epoch, config.num_epochs):
      for batch in pipeline.train(epoch, start_in_epoch):
        state, train_metrics = p_train(
            state, mesh_lib.global_batch(batch, mesh), train_metrics)
        step += 1
        report(step)
        if step % config.log_every_steps == 0:
          writer.write_scalars(step, {
              f'train/{k}': v for k, v in train_metrics.compute().items()})
          train_metrics = jax.device_put(TrainMetrics.empty(), repl)
      start_in_epoch = 0
      with report.timed('eval'):
        result = evaluate(p_eval, state, pipeline, mesh)
      writer.write_scalars(step, {'eval/loss': result['loss'],
                                  'eval/accuracy': result['accuracy']})
      logging.info('epoch %d step %d: eval accuracy %.4f loss %.4f (%d '
                   'examples)', epoch + 1, step, result['accuracy'],
                   result['loss'], result['count'])
      writer.flush()
      if ((epoch + 1) % config.checkpoint_every_epochs == 0
          or epoch + 1 == config.num_epochs):
        with report.timed('checkpoint'):
          ckpts.save(step, state)
  finally:
    writer.flush()
    ckpts.close()
    writer.close()
  return state
