"""Optimizer recipes against hand-computed steps: coupled and decoupled
weight decay, Nesterov, the learning-rate schedules, label smoothing."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bn_study import errors
from bn_study.training import losses
from bn_study.training import optim
from bn_study.training import validate
from configs import airbench94
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


def test_triangular_schedule_is_airbenchs():
  # airbench94's get_lr, written from its description: warmup to int(23%)
  # of the steps from 0.2, then down to 0.07 at the last step.
  total, lr = 100, 0.1
  warm = int(total * 0.23)

  def airbench(step):
    if step < warm:
      frac = step / warm
      return 0.2 * (1 - frac) + 1.0 * frac
    frac = (step - warm) / (total - warm)
    return 1.0 * (1 - frac) + 0.07 * frac

  schedule = _schedule(lr_schedule='triangular')
  np.testing.assert_allclose([float(schedule(s)) for s in range(total + 1)],
                             [lr * airbench(s) for s in range(total + 1)],
                             rtol=1e-6)


def test_per_examples_is_airbenchs_kilostep_scaling():
  # airbench94: lr 11.5 and wd 0.0153 per 1024 examples, momentum 0.85,
  # batch 1024, the summed loss: SGD(lr=11.5 / ks, weight_decay=wd * 1024
  # / ks / lr_sgd) with ks = 1024 * (1 + 1 / 0.15). On the mean loss the
  # rate is 1024 times that: 1.5.
  config = helpers.tiny_config(
      optimizer='sgd', momentum=0.85, nesterov=True, learning_rate=11.5,
      weight_decay=0.0153, weight_decay_style='coupled', per_examples=1024,
      batch_size=1024)
  ks = 1024 * (1 + 1 / (1 - 0.85))
  lr_sgd = 11.5 / ks
  assert optim.learning_rate(config) == pytest.approx(1024 * lr_sgd)
  assert optim.learning_rate(config) == pytest.approx(1.5)
  # torch's decay coefficient, (wd * batch / ks) / lr_sgd, is on the summed
  # loss's gradient: the weights lose lr_sgd times it a step, as here.
  torch_decay = 0.0153 * 1024 / ks / lr_sgd
  assert (optim.learning_rate(config) * optim.weight_decay(config)
          == pytest.approx(lr_sgd * torch_decay))


def test_norm_bias_lr_multiplier_leaves_the_decay_alone():
  # airbench's bias group: lr 64x, weight_decay / 64, so the decay a step
  # is the same: -lr (64 g + wd w) for the norms' biases only.
  got = _update('sgd', 'coupled', norm_bias_lr_multiplier=64.0,
                weight_decay_norms=True)
  want = _by_hand(lambda w, g, d: -LR * (g + d * w), norms=True)
  want['conv1_norm']['bias'] = -LR * (64 * G['conv1_norm']['bias']
                                      + WD * W['conv1_norm']['bias'])
  _assert_tree_close(got, want)


def test_airbench_freezes_its_whitening_kernel_and_then_its_bias():
  config = airbench94.get_config()
  config.model.whiten_bias_epochs = 1
  config.lookahead_every = 0
  tx, _ = optim.make_optimizer(config, steps_per_epoch=2)
  params = {'whiten': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)},
            'b1_conv1': {'kernel': jnp.ones((2, 2))}}
  grads = jax.tree.map(jnp.ones_like, params)
  state = tx.init(params)
  moved = []
  for _ in range(4):
    updates, state = tx.update(grads, state, params)
    moved.append({f'{m}/{p}': bool(np.any(np.asarray(u) != 0))
                  for m, leaves in updates.items() for p, u in leaves.items()})
  assert [m['whiten/kernel'] for m in moved] == [False] * 4
  assert [m['whiten/bias'] for m in moved] == [True, True, False, False]
  assert [m['b1_conv1/kernel'] for m in moved] == [True] * 4


def _lookahead_reference(params, stats, grads, new_stats, lr, every, total,
                         steps_per_epoch, start_epochs):
  """airbench94's training loop with its LookaheadState over plain SGD, in
  numpy: the EMA of the state dict (weights and running averages), created
  at the first due step from epoch start_epochs, moved every `every` steps
  and copied back, and copied back after the last step (airbench94.py's
  update with decay 1; nothing happens at an epoch's end)."""
  net = {k: v.copy() for k, v in {**params, **stats}.items()}
  ema = None
  step = 0
  for epoch in range(-(-total // steps_per_epoch)):
    for _ in range(steps_per_epoch):
      for k in params:
        net[k] = net[k] - lr * grads[step][k]
      for k in stats:
        net[k] = new_stats[step][k]
      step += 1
      if epoch >= start_epochs and step % every == 0:
        if ema is None:
          ema = {k: v.copy() for k, v in net.items()}
        else:
          rho = 0.95**every * (step / total)**3
          for k in ema:
            ema[k] = ema[k] + (1 - rho) * (net[k] - ema[k])
            net[k] = ema[k].copy()
      if step >= total:
        if ema is not None:
          net = {k: v.copy() for k, v in ema.items()}
        return net
  return net


def test_lookahead_against_airbenchs_loop():
  # 4 steps an epoch, 10 in all (the last epoch cut short), from epoch 1,
  # every 3 steps: started at step 6, moved at 9, copied back at 9 and 10
  # (not at 8, an epoch's end).
  every, total, lr, per_epoch, start_epochs = 3, 10, 0.5, 4, 1
  rng = np.random.default_rng(0)
  params = {'w': rng.normal(size=4).astype(np.float32)}
  stats = {'mean': np.zeros(2, np.float32)}
  grads = [{'w': rng.normal(size=4).astype(np.float32)} for _ in range(total)]
  new_stats = [{'mean': rng.normal(size=2).astype(np.float32)}
               for _ in range(total)]
  want = _lookahead_reference(params, stats, grads, new_stats, lr, every,
                              total, per_epoch, start_epochs)
  tx = optim.lookahead(optax.sgd(lr), every, 0.95, total, per_epoch,
                       start_epochs)
  state = optim.with_batch_stats(tx.init(params), stats)
  p, s = jax.tree.map(jnp.asarray, params), stats
  for step in range(total):
    updates, state = tx.update(grads[step], state, p,
                               batch_stats=new_stats[step])
    p = optax.apply_updates(p, updates)
    s = optim.synced_batch_stats(state, new_stats[step])
  np.testing.assert_allclose(p['w'], want['w'], rtol=1e-5)
  np.testing.assert_allclose(s['mean'], want['mean'], rtol=1e-5)
  # Without lookahead the weights would be plain SGD's.
  sgd = params['w'] - lr * sum(g['w'] for g in grads)
  assert not np.allclose(p['w'], sgd, rtol=1e-3)


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
    ('norm_bias_lr_multiplier', 64.0, 'norm_bias_lr_multiplier=64.0.*sgd'),
    ('per_examples', 1024, 'per_examples=1024.*optimizer=sgd'),
    ('lookahead_decay', 1.5, 'lookahead_decay=1.5'),
    ('num_epochs', 0, 'num_epochs=0'),
])
def test_bad_recipe_fields_are_user_errors(field, value, match):
  with pytest.raises(errors.UserError, match=match):
    validate.validate(helpers.tiny_config(**{field: value}))
