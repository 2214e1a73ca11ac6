"""Training and evaluation: the train state, the jitted steps and the loop.

`train_and_evaluate(config, workdir)` is the library entry point; main.py,
tests and notebooks call it. Relaunching with the same workdir resumes from
the latest checkpoint; a finished run is left as it is.
"""

import dataclasses
import functools
import json
import time
from typing import Any, Callable

from absl import logging
from clu import metrics
import flax
from flax import traverse_util
from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bn_study import analysis
from bn_study import checkpoints
from bn_study import cpu
from bn_study import errors
from bn_study import data_order
from bn_study import dataset_info
from bn_study import device_data
from bn_study import feeds
from bn_study import loop_timing
from bn_study import losses
from bn_study import mesh as mesh_lib
from bn_study import models
from bn_study import norms
from bn_study import precise_bn
from bn_study import preemption
from bn_study import summaries

OPTIMIZERS = ('adam', 'sgd')
LR_SCHEDULES = ('constant', 'cosine', 'piecewise')
WEIGHT_DECAY_STYLES = ('decoupled', 'coupled')
NONFINITE = ('stop', 'skip')
# eval_stats mode -> the prefix of its scalars.
EVAL_STATS = {'ema': 'eval', 'precise': 'eval_precise', 'batch': 'eval_batch'}


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
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
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
              batch_statistics: bool = False) -> EvalMetrics:
  """Normalizes by the running averages, or with `batch_statistics` by each
  batch's own (padding masked out). Nothing is kept: the running averages
  cannot change (flax raises if a layer tries to mutate them)."""
  variables = models.variables(state.params, state.batch_stats)
  if batch_statistics:
    logits, _ = state.apply_fn(variables, batch['image'], train=True,
                               mask=batch['mask'], mutable=['batch_stats'])
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


def jit_steps(mesh, schedule, skip_nonfinite: bool = False,
              label_smoothing: float = 0.0, seed: int = 0) -> Steps:
  """The steps compiled over the mesh, state and metrics donated so XLA
  updates them in place (eval never donates the state it reads)."""
  repl = mesh_lib.replicated(mesh)
  data = mesh_lib.batch_sharding(mesh)
  platform = mesh.devices.flat[0].platform

  def jit_eval(batch_statistics):
    return jax.jit(
        functools.partial(eval_step, batch_statistics=batch_statistics),
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
      eval=jit_eval(False), eval_batch=jit_eval(True))


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


def evaluate(p_eval, state, batches, mesh) -> dict:
  """Eval metrics over `batches` (global; a feed's eval(): every example of
  the eval split, exactly once)."""
  eval_metrics = jax.device_put(EvalMetrics.empty(), mesh_lib.replicated(mesh))
  for batch in batches:
    eval_metrics = p_eval(state, batch, eval_metrics)
  result = eval_metrics.compute()
  result['count'] = eval_metrics.accuracy.count  # Examples evaluated.
  return jax.device_get(result)


def _evaluate_all(config, modes, precise, steps, state, feed, mesh, epoch,
                  step, writer):
  """Evaluates in every eval_stats mode and writes `<prefix>/{loss,accuracy}`.

  Returns the state, with PreciseBN's statistics in it only when
  `precise_bn_replaces_ema` asks for that.
  """
  scalars, precise_stats = {}, None
  for mode in modes:
    if mode == 'batch':
      result = evaluate(steps.eval_batch, state, feed.eval(), mesh)
    elif mode == 'precise':
      # The epoch's own batches, continuing into later epochs if K > 1 epoch.
      precise_stats = precise(state, feed.batches(epoch),
                              config.precise_bn_batches)
      result = evaluate(steps.eval, state.replace(batch_stats=precise_stats),
                        feed.eval(), mesh)
    else:
      result = evaluate(steps.eval, state, feed.eval(), mesh)
    prefix = EVAL_STATS[mode]
    scalars.update({f'{prefix}/loss': result['loss'],
                    f'{prefix}/accuracy': result['accuracy']})
    logging.info('epoch %d step %d: %s accuracy %.4f loss %.4f (%d examples)',
                 epoch + 1, step, prefix, result['accuracy'], result['loss'],
                 result['count'])
  writer.write_scalars(step, scalars)
  if precise_stats is not None and config.precise_bn_replaces_ema:
    state = state.replace(batch_stats=precise_stats)
  return state


