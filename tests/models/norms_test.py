"""Every normalizer against an independent numpy reference, and PreciseBN."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bn_study import errors
from bn_study.runtime import mesh as mesh_lib
from bn_study import models
from bn_study.models import norms
from bn_study.training import precise_bn
from bn_study.training import optim
from bn_study.training import validate
from tests import helpers
from tests.models import norm_fixtures as fx

EPS, MOMENTUM, SHAPES = fx.EPS, fx.MOMENTUM, fx.SHAPES
Wrap, _cfg, _variables = fx.Wrap, fx.cfg, fx.variables


def _x(shape, seed=1):
  return fx.inputs(shape, seed, loc=2.0, scale=3.0)


# Numpy references, written from the papers' definitions.

def _stat_axes(x):
  return tuple(range(x.ndim - 1))


def ref_batch(x, p, s):
  m, var = x.mean(_stat_axes(x)), x.var(_stat_axes(x))
  y = (x - m) / np.sqrt(var + EPS) * p['scale'] + p['bias']
  new = {'mean': MOMENTUM * s['mean'] + (1 - MOMENTUM) * m,
         'var': MOMENTUM * s['var'] + (1 - MOMENTUM) * var}
  y_eval = (x - s['mean']) / np.sqrt(s['var'] + EPS) * p['scale'] + p['bias']
  return y, new, y_eval


def ref_ghost(x, p, s, size=4):
  y = np.concatenate([ref_batch(x[i:i + size], p, s)[0]
                      for i in range(0, len(x), size)])
  _, new, y_eval = ref_batch(x, p, s)  # Averages track the whole batch.
  return y, new, y_eval


def ref_renorm(x, p, s, r_max, d_max):
  m, var = x.mean(_stat_axes(x)), x.var(_stat_axes(x))
  sigma_b = np.sqrt(var + EPS)
  r = np.clip(sigma_b / s['std'], 1 / r_max, r_max)
  d = np.clip((m - s['mean']) / s['std'], -d_max, d_max)
  y = ((x - m) / sigma_b * r + d) * p['scale'] + p['bias']
  new = {'mean': MOMENTUM * s['mean'] + (1 - MOMENTUM) * m,
         'std': MOMENTUM * s['std'] + (1 - MOMENTUM) * sigma_b}
  y_eval = (x - s['mean']) / s['std'] * p['scale'] + p['bias']
  return y, new, y_eval


def ref_group(x, p, groups):
  n, c = x.shape[0], x.shape[-1]
  g = x.reshape(x.shape[:-1] + (groups, c // groups))
  axes = tuple(range(1, g.ndim - 2)) + (g.ndim - 1,)
  m = g.mean(axes, keepdims=True)
  var = g.var(axes, keepdims=True)
  y = ((g - m) / np.sqrt(var + EPS)).reshape(x.shape)
  return y * p['scale'] + p['bias']


def _run(cfg, v, x, train_mode, mask=None, total_steps=100):
  return fx.apply(cfg, v, x, train_mode, mask=mask, total_steps=total_steps)


@pytest.mark.parametrize('kind', SHAPES)
@pytest.mark.parametrize('norm', ['batch', 'ghost_batch', 'batch_renorm'])
def test_batch_norms_match_references(norm, kind):
  x = _x(SHAPES[kind])
  cfg = _cfg(norm)
  v = _variables(cfg, x)
  p, s = v['params']['norm'], v['batch_stats']['norm']
  if norm == 'batch':
    y_ref, new_ref, eval_ref = ref_batch(x, p, s)
  elif norm == 'ghost_batch':
    y_ref, new_ref, eval_ref = ref_ghost(x, p, s)
  else:
    # Step 60 of 100 with the default schedule: r_max and d_max part-relaxed.
    v['batch_stats']['norm']['steps'] = np.int32(60)
    limits = norms.BatchRenorm(False, r_max=3, d_max=5, warmup_steps=12,
                               r_max_steps=100, d_max_steps=62).limits(60)
    r_max, d_max = (float(l) for l in limits)
    assert r_max == pytest.approx(1 + 2 * 48 / 88)
    assert d_max == pytest.approx(5 * 48 / 50)
    y_ref, new_ref, eval_ref = ref_renorm(x, p, s, r_max, d_max)
  y, new = _run(cfg, v, x, True)
  np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)
  for key, value in new_ref.items():
    np.testing.assert_allclose(new['batch_stats']['norm'][key], value,
                               rtol=1e-5, atol=1e-5)
  if norm == 'batch_renorm':
    assert int(new['batch_stats']['norm']['steps']) == 61
  y_eval, after_eval = _run(cfg, v, x, False)
  np.testing.assert_allclose(y_eval, eval_ref, rtol=1e-4, atol=1e-4)
  # Eval never changes the running statistics.
  jax.tree.map(np.testing.assert_array_equal, after_eval['batch_stats'],
               v['batch_stats'])


@pytest.mark.parametrize('kind', SHAPES)
@pytest.mark.parametrize('norm', ['group', 'layer'])
def test_per_example_norms_match_references_and_ignore_mode(norm, kind):
  x = _x(SHAPES[kind])
  cfg = _cfg(norm)
  v = _variables(cfg, x)
  assert 'batch_stats' not in v
  y_ref = ref_group(x, v['params']['norm'], 2 if norm == 'group' else 1)
  y_train, state = _run(cfg, v, x, True)
  y_eval, _ = _run(cfg, v, x, False)
  assert not state
  np.testing.assert_allclose(y_train, y_ref, rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(y_train, y_eval)


def test_group_norm_falls_back_to_a_common_divisor():
  x = _x((4, 5, 5, 3))  # The raw image: 3 channels, num_groups 2.
  cfg = _cfg('group')
  v = _variables(cfg, x)
  y, _ = _run(cfg, v, x, True)
  np.testing.assert_allclose(y, ref_group(x, v['params']['norm'], 1),
                             rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('kind', SHAPES)
def test_ghost_with_one_group_is_batch_norm(kind):
  x = _x(SHAPES[kind])
  ghost = _cfg('ghost_batch', virtual_batch_size=x.shape[0])
  v = _variables(ghost, x)
  y_ghost, s_ghost = _run(ghost, v, x, True)
  y_batch, s_batch = _run(_cfg('batch'), v, x, True)
  np.testing.assert_allclose(y_ghost, y_batch, rtol=1e-5, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
               s_ghost, s_batch)


@pytest.mark.parametrize('kind', SHAPES)
def test_renorm_with_r_max_1_d_max_0_is_batch_norm_in_training(kind):
  x = _x(SHAPES[kind])
  renorm = _cfg('batch_renorm', renorm_r_max=1.0, renorm_d_max=0.0)
  v = _variables(renorm, x)
  y_renorm, _ = _run(renorm, v, x, True)
  batch = _cfg('batch')
  vb = {'params': v['params'], 'batch_stats': {'norm': {
      'mean': v['batch_stats']['norm']['mean'],
      'var': v['batch_stats']['norm']['std'] ** 2}}}
  y_batch, _ = _run(batch, vb, x, True)
  np.testing.assert_allclose(y_renorm, y_batch, rtol=1e-5, atol=1e-5)


def test_renorm_schedule_is_the_papers_shape():
  layer = norms.BatchRenorm(False, r_max=3, d_max=5, warmup_steps=5000,
                            r_max_steps=40000, d_max_steps=25000)
  for step, r, d in [(0, 1, 0), (5000, 1, 0), (15000, 1 + 2 * 10 / 35, 2.5),
                     (25000, 1 + 2 * 20 / 35, 5), (40000, 3, 5), (90000, 3, 5)]:
    got = [float(v) for v in layer.limits(step)]
    assert got == pytest.approx([r, d]), step


@pytest.mark.parametrize('norm', ['batch', 'batch_renorm', 'ghost_batch'])
def test_masked_batch_statistics_ignore_padding(norm):
  x = _x((8, 5, 5, 4))
  cfg = _cfg(norm, virtual_batch_size=8)
  v = _variables(cfg, x)
  padded = np.concatenate([x, np.full((8, 5, 5, 4), 100.0, np.float32)])
  mask = np.array([1] * 8 + [0] * 8, np.float32)
  cfg_padded = _cfg(norm, virtual_batch_size=16)
  y_pad, _ = _run(cfg_padded, v, padded, True, mask)
  y, _ = _run(cfg, v, x, True)
  # (For ghost_batch: one group of 16 holding the 8 padded examples.)
  np.testing.assert_allclose(y_pad[:8], y, rtol=1e-4, atol=1e-4)


def _precise_setup(norm):
  config = helpers.tiny_config(**{
      'model.norm': norm, 'model.filters': (), 'model.strides': (),
      'model.dense': (), 'model.virtual_batch_size': 4})
  model = models.create_model(config.model, 10, total_steps=100)
  x = jnp.zeros((4, 2, 2, 1))
  v = model.init(jax.random.key(0), x, train=False)
  return model, types.SimpleNamespace(params=v['params'],
                                      batch_stats=v['batch_stats'])


@pytest.mark.parametrize('norm', ['batch', 'batch_renorm', 'ghost_batch'])
def test_precise_bn_recovers_the_population_statistics(norm):
  """Batches of 16 from N(3 + c_k, 1), with a per-batch shift c_k ~ N(0, 2^2):
  the population has mean 3 and variance 1 + 4 = 5; the mean of the batch
  variances is about 15/16."""
  model, state = _precise_setup(norm)
  rng = np.random.default_rng(0)
  k, n = 400, 16
  shifts = rng.normal(0, 2, (k, 1, 1, 1, 1))
  data = (3 + shifts + rng.normal(0, 1, (k, n, 2, 2, 1))).astype(np.float32)
  batches = ({'image': b} for b in data)
  stats = precise_bn.recompute(model, state, batches, mesh_lib.make_mesh(), k)
  s = jax.device_get(stats['logits_norm'])
  var = s['var'] if 'var' in s else s['std'] ** 2 - EPS
  flat = data.reshape(-1, 4)
  np.testing.assert_allclose(s['mean'], flat.mean(0), rtol=1e-4)
  np.testing.assert_allclose(var, flat.var(0), rtol=1e-3)
  np.testing.assert_allclose(s['mean'], 3, atol=0.3)
  np.testing.assert_allclose(var, 5, rtol=0.2)
  mean_of_variances = data.reshape(k, n, 4).var(1).mean(0)
  assert np.all(mean_of_variances < 0.3 * var)  # What a naive average gives.
  # The input state is left alone.
  np.testing.assert_array_equal(
      jax.device_get(state.batch_stats['logits_norm']['mean']), 0)


def test_weight_decay_skips_norms_unless_asked():
  w = np.ones(2)
  params = {'conv1': {'kernel': w}, 'conv1_norm': {'scale': w},
            'logits': {'bias': w}, 's1b1_conv2_scale': np.float32(1)}
  assert optim._decay_mask(params, include_norms=False,
                           include_biases=True) == {
      'conv1': {'kernel': True}, 'conv1_norm': {'scale': False},
      'logits': {'bias': True}, 's1b1_conv2_scale': False}
  mask = optim._decay_mask(params, include_norms=True, include_biases=True)
  assert mask['conv1_norm'] == {'scale': True}
  # Norm-free scalars (Fixup's, SkipInit's) count as norms.
  assert mask['s1b1_conv2_scale'] is True


@pytest.mark.parametrize('overrides,message', [
    ({'model.norm': 'ghost_batch', 'model.virtual_batch_size': 3},
     'virtual_batch_size=3 does not divide batch_size=8'),
    ({'model.norm': 'ghost_batch', 'model.virtual_batch_size': 4,
      'eval_batch_size': 6, 'eval_stats': 'ema,batch'},
     'virtual_batch_size=4 does not divide eval_batch_size=6'),
    ({'eval_stats': 'ema,precise_bn'}, 'eval_stats=.*subset of: ema, precise'),
    ({'eval_stats': ''}, 'non-empty'),
    ({'model.norm': 'switchable'}, 'allowed: none, batch, ghost_batch'),
    ({'model.placement': 'pre'}, 'allowed: input, pre_act, post_act'),
    ({'model.norm': 'batch_renorm', 'model.renorm_r_max': 0.5}, 'r_max=0.5'),
    ({'precise_bn_batches': 0}, 'precise_bn_batches=0'),
])
def test_bad_norm_configs_are_user_errors(overrides, message):
  with pytest.raises(errors.UserError, match=message):
    validate.validate(helpers.tiny_config(**overrides))


@pytest.mark.parametrize('norm', ['batch', 'ghost_batch', 'batch_renorm',
                                  'group', 'layer'])
def test_use_scale_and_use_bias_switch_the_affine_part(norm):
  x = _x(SHAPES['conv'])
  for use_scale, use_bias in [(True, False), (False, True), (False, False)]:
    cfg = _cfg(norm, use_scale=use_scale, use_bias=use_bias)
    params = Wrap(cfg, train=False).init(jax.random.key(0), x).get(
        'params', {}).get('norm', {})
    assert ('scale' in params, 'bias' in params) == (use_scale, use_bias)
