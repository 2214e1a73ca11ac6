"""The train step: its sums and norms against float64 and optax, and calls
of several steps against steps one by one, bit for bit."""

import jax
import numpy as np
import optax
import pytest

from bn_study import errors
from bn_study import models
from bn_study.runtime import cpu
from bn_study.runtime import mesh as mesh_lib
from bn_study.training import losses
from bn_study.training import loop
from bn_study.training import steps as steps_lib
from bn_study.training import validate
from tests import helpers

# A pipeline over 256 training images (32 steps of 8) and 210 eval images.
NUM_TRAIN, NUM_EVAL = 256, 210


def test_global_norm_is_optax_global_norm():
  tree = {'a': jax.random.normal(jax.random.key(0), (37, 5)),
          'b': {'c': -jax.random.uniform(jax.random.key(1), (11,))}}
  np.testing.assert_allclose(jax.jit(cpu.global_norm)(tree),
                             optax.global_norm(tree), rtol=1e-6)


def _norm64(tree):
  """The global norm of a tree, summed in float64."""
  return np.sqrt(sum(np.sum(np.float64(x) ** 2) for x in jax.tree.leaves(tree)))


def test_update_norm_is_the_norm_of_the_applied_update():
  _, pipeline, mesh, _, state, steps = helpers.setup_tiny(NUM_TRAIN, NUM_EVAL)
  before = jax.device_get(state.params)
  state, metrics = steps.train(
      state, mesh_lib.global_batch(next(pipeline.train(0)), mesh),
      steps_lib.TrainMetrics.empty())
  after = jax.device_get(state.params)
  applied = _norm64(jax.tree.map(
      lambda a, b: np.float64(a) - np.float64(b), after, before))
  assert applied > 0
  np.testing.assert_allclose(float(metrics.compute()['update_norm']), applied,
                             rtol=1e-5)


def test_cpu_train_step_sums_without_tree_reductions():
  _, pipeline, mesh, _, state, steps = helpers.setup_tiny(NUM_TRAIN, NUM_EVAL)
  batch = mesh_lib.global_batch(next(pipeline.train(0)), mesh)
  assert cpu.compiler_options('gpu') is None
  if mesh.devices.flat[0].platform != 'cpu':
    pytest.skip('the tree reduction pass is turned off on CPU only')
  hlo = steps.train.lower(state, batch,
                          steps_lib.TrainMetrics.empty()).compile().as_text()
  assert 'reduce-window' not in hlo


def test_train_step_sums_match_float64():
  """The step's large sums (BN statistics over 512 x 32 x 32 pixels, the
  norms) are each one float32 reduction on CPU: as accurate as float64
  to 1e-5."""
  config, _, mesh, model, state, steps = helpers.setup_tiny(NUM_TRAIN, NUM_EVAL)
  rng = np.random.default_rng(0)
  images = rng.normal(100, 50, (512, 32, 32, 3)).astype(np.float32)
  batch = {'image': images, 'label': rng.integers(0, 10, 512)}
  params = jax.device_get(state.params)
  # Jitted: eagerly, each of the gradient's ~400 operations compiles alone.
  grads = jax.device_get(jax.jit(jax.grad(lambda p: losses.cross_entropy(
      model.apply(models.variables(p, state.batch_stats), images,
                  train=True, mutable=['batch_stats'])[0],
      batch['label']).mean()))(state.params))
  old_mean = jax.device_get(state.batch_stats['conv1_norm']['mean'])
  new, metrics = steps.train(state, mesh_lib.global_batch(batch, mesh),
                             steps_lib.TrainMetrics.empty())
  values = metrics.compute()
  np.testing.assert_allclose(values['param_norm'], _norm64(params), rtol=1e-5)
  np.testing.assert_allclose(values['grad_norm'], _norm64(grads), rtol=1e-5)
  # The input norm's running mean moved 1 - bn_momentum toward the batch mean.
  momentum = config.model.bn_momentum
  expected = (1 - momentum) * np.float64(images).mean(axis=(0, 1, 2))
  np.testing.assert_allclose(
      new.batch_stats['conv1_norm']['mean'] - np.float64(old_mean) * momentum,
      expected, rtol=1e-5)