def _check_finite(values, step, config, ckpts):
  """Big_vision-style NaN guard, run when metrics reach the host anyway."""
  if config.nonfinite == 'skip' or (np.isfinite(values['loss'])
                                    and np.isfinite(values['grad_norm'])):
    return
  first = step - config.log_every_steps + 1
  where = f'step {step}' if first == step else f'steps {first}-{step}'
  raise errors.TrainingDiverged(
      f'Training diverged: the loss or gradient norm is not finite at {where} '
      f'(loss '
      f'{float(values["loss"])}, grad norm {float(values["grad_norm"])}). The '
      f'likely cause is a learning rate too high for this model and '
      f'normalizer (learning_rate={config.learning_rate}): lower it, or set '
      '--config.nonfinite=skip to skip such steps. ' + (
          'No checkpoint was written before it.' if ckpts.latest_step() is None
          else f'The last good checkpoint (step {ckpts.latest_step()}) is '
          'intact.'))


class _TrainLog:
  """train/* at each log step, fetched from the device only once the next
  call of train steps is queued, so that the device never waits for the
  host's writing (nor for the NaN guard, which runs then too)."""

  def __init__(self, writer, config, ckpts):
    self._writer, self._config, self._ckpts = writer, config, ckpts
    self._pending = None

  def add(self, step: int, train_metrics: TrainMetrics):
    self.write()
    self._pending = (step, train_metrics.compute())

  def write(self):
    """Writes (and checks) the pending values; before anything that saves or
    reads the state, so no checkpoint follows an unchecked divergence."""
    if self._pending is None:
      return
    step, values = self._pending
    self._pending = None
    values = jax.device_get(values)
    self._writer.write_scalars(step, {f'train/{k}': v
                                      for k, v in values.items()})
    _check_finite(values, step, self._config, self._ckpts)


def _stop_preempted(step, state, train_metrics, ckpts, writer):
  """Checkpoints `step` (state and unlogged metrics), flushes, and stops."""
  if ckpts.latest_step() != step:
    ckpts.save(step, state, train_metrics)
  ckpts.wait()
  writer.flush()
  raise errors.Preempted(
      f'Stopped by a signal at step {step}; checkpoint saved in '
      f'{ckpts.directory}. Run the same command again to resume from there.')


def _write_json(workdir, name, obj):
  (workdir / name).write_text(
      obj if isinstance(obj, str) else json.dumps(obj, indent=2))


def eval_stats_modes(config):
  """The eval_stats modes in the order given, validated."""
  modes = [m.strip() for m in str(config.eval_stats).split(',') if m.strip()]
  if not modes or len(set(modes)) != len(modes) or not set(modes) <= set(
      EVAL_STATS):
    raise errors.UserError(
        f'eval_stats={config.eval_stats!r} must be a comma-separated, '
        f'non-empty subset of: {", ".join(EVAL_STATS)}.')
  return modes


def validate(config):
  """Every field that needs nothing but the config, before any work starts.

  The dataset's fields are checked when it is opened (input_pipeline), the
  batch sizes against the devices when the mesh is made (mesh).
  """
  for field in ('batch_size', 'eval_batch_size', 'num_epochs',
                'log_every_steps', 'checkpoint_every_epochs',
                'max_checkpoints_to_keep', 'precise_bn_batches'):
    errors.check_positive_int(field, config[field])
  if (isinstance(config.eval_every_steps, bool) or
      not isinstance(config.eval_every_steps, int) or
      config.eval_every_steps < 0):
    raise errors.UserError(
        f'eval_every_steps={config.eval_every_steps!r} must be a non-negative '
        'integer (0: evaluate after each epoch only).')
  if not isinstance(config.seed, int) or isinstance(config.seed, bool):
    raise errors.UserError(f'seed={config.seed!r} must be an integer.')
  errors.check_choice('optimizer', config.optimizer, OPTIMIZERS)
  errors.check_choice('lr_schedule', config.lr_schedule, LR_SCHEDULES)
  errors.check_choice('weight_decay_style', config.weight_decay_style,
                      WEIGHT_DECAY_STYLES)
  boundaries = config.lr_boundaries
  if (not isinstance(boundaries, (tuple, list)) or
      not all(isinstance(b, (int, float)) and 0 < b < 1 for b in boundaries)
      or list(boundaries) != sorted(boundaries)):
    raise errors.UserError(
        f'lr_boundaries={boundaries!r} must be increasing fractions of the '
        'run, each between 0 and 1, e.g. "(0.5,0.75)".')
  errors.check_number('lr_decay_factor', config.lr_decay_factor, 0,
                      low_open=True)
  errors.check_number('label_smoothing', config.label_smoothing, 0, 1,
                      high_open=True)
  errors.check_choice('augment', config.augment, data_order.AUGMENTS)
  errors.check_choice('normalize', config.normalize, dataset_info.NORMALIZES)
  device_data.validate(config)
  _validate_steps_per_call(config.steps_per_call)
  if config.image_folder is not None and not isinstance(config.image_folder, str):
    raise errors.UserError(f'image_folder={config.image_folder!r} must be a path.')
  errors.check_choice('nonfinite', config.nonfinite, NONFINITE)
  errors.check_number('learning_rate', config.learning_rate, 0, low_open=True)
  errors.check_number('warmup_epochs', config.warmup_epochs, 0,
                      config.num_epochs)
  for field in ('b1', 'b2', 'momentum'):
    errors.check_number(field, config[field], 0, 1, high_open=True)
  errors.check_number('eps', config.eps, 0)
  errors.check_number('weight_decay', config.weight_decay, 0)
  errors.check_number('agc_clipping', config.agc_clipping, 0)
  for field in ('weight_decay_norms', 'weight_decay_biases', 'nesterov',
                'precise_bn_replaces_ema', 'download'):
    if not isinstance(config[field], bool):
      raise errors.UserError(f'{field}={config[field]!r} must be True or False.')
  models.validate(config.model)
  validate_analysis(config.analysis)

  modes = eval_stats_modes(config)
  if config.model.norm == 'ghost_batch':
    # Every batch a ghost batch norm normalizes in train mode.
    sizes = {'batch_size': config.batch_size}
    if 'batch' in modes:
      sizes['eval_batch_size'] = config.eval_batch_size
    if 'act' in analysis.enabled(config.analysis):
      sizes['analysis.probe_size'] = config.analysis.probe_size
    for field, size in sizes.items():
      norms.check_ghost_batch(config.model.virtual_batch_size, field, size)


