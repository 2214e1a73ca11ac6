"""Optimizer recipes against hand-computed steps: coupled and decoupled
weight decay, Nesterov, the learning-rate schedules, label smoothing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bn_study import errors
from bn_study.training import losses
from bn_study.training import optim
from bn_study.training import validate
from tests import helpers

W = {'conv1': {'kernel': np.array([1.0, -2.0]), 'bias': np.array([0.5])},
     'conv1_norm': {'scale': np.array([2.0]), 'bias': np.array([-1.0])}}
G = {'conv1': {'kernel': np.array([0.1, 0.3]), 'bias': np.array([-0.2])},
     'conv1_norm': {'scale': np.array([0.4]), 'bias': np.array([0.05])}}
LR, WD, MOMENTUM = 0.1, 0.01, 0.9


def _update(optimizer, style, steps=1, **overrides):
  config = helpers.tiny_config(
      optimizer=optimizer, learning_rate=LR, weight_decay=WD,
      weight_decay_style=style, momentum=MOMENTUM, eps=1e-8, **overrides)
  tx, _ = optim.make_optimizer(config, steps_per_epoch=10)
  params = jax.tree.map(jnp.asarray, W)
  state = tx.init(params)
  for _ in range(steps):
    updates, state = tx.update(jax.tree.map(jnp.asarray, G), state, params)
  return jax.tree.map(np.asarray, updates)


def _decayed(path, norms, biases):
  if path[0].endswith('_norm'):
    return norms
  return biases or path[1] != 'bias'


def _by_hand(fn, norms=False, biases=True):
  """fn(w, g, decay) for every leaf; decay is WD where it applies, else 0."""
  return {m: {p: fn(W[m][p], G[m][p],
                    WD if _decayed((m, p), norms, biases) else 0.0)
              for p in W[m]} for m in W}


def _assert_tree_close(got, want, rtol=1e-6):
  for m in want:
    for p in want[m]:
      np.testing.assert_allclose(got[m][p], want[m][p], rtol=rtol,
                                 err_msg=f'{m}/{p}')


def test_sgd_coupled_decay_is_added_to_the_gradient_before_momentum():
  # Step 1: m = g + wd w; step 2 (same g, w unchanged here): 0.9 m + g + wd w.
  _assert_tree_close(_update('sgd', 'coupled'),
                     _by_hand(lambda w, g, d: -LR * (g + d * w)))
  _assert_tree_close(_update('sgd', 'coupled', steps=2),
                     _by_hand(lambda w, g, d: -LR * 1.9 * (g + d * w)))


def test_sgd_decoupled_decay_is_beside_the_momentum():
  _assert_tree_close(_update('sgd', 'decoupled', steps=2),
                     _by_hand(lambda w, g, d: -LR * (1.9 * g + d * w)))


def test_nesterov_looks_ahead():
  # Nesterov's first step: g + 0.9 * (momentum buffer g).
  _assert_tree_close(_update('sgd', 'coupled', nesterov=True),
                     _by_hand(lambda w, g, d: -LR * 1.9 * (g + d * w)))


def test_adam_coupled_and_decoupled():
  # Adam's first step is lr * sign of what it sees (bias-corrected moments;
  # float32's 1 - b2 and eps leave ~1e-5 of it).
  _assert_tree_close(_update('adam', 'coupled'),
                     _by_hand(lambda w, g, d: -LR * np.sign(g + d * w)),
                     rtol=3e-5)
  _assert_tree_close(_update('adam', 'decoupled'),
                     _by_hand(lambda w, g, d: -LR * (np.sign(g) + d * w)),
                     rtol=3e-5)


def test_norms_and_biases_can_be_kept_out_of_the_decay():
  for norms, biases in [(True, True), (False, False), (True, False)]:
    _assert_tree_close(
        _update('sgd', 'coupled', weight_decay_norms=norms,
                weight_decay_biases=biases),
        _by_hand(lambda w, g, d: -LR * (g + d * w), norms, biases))


def _schedule(**overrides):
  config = helpers.tiny_config(learning_rate=0.1, num_epochs=10, **overrides)
  return optim.make_schedule(config, steps_per_epoch=10)  # 100 steps.


def test_piecewise_schedule_at_its_boundaries():
  lr = _schedule(lr_schedule='piecewise', lr_boundaries=(0.5, 0.75),
                 lr_decay_factor=0.1)
  values = {s: float(lr(s)) for s in (0, 49, 50, 74, 75, 99)}
  assert values == pytest.approx(
      {0: 0.1, 49: 0.1, 50: 0.01, 74: 0.01, 75: 0.001, 99: 0.001})


def test_warmup_then_piecewise_keeps_the_boundaries_in_the_run():
  lr = _schedule(lr_schedule='piecewise', lr_boundaries=(0.5,),
                 warmup_epochs=1.0)
  values = {s: float(lr(s)) for s in (0, 5, 10, 49, 50)}
  assert values == pytest.approx({0: 0.0, 5: 0.05, 10: 0.1, 49: 0.1,
                                  50: 0.01})


def test_cosine_and_constant():
  cosine = _schedule(lr_schedule='cosine')
  assert float(cosine(0)) == pytest.approx(0.1)
  assert float(cosine(50)) == pytest.approx(0.05)
  assert float(cosine(100)) == pytest.approx(0.0, abs=1e-9)
  constant = _schedule(warmup_epochs=2.0)
  assert [float(constant(s)) for s in (0, 10, 20, 99)] == pytest.approx(
      [0.0, 0.05, 0.1, 0.1])


def test_label_smoothing_by_hand():
  logits = jnp.array([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
  labels = jnp.array([0, 1])
  a, k = 0.1, 3
  log_p = np.log(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))
  want = [-(1 - a + a / k) * log_p[i, y] -
          sum(a / k * log_p[i, j] for j in range(k) if j != y)
          for i, y in enumerate([0, 1])]
  np.testing.assert_allclose(losses.cross_entropy(logits, labels, a), want,
                             rtol=1e-6)
  np.testing.assert_allclose(losses.cross_entropy(logits, labels),
                             [-log_p[0, 0], -log_p[1, 1]], rtol=1e-6)


@pytest.mark.parametrize('field,value,match', [
    ('lr_boundaries', (0.75, 0.5), 'lr_boundaries=.*increasing'),
    ('lr_boundaries', (0.5, 1.5), 'lr_boundaries=.*between 0 and 1'),
    ('lr_schedule', 'step', "lr_schedule='step'.*allowed"),
    ('weight_decay_style', 'l2', "weight_decay_style='l2'.*allowed"),
    ('label_smoothing', 1.0, 'label_smoothing=1.0'),
    ('lr_decay_factor', 0.0, 'lr_decay_factor=0.0'),
])
def test_bad_recipe_fields_are_user_errors(field, value, match):
  with pytest.raises(errors.UserError, match=match):
    validate.validate(helpers.tiny_config(**{field: value}))
