"""train_and_evaluate end to end on mock data, and BN state handling."""

import json
import os

from clu import metric_writers
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from bn_study.training import checkpoints
from bn_study import errors
from bn_study.data import feeds
from bn_study.data import input_pipeline
from bn_study.runtime import mesh as mesh_lib
from bn_study import models
from bn_study.models import norms
from bn_study.training import evaluator
from bn_study.training import optim
from bn_study.training import steps as steps_lib
from bn_study.training import loop
from bn_study.training import run_summary
from configs import airbench94
from tests import helpers

# 64 training images = 8 steps of 8 per epoch; 21 eval images = 3 batches,
# the last padded.
NUM_TRAIN, NUM_EVAL = 64, 21


def _train(workdir, **overrides):
  return helpers.train_tiny(workdir, NUM_TRAIN, NUM_EVAL, **overrides)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A finished 2-epoch tiny run: (workdir, final state)."""
  workdir = tmp_path_factory.mktemp('run')
  return workdir, _train(workdir)


def test_run_writes_config_events_and_checkpoints(run):
  workdir, state = run
  assert int(state.step) == 16
  config = json.loads((workdir / 'config.json').read_text())
  assert config['model']['norm'] == 'batch' and config['batch_size'] == 8
  scalars = helpers.read_scalars(str(workdir))
  assert [s for s, _ in scalars['train/loss']] == list(range(1, 17))
  assert [s for s, _ in scalars['eval/accuracy']] == [8, 16]
  assert [s for s, _ in scalars['eval/loss']] == [8, 16]
  for tag in ('train/accuracy', 'train/learning_rate', 'train/param_norm',
              'train/grad_norm', 'train/update_norm'):
    assert len(scalars[tag]) == 16, tag
  assert scalars['train/learning_rate'][0][1] == pytest.approx(1e-3)
  assert all(np.isfinite(v) for _, v in scalars['train/loss'])
  assert checkpoints.Checkpoints(str(workdir)).latest_step() == 16
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['16', '8']


def test_relaunching_a_finished_run_changes_nothing(run):
  workdir, state = run
  before = {p: os.path.getmtime(workdir / p) for p in os.listdir(workdir)}
  again = _train(workdir)
  assert {p: os.path.getmtime(workdir / p) for p in os.listdir(workdir)} == before
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(again.params)):
    np.testing.assert_array_equal(a, b)


def test_resume_continues_exactly_where_it_stopped(tmp_path, run):
  _, straight = run
  _train(tmp_path, num_epochs=1)
  assert checkpoints.Checkpoints(str(tmp_path)).latest_step() == 8
  resumed = _train(tmp_path, num_epochs=2)
  assert int(resumed.step) == 16
  for a, b in zip(jax.tree.leaves((straight.params, straight.batch_stats,
                                   straight.opt_state)),
                  jax.tree.leaves((resumed.params, resumed.batch_stats,
                                   resumed.opt_state))):
    np.testing.assert_array_equal(a, b)
  # No epoch was redone: one eval per epoch, each at its own step.
  steps = [s for s, _ in helpers.read_scalars(str(tmp_path))['eval/accuracy']]
  assert steps == [8, 16]


def test_airbench_through_the_tf_data_feed_keeps_its_whitening_fit(
    tmp_path, caplog):
  # airbench94's recipe at width 8, fed by tf.data (HostFeed: calls of 3
  # steps, an epoch's last call padded to the stack; XLA's convs, so on CPU
  # each step taken from the stack in turn), with the instruments on their
  # probe, in this process: the whitening fit to the feed's first images is
  # kept in data_init.npz, trains frozen, and a resumed run reads it back
  # instead of fitting again.
  config = airbench94.get_config()
  config.update_from_flattened_dict({
      'model.width': 8, 'batch_size': 8, 'eval_batch_size': 7,
      'num_epochs': 2.0, 'model.whiten_bias_epochs': 1, 'log_every_steps': 4,
      'data_on_device': 'off', 'steps_per_call': 3, 'model.conv_impl': 'xla',
      'analysis.every_steps': 8, 'analysis.probe_size': 8,
      'analysis.ics': False, 'analysis.smoothness': False})
  with helpers.mock_learnable(NUM_TRAIN, NUM_EVAL):
    loop.train_and_evaluate(config, str(tmp_path))
    config.num_epochs = 2.5
    with caplog.at_level('INFO'):
      state = loop.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 20
  assert f'Data-fit params from {tmp_path / "data_init.npz"}' in caplog.text
  with np.load(tmp_path / 'data_init.npz') as fit:
    np.testing.assert_array_equal(
        jax.device_get(state.params['whiten']['kernel']), fit['whiten/kernel'])
  scalars = helpers.read_scalars(str(tmp_path))
  assert [s for s, _ in scalars['eval/accuracy']] == [8, 16, 20]
  # TTA only at each run's end.
  assert [s for s, _ in scalars['eval_tta/accuracy']] == [16, 20]
  assert all(0 <= a <= 1 for _, a in scalars['eval_tta/accuracy'])
  assert any(t.startswith('act/') for t in scalars)


def _setup(**overrides):
  return helpers.setup_tiny(NUM_TRAIN * 4, NUM_EVAL * 10, **overrides)


def _fit(state, pipeline, mesh, p_train, epochs):
  metrics = steps_lib.TrainMetrics.empty()
  for epoch in range(epochs):
    for batch in pipeline.train(epoch):
      state, metrics = p_train(state, mesh_lib.global_batch(batch, mesh),
                               metrics)
  return state


def test_training_updates_batch_stats_and_eval_leaves_them():
  _, pipeline, mesh, _, state, steps = _setup()
  p_train, p_eval = steps.train, steps.eval
  initial = jax.device_get(state.batch_stats)
  state = _fit(state, pipeline, mesh, p_train, 1)
  trained = jax.device_get(state.batch_stats)
  for layer, stats in initial.items():
    assert not np.allclose(stats['mean'], trained[layer]['mean']), layer
    assert not np.allclose(stats['var'], trained[layer]['var']), layer
  result = evaluator.evaluate(p_eval, state, helpers.eval_batches(pipeline, mesh), mesh)
  assert result['count'] == NUM_EVAL * 10
  jax.tree.map(np.testing.assert_array_equal, trained,
               jax.device_get(state.batch_stats))


def test_wobn_trains_without_batch_stats():
  _, pipeline, mesh, _, state, steps = _setup(**{'model.norm': 'none'})
  p_train, p_eval = steps.train, steps.eval
  assert state.batch_stats == {}
  state = _fit(state, pipeline, mesh, p_train, 1)
  assert state.batch_stats == {}
  assert 0 <= evaluator.evaluate(p_eval, state, helpers.eval_batches(pipeline, mesh), mesh)['accuracy'] <= 1


def test_eval_with_running_averages_matches_train_mode():
  """The seed's failure: its eval ignored the BN updates and sat at chance."""
  _, pipeline, mesh, model, state, steps = _setup(
      **{'model.bn_momentum': 0.9, 'batch_size': 32, 'eval_batch_size': 32,
         'learning_rate': 3e-3})
  p_train, p_eval = steps.train, steps.eval
  initial_stats = jax.device_get(state.batch_stats)  # The step donates state.
  state = _fit(state, pipeline, mesh, p_train, 10)

  @jax.jit
  def train_mode_correct(state, batch):
    logits, _ = model.apply(
        {'params': state.params, 'batch_stats': state.batch_stats},
        batch['image'], train=True, mutable=['batch_stats'])
    return ((logits.argmax(-1) == batch['label']) * batch['mask']).sum()

  batches = list(pipeline.eval())
  train_mode = sum(float(train_mode_correct(state, b)) for b in batches[:-1])
  train_mode /= sum(b['mask'].sum() for b in batches[:-1])
  ema = evaluator.evaluate(p_eval, state, helpers.eval_batches(pipeline, mesh), mesh)['accuracy']
  stale = evaluator.evaluate(p_eval, state.replace(batch_stats=initial_stats), helpers.eval_batches(pipeline, mesh), mesh)['accuracy']
  assert train_mode > 0.9, train_mode
  assert ema > train_mode - 0.05, (ema, train_mode)
  # Eval with statistics that were never updated is what the seed did; it
  # must be far worse, or this test could not catch the seed's bug.
  assert stale < ema - 0.3, (stale, ema)


