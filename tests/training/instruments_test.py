"""Instruments against hand computations, and the trajectory they must not touch."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bn_study.training import instruments
from bn_study.studies import report
from bn_study.training import validate
from tests import helpers


def test_percentiles_of_a_known_distribution():
  out = jax.device_get(instruments.percentile_summary(jnp.arange(101.0)))
  assert (out['p15'], out['p50'], out['p85']) == (15.0, 50.0, 85.0)
  assert out['mean'] == pytest.approx(50.0)
  assert out['std'] == pytest.approx(np.arange(101.0).std(), rel=1e-6)
  x = jax.random.normal(jax.random.key(0), (200_000,))
  out = jax.device_get(instruments.percentile_summary(x))
  # Standard normal quantiles: +-1.0364 at 15% / 85%.
  assert out['p15'] == pytest.approx(-1.0364, abs=0.01)
  assert out['p85'] == pytest.approx(1.0364, abs=0.01)
  assert abs(out['p50']) < 0.01


def test_ics_of_a_three_layer_linear_network_by_hand():
  # out = ((x W1) * s) W2 W3, s a per-column scale that belongs to layer 1
  # (module layer1_norm), and a module of no layer (unmoved).
  rng = np.random.default_rng(0)
  x = rng.normal(size=(16, 4))
  y = rng.normal(size=(16, 2))
  w1, s = rng.normal(size=(4, 3)), rng.normal(size=3)
  w2, w3 = rng.normal(size=(3, 3)), rng.normal(size=(3, 2))
  lr = 0.1

  def loss_fn(p):
    h1 = (x @ p['layer1']['kernel']) * p['layer1_norm']['scale']
    out = h1 @ p['layer2']['kernel'] @ p['layer3']['kernel']
    return 0.5 * jnp.mean(jnp.sum((out - y) ** 2, -1)) + 0 * p['other']['b']

  params = jax.tree.map(jnp.asarray, {
      'layer1': {'kernel': w1}, 'layer1_norm': {'scale': s},
      'layer2': {'kernel': w2}, 'layer3': {'kernel': w3},
      'other': {'b': np.ones(())}})
  grads = jax.grad(loss_fn)(params)
  updates = jax.tree.map(lambda g: -lr * g, grads)  # Plain SGD.
  got = jax.device_get(instruments.ics(loss_fn, params, updates,
                                       ['layer1', 'layer2', 'layer3']))
  assert set(got) == {f'ics/layer{i}/{m}' for i in (2, 3)
                      for m in ('l2', 'cos')}

  # By hand, with r = (out - y) / n: dL/dW3 = h2^T r, dL/dW2 = h1^T r W3^T,
  # dL/dh1 = r W3^T W2^T, dL/ds = sum_rows(x W1 * dL/dh1),
  # dL/dW1 = x^T (dL/dh1 * s).
  def grads_by_hand(w1_, s_, w2_, w3_):
    a = x @ w1_
    h1 = a * s_
    h2 = h1 @ w2_
    r = (h2 @ w3_ - y) / len(x)
    d_h1 = r @ w3_.T @ w2_.T
    return {'w1': x.T @ (d_h1 * s_), 's': (a * d_h1).sum(0),
            'w2': h1.T @ (r @ w3_.T), 'w3': h2.T @ r}

  g = grads_by_hand(w1, s, w2, w3)
  moved = {k: v - lr * g[k] for k, v in
           {'w1': w1, 's': s, 'w2': w2, 'w3': w3}.items()}
  # Layer 2 after layer 1 (and its norm) took their step; layer 3 after
  # layers 1 and 2 did.
  g2 = grads_by_hand(moved['w1'], moved['s'], w2, w3)['w2']
  g3 = grads_by_hand(moved['w1'], moved['s'], moved['w2'], w3)['w3']
  for layer, before, after in (('layer2', g['w2'], g2),
                               ('layer3', g['w3'], g3)):
    assert got[f'ics/{layer}/l2'] == pytest.approx(
        np.linalg.norm(before - after), rel=1e-4)
    cos = np.sum(before * after) / np.linalg.norm(before) / np.linalg.norm(
        after)
    assert got[f'ics/{layer}/cos'] == pytest.approx(cos, rel=1e-5)


def test_smoothness_of_a_quadratic():
  # L = a/2 ||w||^2: the gradient moves by eta a^2 ||w||, so beta = a exactly.
  a, lr = 3.0, 0.05
  w = {'w': jnp.array([1.0, -2.0, 0.5])}
  loss_fn = lambda p: 0.5 * a * jnp.sum(p['w'] ** 2)
  mults = (0.5, 1.0, 2.0)
  got = jax.device_get(instruments.smoothness(loss_fn, w, lr, mults))
  norm_w = float(np.linalg.norm(w['w']))
  assert got['smoothness/beta_max'] == pytest.approx(a, rel=1e-5)
  assert got['smoothness/grad_change_max'] == pytest.approx(
      max(mults) * lr * a * a * norm_w, rel=1e-5)
  losses = [0.5 * a * (1 - m * lr * a) ** 2 * norm_w ** 2 for m in (0,) + mults]
  assert got['smoothness/loss_range'] == pytest.approx(
      max(losses) - min(losses), rel=1e-5)


def _train(workdir, **overrides):
  return helpers.train_tiny(workdir,
                            **{'analysis.probe_size': 16, **overrides})


@pytest.fixture(scope='module')
def instrumented(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('instrumented')
  return workdir, _train(workdir, **{'analysis.every_steps': 3})


def test_instruments_leave_the_trajectory_alone(instrumented, tmp_path):
  _, with_analysis = instrumented
  without = _train(tmp_path)
  for a, b in zip(jax.tree.leaves((with_analysis.params,
                                   with_analysis.batch_stats,
                                   with_analysis.opt_state)),
                  jax.tree.leaves((without.params, without.batch_stats,
                                   without.opt_state))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_instruments_are_logged_per_layer(instrumented):
  workdir, _ = instrumented
  scalars = helpers.read_scalars(str(workdir))
  layers = ['conv1', 'conv2', 'conv3', 'dense1', 'dense2']
  for layer in layers:
    for q in ('p15', 'p50', 'p85', 'mean', 'std', 'unit0/p50'):
      assert [s for s, _ in scalars[f'act/{layer}/{q}']] == [0, 3, 6, 9, 12, 15]
    p15, p50, p85 = (scalars[f'act/{layer}/{q}'][-1][1]
                     for q in ('p15', 'p50', 'p85'))
    assert p15 <= p50 <= p85
  for layer in layers[1:] + ['logits']:
    assert -1 <= scalars[f'ics/{layer}/cos'][0][1] <= 1
    assert scalars[f'ics/{layer}/l2'][0][1] >= 0
  assert 'ics/conv1/l2' not in scalars  # Nothing below the first layer.
  for layer in layers + ['logits']:
    assert scalars[f'norms/{layer}/update_ratio'][0][1] > 0
  assert scalars['norms/conv1_norm/gamma_std'][0][1] == 0.0  # gamma starts at 1.
  assert scalars['smoothness/beta_max'][0][1] > 0


def test_the_report_draws_the_instruments(instrumented, tmp_path):
  workdir, _ = instrumented
  out = str(tmp_path / 'report')
  report.write_report([str(workdir)], out)
  text = open(os.path.join(out, 'report.md')).read()
  for section in ('## Activations (act/)', '## Internal covariate shift (ics/)',
                  '## Loss landscape (smoothness/)', '## Weights and effective'):
    assert section in text
  for png in ('act.png', 'act_unit0.png', 'figure1.png', 'ics.png',
              'smoothness.png', 'norms.png'):
    assert os.path.getsize(os.path.join(out, png)) > 1000, png


def test_bad_analysis_config_is_refused():
  from bn_study import errors  # pylint: disable=g-import-not-at-top
  with pytest.raises(errors.UserError, match='analysis.every_steps=-1'):
    validate.validate(helpers.tiny_config(**{'analysis.every_steps': -1}))
  with pytest.raises(errors.UserError, match='smoothness_lr_multipliers'):
    validate.validate(helpers.tiny_config(
        **{'analysis.smoothness_lr_multipliers': (1.0, -2.0)}))
