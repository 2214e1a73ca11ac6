"""The train loop: `train_and_evaluate(config, workdir)`, the library entry
point that main.py, tests and notebooks call. Relaunching with the same
workdir resumes from the latest checkpoint; a finished run is left as it is.
"""

import json
import time

from absl import logging
import jax
import numpy as np

from bn_study import errors
from bn_study import models
from bn_study import workdir as workdir_lib
from bn_study.data import feeds
from bn_study.runtime import cpu
from bn_study.runtime import malloc
from bn_study.runtime import mesh as mesh_lib
from bn_study.training import checkpoints
from bn_study.training import conv_choice
from bn_study.training import data_init
from bn_study.training import evaluator
from bn_study.training import instruments
from bn_study.training import loop_timing
from bn_study.training import optim
from bn_study.training import preemption
from bn_study.training import run_summary
from bn_study.training import steps as steps_lib
from bn_study.training import summaries
from bn_study.training import validate as validate_lib


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

  def add(self, step: int, train_metrics: steps_lib.TrainMetrics):
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


def train_and_evaluate(config, workdir: str) -> steps_lib.TrainState:
  """Trains `config` in `workdir` (resuming if it holds checkpoints)."""
  launched = time.perf_counter()
  validate_lib.validate(config)
  workdir = checkpoints.make_workdir(workdir)
  mesh = mesh_lib.make_mesh()
  mesh_lib.check_batch_size('batch_size', config.batch_size, mesh)
  mesh_lib.check_batch_size('eval_batch_size', config.eval_batch_size, mesh)
  steps_per_call = config.steps_per_call or 1  # auto: 1 until timed.
  feed = feeds.make_feed(config, mesh, steps_per_call)
  info = feed.info
  steps_per_epoch = feed.steps_per_epoch
  num_steps = workdir_lib.run_steps(config.num_epochs, steps_per_epoch)
  conv = conv_choice.choose(config, mesh, info.image_shape, info.num_classes,
                            workdir)
  logging.info('Convolutions: %s (%s).', conv.conv_impl, conv.why)
  model_config = conv_choice.resolved(config, conv)
  model = models.create_model(model_config, info.num_classes, num_steps,
                              mesh.size)
  tx, schedule = optim.make_optimizer(config, steps_per_epoch)

  state = steps_lib.create_train_state(config, model, info.image_shape, tx,
                                       mesh)
  repl = mesh_lib.replicated(mesh)
  train_metrics = jax.device_put(steps_lib.TrainMetrics.empty(), repl)
  state = data_init.fit(state, config, feed, workdir, mesh)
  malloc.release_free_memory()  # What setting up freed, not kept for the run.
  ckpts = checkpoints.Checkpoints(str(workdir), config.max_checkpoints_to_keep)
  state, train_metrics = _resume(ckpts, state, train_metrics, config)
  step = int(state.step)
  if step >= num_steps:
    logging.info('Already trained %d steps of %d; nothing to do.', step,
                 num_steps)
    ckpts.close()
    return state

  is_chief = jax.process_index() == 0
  if is_chief:
    (workdir / workdir_lib.CONFIG).write_text(
        config.to_json_best_effort(indent=2))
    (workdir / workdir_lib.DATASET).write_text(json.dumps(
        {**info.__dict__, 'steps_per_epoch': steps_per_epoch}, indent=2))
  else:  # Only process 0 writes summaries and logs; the rest warn.
    logging.set_verbosity(logging.WARNING)
  writer = summaries.create_writer(str(workdir), just_logging=not is_chief)
  logging.info('Model (batch %d):\n%s', config.batch_size, models.summary(
      model, (config.batch_size, *info.image_shape)))

  skip_nonfinite = config.nonfinite == 'skip'
  steps = steps_lib.jit_steps(mesh, schedule, skip_nonfinite,
                              config.label_smoothing, config.seed,
                              config.tta_level)
  loop = steps_lib.jit_train_loop(
      mesh, schedule, feed.take, steps_per_epoch, skip_nonfinite,
      config.label_smoothing,
      cpu.steps_in_one_loop(mesh.devices.flat[0].platform, model_config),
      config.seed)
  evaluate = evaluator.Evaluator(config, model, mesh, steps, feed)
  measure = _Measure(config, model, mesh, feed, info.image_shape)
  report = summaries.progress(num_steps, writer)
  logging.info('Training %g epochs of %d steps (batch %d) from step %d on %d '
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
                       steps_per_call, bool(measure.enabled))
        inputs = feed.inputs(epoch, position, end - step)
        if measure.enabled and step % config.analysis.every_steps == 0:
          # Before the steps: measure() reads the state the call donates.
          with timing.excluded(state):
            train_log.write()
            writer.write_scalars(step, measure(
                state, feed.batch(inputs, position), float(schedule(step))))
        timed = not config.steps_per_call and calls == 1
        if timed:  # auto: time the first call after the compiling one.
          jax.block_until_ready(state)
          start = time.perf_counter()
        state, train_metrics = loop(state, train_metrics, inputs, end - step)
        if timed:
          jax.block_until_ready(state)
          # Process 0's timing: each process's own could choose calls of
          # different lengths, and pair one's collectives with another's
          # from a different step.
          steps_per_call = auto_steps_per_call(mesh_lib.process_0s(
              (time.perf_counter() - start) / (end - step)))
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
          train_metrics = jax.device_put(steps_lib.TrainMetrics.empty(), repl)
        # A fractional num_epochs ends the run within an epoch: that counts
        # as the end of one.
        epoch_end = step % steps_per_epoch == 0 or step == num_steps
        if epoch_end or (config.eval_every_steps
                         and step % config.eval_every_steps == 0):
          with timing.excluded(state):
            train_log.write()
            with report.timed('eval'):
              state = evaluate(state, epoch, step, writer,
                               final=step == num_steps)
            if epoch_end:
              writer.flush()
              if ((epoch + 1) % config.checkpoint_every_epochs == 0
                  or step == num_steps):
                with report.timed('checkpoint'):
                  ckpts.save(step, state, train_metrics)
  finally:
    writer.flush()
    ckpts.close()
    writer.close()
    if is_chief:
      loop_timing.write(workdir, timing)
  if is_chief and evaluate.last:
    print(run_summary.text(str(workdir), evaluate.last, config.num_epochs,
                           num_steps, time.perf_counter() - launched, config),
          flush=True)
  return state