@pytest.mark.parametrize('dataset,image_shape,num_classes', [
    ('mnist', (28, 28, 1), 10), ('fashion_mnist', (28, 28, 1), 10),
    ('cifar100', (32, 32, 3), 100)])
def test_other_tfds_image_datasets(dataset, image_shape, num_classes):
  config = helpers.tiny_config(dataset=dataset)
  with tfds.testing.mock_data(num_examples=20):
    pipeline = input_pipeline.Pipeline(config)
  assert pipeline.info.image_shape == image_shape
  assert pipeline.info.num_classes == num_classes
  mesh = mesh_lib.make_mesh()
  model = models.create_model(config.model, num_classes)
  tx, schedule = optim.make_optimizer(config, pipeline.steps_per_epoch)
  state = steps_lib.create_train_state(config, model, image_shape, tx, mesh)
  steps = steps_lib.jit_steps(mesh, schedule)
  p_train, p_eval = steps.train, steps.eval
  state = _fit(state, pipeline, mesh, p_train, 1)
  assert int(state.step) == 2
  assert evaluator.evaluate(p_eval, state, helpers.eval_batches(pipeline, mesh), mesh)['count'] == 20


# Each normalizer once and each placement twice; main.py ran the full grid
# (see README).
@pytest.mark.parametrize('norm,placement', [
    ('none', 'input'), ('batch', 'pre_act'), ('ghost_batch', 'post_act'),
    ('batch_renorm', 'input'), ('group', 'pre_act'), ('layer', 'post_act')])