# The data on the device or fed by tf.data, steps in one XLA loop or one by
# one, and a norm that draws noise each step.
@pytest.mark.parametrize('data_on_device,conv_impl,norm', [
    ('off', 'xla', 'batch'), ('on', 'im2col', 'noisy_batch')])
def test_steps_per_call_1_and_7_give_bit_identical_runs(
    learnable_data_dir, tmp_path, data_on_device, conv_impl, norm):
  # im2col: one XLA loop per call; xla on CPU: steps dispatched one by one
  # (cpu.steps_in_one_loop).
  # 8 steps per epoch, logged every 8: calls of 7 and 1 steps; instruments
  # every 4 steps cut calls too, and every step is logged per call boundary.
  # Noisy BN's noise is a function of the seed and the step alone. ICS and
  # the norms stand for the instruments: where a call ends does not depend on
  # which are on, and act and smoothness would double measure's compile.
  # main.py processes compiled as users compile: the session's faster
  # fusion emitters round a loop of 7 steps and one step differently.
  env = helpers.env_with_xla_emitters()
  flags = [f'--config.dataset={helpers.LEARNABLE}',
           f'--config.data_dir={learnable_data_dir}',
           '--config.log_every_steps=8', '--config.augment=crop_flip',
           f'--config.data_on_device={data_on_device}',
           f'--config.model.conv_impl={conv_impl}']
  instrumented = ['--config.eval_stats=ema,precise',
                  '--config.analysis.every_steps=4',
                  '--config.analysis.probe_size=8',
                  '--config.analysis.act=False',
                  '--config.analysis.smoothness=False']
  runs = {}
  for n in (1, 7):
    proc = helpers.run_main(tmp_path / str(n), *flags, *instrumented,
                            f'--config.model.norm={norm}',
                            f'--config.steps_per_call={n}', env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs[n] = helpers.final_result(tmp_path / str(n))
  helpers.assert_same_result(runs[7], runs[1])
  scalars = runs[1][2]
  assert 'train/loss' in scalars
  assert any(t.startswith('ics/') for t in scalars)
  if norm == 'noisy_batch':  # The train step does draw the noise.
    proc = helpers.run_main(tmp_path / 'bn', *flags,
                            '--config.model.norm=batch',
                            '--config.steps_per_call=7', env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    params = "['params']['conv1']['kernel']"
    assert not np.allclose(runs[1][1][params],
                           helpers.final_result(tmp_path / 'bn')[1][params])


def test_steps_per_call_auto_and_bad_values(tmp_path):
  assert loop.auto_steps_per_call(1e-4) == 500
  assert loop.auto_steps_per_call(1.0) == 1
  assert loop.auto_steps_per_call(1e-9) == loop.MAX_STEPS_PER_CALL
  for bad in (-1, True):
    with pytest.raises(errors.UserError, match='steps_per_call'):
      validate.validate(helpers.tiny_config(steps_per_call=bad))
  with pytest.raises(errors.UserError, match="data_on_device='yes'.*allowed"):
    validate.validate(helpers.tiny_config(data_on_device='yes'))


def test_calls_end_where_the_loop_acts():
  config = helpers.tiny_config(log_every_steps=10, eval_every_steps=25,
                               **{'analysis.every_steps': 7})
  end = lambda step, n: loop.call_end(step, config, 40, 100, n, True)
  assert end(0, 1000) == 7  # Instruments.
  assert end(7, 1000) == 10  # Log.
  assert end(20, 1000) == 21  # Instruments at 21.
  assert end(21, 3) == 24  # steps_per_call.
  assert end(21, 1000) == 25  # Eval.
  assert end(35, 1000) == 40  # Epoch end (instruments at 35 measured before).
  assert end(98, 1000) == 100  # The run's end.