def _resume(ckpts, state, train_metrics, config):
  """The latest checkpoint's state and unlogged train metrics, if any."""
  if ckpts.latest_step() is None:
    return state, train_metrics
  # The metrics of steps not yet logged come back too, so a run resumed
  # between two log steps logs what an uninterrupted one would.
  state, saved_metrics = ckpts.restore(state, train_metrics, config)
  logging.info('Resumed from %s at step %d.', ckpts.directory, int(state.step))
  return state, train_metrics if saved_metrics is None else saved_metrics


class _Measure:
  """The instruments config.analysis turns on, compiled once, measured on
  a batch and the fixed probe; `enabled` is empty when none are on."""

  def __init__(self, config, model, mesh, feed, image_shape):
    self.enabled = instruments.enabled(config.analysis)
    if not self.enabled:
      return
    mesh_lib.check_batch_size('analysis.probe_size',
                              config.analysis.probe_size, mesh)
    self._measure = instruments.jit_measure(
        mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh),
        self.enabled, config.analysis.smoothness_lr_multipliers,
        models.weight_layers(model, (1, *image_shape)),
        config.label_smoothing, config.seed)
    self._probe = feed.probe(config.analysis.probe_size)
    logging.info('Instruments every %d steps: %s.',
                 config.analysis.every_steps, ', '.join(self.enabled))

  def __call__(self, state, batch, learning_rate: float):
    return jax.device_get(self._measure(state, batch, self._probe,
                                        learning_rate))