def test_every_norm_trains_and_evaluates_in_every_eval_mode(tmp_path, norm,
                                                            placement, capsys):
  state = _train(tmp_path, num_epochs=1, eval_stats='ema,precise,batch',
                 precise_bn_batches=2,
                 **{'model.norm': norm, 'model.placement': placement,
                    'model.virtual_batch_size': 4, 'model.num_groups': 2})
  assert int(state.step) == 8
  scalars = helpers.read_scalars(str(tmp_path))
  summary = capsys.readouterr().out  # The run's last words, one per mode.
  assert 'Finished 1 epochs (8 steps) in ' in summary
  assert f'tensorboard --logdir={tmp_path}' in summary
  for prefix in ('eval', 'eval_precise', 'eval_batch'):
    for metric in ('loss', 'accuracy'):
      (step, value), = scalars[f'{prefix}/{metric}']
      assert step == 8 and np.isfinite(value), (prefix, metric)
    assert f'{scalars[prefix + "/accuracy"][0][1]:.4f}  (loss ' in summary
  assert bool(state.batch_stats) == (norm in norms.BATCH_NORMS)


def test_precise_bn_leaves_the_running_averages_unless_asked():
  config, pipeline, mesh, model, state, steps = _setup(precise_bn_batches=3)
  state = _fit(state, pipeline, mesh, steps.train, 1)
  ema = jax.device_get(state.batch_stats)
  writer = metric_writers.LoggingWriter()
  feed = feeds.HostFeed(pipeline, mesh, 1)
  config.eval_stats = 'ema,precise'
  kept = evaluator.Evaluator(config, model, mesh, steps, feed)(
      state, 0, 32, writer)
  jax.tree.map(np.testing.assert_array_equal, ema,
               jax.device_get(kept.batch_stats))
  config.eval_stats = 'precise'
  config.precise_bn_replaces_ema = True
  replaced = evaluator.Evaluator(config, model, mesh, steps, feed)(
      state, 0, 32, writer)
  precise = jax.device_get(replaced.batch_stats)
  assert not np.allclose(ema['conv1_norm']['mean'],
                         precise['conv1_norm']['mean'])
  # PreciseBN's mean of the raw pixels is the mean over its 3 batches.
  images = np.concatenate([b['image'] for b in list(pipeline.train(0))[:3]])
  np.testing.assert_allclose(precise['conv1_norm']['mean'],
                             images.mean((0, 1, 2)), rtol=1e-5)


def test_divergence_stops_with_a_message_and_keeps_the_checkpoint(tmp_path):
  sgd = {'optimizer': 'sgd', 'model.norm': 'none'}
  _train(tmp_path, num_epochs=1, learning_rate=0.01, **sgd)  # Good: step 8.
  with pytest.raises(errors.TrainingDiverged,
                     match=r'not finite at step 1\d .*learning_rate=1e\+30'
                     r'.*checkpoint \(step 8\) is intact'):
    _train(tmp_path, num_epochs=2, learning_rate=1e30, **sgd)
  assert checkpoints.Checkpoints(str(tmp_path)).latest_step() == 8
  # Diverging before the first checkpoint says there is none.
  with pytest.raises(errors.TrainingDiverged,
                     match='No checkpoint was written before it'):
    _train(tmp_path / 'fresh', num_epochs=1, learning_rate=1e30, **sgd)