def _validate_steps_per_call(value):
  if isinstance(value, bool) or not isinstance(value, int) or value < 0:
    raise errors.UserError(
        f'steps_per_call={value!r} must be a non-negative integer (0: auto, '
        'from the step time).')


def validate_analysis(cfg):
  if (isinstance(cfg.every_steps, bool) or not isinstance(cfg.every_steps, int)
      or cfg.every_steps < 0):
    raise errors.UserError(f'analysis.every_steps={cfg.every_steps!r} must be '
                           'a non-negative integer (0 = off).')
  for name in analysis.INSTRUMENTS:
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


# steps_per_call=0 (auto) aims for calls of this long, from the step time.
AUTO_CALL_SECONDS = 0.05
MAX_STEPS_PER_CALL = 1000


def auto_steps_per_call(step_seconds: float) -> int:
  return int(min(MAX_STEPS_PER_CALL,
                 max(1, round(AUTO_CALL_SECONDS / max(step_seconds, 1e-9)))))


def call_end(step: int, config, steps_per_epoch: int, num_steps: int,
             steps_per_call: int, instruments: bool) -> int:
  """Where the call of train steps starting at `step` ends: after
  steps_per_call steps, or earlier at the next step where the loop acts
  (a log, an eval, an instrument measurement, an epoch's end)."""
  def next_multiple(every):
    return (step // every + 1) * every
  ends = [step + steps_per_call, next_multiple(config.log_every_steps),
          next_multiple(steps_per_epoch), num_steps]
  if config.eval_every_steps:
    ends.append(next_multiple(config.eval_every_steps))
  if instruments:
    ends.append(next_multiple(config.analysis.every_steps))
  return min(ends)


def train_and_evaluate(config, workdir: str) -> TrainState:
  """Trains `config` in `workdir` (resuming if it holds checkpoints)."""
  validate(config)
  workdir = checkpoints.make_workdir(workdir)
  mesh = mesh_lib.make_mesh()
  mesh_lib.check_batch_size('batch_size', config.batch_size, mesh)
  mesh_lib.check_batch_size('eval_batch_size', config.eval_batch_size, mesh)
  steps_per_call = config.steps_per_call or 1  # auto: 1 until timed.
  feed = feeds.make_feed(config, mesh, steps_per_call)
  info = feed.info
  steps_per_epoch = feed.steps_per_epoch
  num_steps = config.num_epochs * steps_per_epoch
  model = models.create_model(config.model, info.num_classes, num_steps,
                              mesh.size)
  tx, schedule = make_optimizer(config, steps_per_epoch)

  state = create_train_state(config, model, info.image_shape, tx, mesh)
  repl = mesh_lib.replicated(mesh)
  train_metrics = jax.device_put(TrainMetrics.empty(), repl)
  ckpts = checkpoints.Checkpoints(str(workdir), config.max_checkpoints_to_keep)
  if ckpts.latest_step() is not None:
    # The metrics of steps not yet logged come back too, so a run resumed
    # between two log steps logs what an uninterrupted one would.
    state, saved_metrics = ckpts.restore(state, train_metrics, config)
    if saved_metrics is not None:
      train_metrics = saved_metrics
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
    _write_json(workdir, 'config.json', config.to_json_best_effort(indent=2))
    _write_json(workdir, 'dataset.json', {
        **info.__dict__, 'steps_per_epoch': steps_per_epoch})
  else:  # Only process 0 writes summaries and logs; the rest warn.
    logging.set_verbosity(logging.WARNING)
  writer = summaries.create_writer(str(workdir), just_logging=not is_chief)
  logging.info('Model (batch %d):\n%s', config.batch_size, models.summary(
      model, (config.batch_size, *info.image_shape)))

  skip_nonfinite = config.nonfinite == 'skip'
  steps = jit_steps(mesh, schedule, skip_nonfinite, config.label_smoothing,
                    config.seed)
  loop = jit_train_loop(
      mesh, schedule, feed.take, steps_per_epoch, skip_nonfinite,
      config.label_smoothing,
      cpu.steps_in_one_loop(mesh.devices.flat[0].platform, config.model),
      config.seed)
  modes = eval_stats_modes(config)
  precise = precise_bn.PreciseBN(model, mesh) if 'precise' in modes else None
  report = summaries.progress(num_steps, writer)
  instruments = analysis.enabled(config.analysis)
  if instruments:
    mesh_lib.check_batch_size('analysis.probe_size',
                              config.analysis.probe_size, mesh)
    measure = analysis.jit_measure(
        repl, mesh_lib.batch_sharding(mesh), instruments,
        config.analysis.smoothness_lr_multipliers,
        models.weight_layers(model, (1, *info.image_shape)),
        config.label_smoothing, config.seed)
    probe = feed.probe(config.analysis.probe_size)
    logging.info('Instruments every %d steps: %s.',
                 config.analysis.every_steps, ', '.join(instruments))
  logging.info('Training %d epochs of %d steps (batch %d) from step %d on %d '
               'devices; data %s.', config.num_epochs, steps_per_epoch,
               config.batch_size, step, mesh.size,
               'on the devices' if feed.on_device else 'from tf.data')
  calls = 0
  timing = loop_timing.LoopTiming()
  train_log = _TrainLog(writer, config, ckpts)
  try:
    with preemption.Preemption() as preempt:
      while step < num_steps:
        if preempt.requested(step):
          with timing.excluded(state):
            train_log.write()
            _stop_preempted(step, state, train_metrics, ckpts, writer)
        epoch, position = divmod(step, steps_per_epoch)
        end = call_end(step, config, steps_per_epoch, num_steps,
                       steps_per_call, bool(instruments))
        inputs = feed.inputs(epoch, position, end - step)
        if instruments and step % config.analysis.every_steps == 0:
          # Before the steps: measure() reads the state the call donates.
          with timing.excluded(state):
            train_log.write()
            writer.write_scalars(step, jax.device_get(measure(
                state, feed.batch(inputs, position), probe,
                float(schedule(step)))))
        timed = not config.steps_per_call and calls == 1
        if timed:  # auto: time the first call after the compiling one.
          jax.block_until_ready(state)
          start = time.perf_counter()
        state, train_metrics = loop(state, train_metrics, inputs, end - step)
        if timed:
          jax.block_until_ready(state)
          steps_per_call = auto_steps_per_call(
              (time.perf_counter() - start) / (end - step))
          feed.set_steps_per_call(steps_per_call)
          logging.info('steps_per_call=auto: %d.', steps_per_call)
        calls += 1
        train_log.write()  # The last log step's, while this call runs.
        timing.after_call(state, end - step)
        preempt.after_steps(step, end)
        step = end
        report(step)
        if step % config.log_every_steps == 0:
          train_log.add(step, train_metrics)
          train_metrics = jax.device_put(TrainMetrics.empty(), repl)
        if (config.eval_every_steps and step % config.eval_every_steps == 0
            and step % steps_per_epoch):  # Epoch ends evaluate below.
          with timing.excluded(state), report.timed('eval'):
            train_log.write()
            state = _evaluate_all(config, modes, precise, steps, state, feed,
                                  mesh, epoch, step, writer)
        if step % steps_per_epoch == 0:
          with timing.excluded(state):
            train_log.write()
            with report.timed('eval'):
              state = _evaluate_all(config, modes, precise, steps, state,
                                    feed, mesh, epoch, step, writer)
            writer.flush()
            if ((epoch + 1) % config.checkpoint_every_epochs == 0
                or epoch + 1 == config.num_epochs):
              with report.timed('checkpoint'):
                ckpts.save(step, state, train_metrics)
  finally:
    writer.flush()
    ckpts.close()
    writer.close()
    if is_chief:
      loop_timing.write(workdir, timing)
  return state
