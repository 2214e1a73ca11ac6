"""Evaluation in each of config.eval_stats' modes: with the running averages
(ema), with PreciseBN's population statistics (precise), with each eval
batch's own statistics (batch), or with the running averages over
test-time augmentation's views (tta: tta.py, at tta_level; at the run's
end only, since it costs tta's forward passes several times over)."""

from absl import logging
import jax

from bn_study import errors
from bn_study.runtime import mesh as mesh_lib
from bn_study.training import precise_bn
from bn_study.training import steps as steps_lib

# eval_stats mode -> the prefix of its scalars.
EVAL_STATS = {'ema': 'eval', 'precise': 'eval_precise', 'batch': 'eval_batch',
              'tta': 'eval_tta'}


def eval_stats_modes(config):
  """The eval_stats modes in the order given, validated."""
  modes = [m.strip() for m in str(config.eval_stats).split(',') if m.strip()]
  if not modes or len(set(modes)) != len(modes) or not set(modes) <= set(
      EVAL_STATS):
    raise errors.UserError(
        f'eval_stats={config.eval_stats!r} must be a comma-separated, '
        f'non-empty subset of: {", ".join(EVAL_STATS)}.')
  return modes


def evaluate(p_eval, state, batches, mesh) -> dict:
  """Eval metrics over `batches` (global; a feed's eval(): every example of
  the eval split, exactly once)."""
  eval_metrics = jax.device_put(steps_lib.EvalMetrics.empty(),
                                mesh_lib.replicated(mesh))
  for batch in batches:
    eval_metrics = p_eval(state, batch, eval_metrics)
  result = eval_metrics.compute()
  result['count'] = eval_metrics.accuracy.count  # Examples evaluated.
  return jax.device_get(result)


class Evaluator:
  """Evaluates a state in every eval_stats mode and writes
  `<prefix>/{loss,accuracy}` for each."""

  def __init__(self, config, model, mesh, steps: steps_lib.Steps, feed):
    self.modes = eval_stats_modes(config)
    self._config, self._mesh, self._steps, self._feed = (
        config, mesh, steps, feed)
    self._precise = (precise_bn.PreciseBN(model, mesh)
                     if 'precise' in self.modes else None)
    self.last = {}  # {prefix: {'accuracy', 'loss'}} of the latest eval.

  def __call__(self, state, epoch: int, step: int, writer,
               final: bool = True):
    """The state, with PreciseBN's statistics in it only when
    `precise_bn_replaces_ema` asks for that. `final`: the run's last eval,
    the only one with tta."""
    steps, feed, mesh = self._steps, self._feed, self._mesh
    scalars, precise_stats = {}, None
    for mode in self.modes:
      if mode == 'tta' and not final:
        continue
      if mode == 'tta':
        result = evaluate(steps.eval_tta, state, feed.eval(), mesh)
      elif mode == 'batch':
        result = evaluate(steps.eval_batch, state, feed.eval(), mesh)
      elif mode == 'precise':
        # The epoch's own batches, continuing into later epochs if K > 1 epoch.
        precise_stats = self._precise(state, feed.batches(epoch),
                                      self._config.precise_bn_batches)
        result = evaluate(steps.eval, state.replace(batch_stats=precise_stats),
                          feed.eval(), mesh)
      else:
        result = evaluate(steps.eval, state, feed.eval(), mesh)
      prefix = EVAL_STATS[mode]
      self.last[prefix] = {k: float(result[k]) for k in ('accuracy', 'loss')}
      scalars.update({f'{prefix}/loss': result['loss'],
                      f'{prefix}/accuracy': result['accuracy']})
      logging.info('epoch %d step %d: %s accuracy %.4f loss %.4f (%d '
                   'examples)', epoch + 1, step, prefix, result['accuracy'],
                   result['loss'], result['count'])
    writer.write_scalars(step, scalars)
    if precise_stats is not None and self._config.precise_bn_replaces_ema:
      state = state.replace(batch_stats=precise_stats)
    return state