def test_skip_nonfinite_leaves_the_state_as_it_was():
  _, pipeline, mesh, _, state, _ = _setup()
  config = helpers.tiny_config()
  _, schedule = optim.make_optimizer(config, pipeline.steps_per_epoch)
  steps = steps_lib.jit_steps(mesh, schedule, skip_nonfinite=True)
  batch = next(pipeline.train(0))
  bad = dict(batch, image=np.full_like(batch['image'], np.nan))
  before = jax.device_get((state.params, state.opt_state, state.batch_stats))
  state, metrics = steps.train(state, mesh_lib.global_batch(bad, mesh),
                               steps_lib.TrainMetrics.empty())
  assert int(state.step) == 1
  jax.tree.map(np.testing.assert_array_equal, before,
               jax.device_get((state.params, state.opt_state,
                               state.batch_stats)))
  values = metrics.compute()
  assert float(values['nonfinite_steps']) == 1.0
  assert np.isfinite(float(values['loss']))
  state, metrics = steps.train(state, mesh_lib.global_batch(batch, mesh),
                               metrics)
  assert float(metrics.compute()['nonfinite_steps']) == 0.5
  assert not np.array_equal(before[0]['conv1']['kernel'],
                            jax.device_get(state.params['conv1']['kernel']))


def test_resuming_with_another_model_says_what_to_do(tmp_path):
  _train(tmp_path, num_epochs=1)
  with pytest.raises(errors.UserError, match='fits this config') as e:
    _train(tmp_path, num_epochs=2, **{'model.norm': 'none'})
  # It names what differs from the config.json beside the checkpoints.
  assert (f'this config differs from {tmp_path / "config.json"} in 2 '
          "field(s): model.norm: 'batch' there, 'none' here; num_epochs: 1 "
          'there, 2 here.') in str(e.value)
  # A mismatch is not damage: the checkpoint stays where it was.
  assert checkpoints.Checkpoints(str(tmp_path)).latest_step() == 8
  assert not list((tmp_path / 'checkpoints').glob('*.unreadable'))


@pytest.mark.parametrize('where', ['eval', 'checkpoint'])
def test_a_crash_in_eval_or_checkpointing_loses_nothing_before_it(
    tmp_path, monkeypatch, where):
  if where == 'eval':
    real = evaluator.Evaluator.__call__

    def crash_in_epoch_2(self, state, epoch, *args, **kwargs):
      if epoch == 1:
        raise RuntimeError('eval crashed')
      return real(self, state, epoch, *args, **kwargs)

    monkeypatch.setattr(evaluator.Evaluator, '__call__', crash_in_epoch_2)
  else:
    real = checkpoints.Checkpoints.save

    def crash_at_step_16(self, step, *args):
      if step == 16:
        raise OSError('disk full')
      return real(self, step, *args)

    monkeypatch.setattr(checkpoints.Checkpoints, 'save', crash_at_step_16)
  with pytest.raises((RuntimeError, OSError)):
    _train(tmp_path, num_epochs=3)
  assert checkpoints.Checkpoints(str(tmp_path)).latest_step() == 8
  scalars = helpers.read_scalars(str(tmp_path))
  # Every train/ write before the crash reached the event file.
  assert [s for s, _ in scalars['train/loss']] == list(range(1, 17))
  assert [s for s, _ in scalars['eval/accuracy']] == (
      [8] if where == 'eval' else [8, 16])


def test_eval_every_steps_adds_evals_between_epochs(tmp_path):
  _train(tmp_path, eval_every_steps=3)
  steps = [s for s, _ in helpers.read_scalars(str(tmp_path))['eval/accuracy']]
  assert steps == [3, 6, 8, 9, 12, 15, 16]


def test_the_summary_explains_a_wide_gap_between_ema_and_precise():
  config = helpers.tiny_config()
  last = {'eval': {'accuracy': 0.30, 'loss': 2.0},
          'eval_precise': {'accuracy': 0.55, 'loss': 1.3}}
  text = run_summary.text('runs/x', last, 20, 1000, 600.0, config)
  assert 'Finished 20 epochs (1000 steps) in 10.0 min; workdir runs/x' in text
  assert 'The running averages lag the weights (0.25 below PreciseBN)' in text
  assert run_summary.LAG_DOC in text
  last['eval_precise']['accuracy'] = 0.35  # Within noise: nothing to explain.
  assert 'lag' not in run_summary.text('runs/x', last, 20, 1000, 1.0, config)
  last['eval_precise']['accuracy'] = 0.15
  assert 'precise_bn_batches=' in run_summary.text('runs/x', last, 20, 1000,
                                                   1.0, config)
