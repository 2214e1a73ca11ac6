"""The normalizers beyond BN and the normalizer-free methods, against numpy
references written from the papers (tests/models/norm_references.py), plus the
properties the issue asks for: zero-debiased averages after 3 steps, WS
kernels, SkipInit's identity blocks, Fixup's and NF's bounded variance with
depth, adaptive gradient clipping."""


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bn_study.runtime import cpu
from bn_study import errors
from bn_study import models
from bn_study.models import norms
from bn_study.training import optim
from bn_study.training import validate
from bn_study.models import layers
from configs import default
from tests import helpers
from tests.models import norm_fixtures as fx
from tests.models import norm_references as ref

EPS, SHAPES, GROUPS = fx.EPS, fx.SHAPES, fx.GROUPS
_cfg, _x = fx.cfg, fx.inputs


def Wrap(cfg, train, act=True):  # pylint: disable=invalid-name
  return fx.Wrap(cfg, train=train, act=act)


def _variables(cfg, x, act=True, seed=0):
  return fx.variables(cfg, x, act, seed)


def _apply(cfg, v, x, train_mode, act=True):
  return fx.apply(cfg, v, x, train_mode, act)


def _reference(norm, x, p, s, train_mode, act):
  """The paper's output for norm `norm` with params p and statistics s."""
  if norm == 'instance':
    return ref.instance_norm(x, p['scale'], p['bias'], EPS)
  if norm == 'frn':
    return ref.frn(x, p['scale'], p['bias'], EPS, tau=p.get('tau'),
                   learned_eps=p.get('learned_eps'))
  if not act:  # The EvoNorms' affine part alone, as their paper's code.
    return ref.evonorm_no_act_paper(x, p['scale'], p['bias'])
  if norm == 'evonorm_b0':
    return ref.evonorm_b0(x, p['scale'], p['bias'], p['v'], EPS,
                          running_var=None if train_mode else s['var'])
  return ref.evonorm_s0(x, p['scale'], p['bias'], p['v'], GROUPS, EPS)


CASES = [('instance', 'conv', True)] + [
    (norm, kind, act) for norm in ('frn', 'evonorm_b0', 'evonorm_s0')
    for kind in SHAPES for act in (True, False)]


@pytest.mark.parametrize('norm,kind,act', CASES)
def test_new_norms_match_the_papers(norm, kind, act):
  x = _x(SHAPES[kind])
  cfg = _cfg(norm)
  v = _variables(cfg, x, act)
  p = v['params']['norm']
  s = v.get('batch_stats', {}).get('norm', {})
  # FRN learns its eps exactly where H * W = 1, and TLU only with an act.
  assert ('learned_eps' in p) == (norm == 'frn' and kind == 'dense')
  assert ('tau' in p) == (norm == 'frn' and act)
  # Running statistics: EvoNorm-B0's batch variance, where it normalizes.
  assert bool(s) == (norm == 'evonorm_b0' and act)
  y, new = _apply(cfg, v, x, True, act)
  np.testing.assert_allclose(y, _reference(norm, x, p, s, True, act),
                             rtol=1e-4, atol=1e-4)
  y_eval, after_eval = _apply(cfg, v, x, False, act)
  np.testing.assert_allclose(y_eval, _reference(norm, x, p, s, False, act),
                             rtol=1e-4, atol=1e-4)
  if s:
    stats = new['batch_stats']['norm']
    np.testing.assert_allclose(
        stats['var'], ref.evonorm_b0_running_var(s['var'], x, 0.9), rtol=1e-5)
    np.testing.assert_allclose(
        stats['mean'], ref.evonorm_b0_running_mean(s['mean'], x, 0.9),
        rtol=1e-5, atol=1e-6)
    jax.tree.map(np.testing.assert_array_equal, after_eval['batch_stats'],
                 v['batch_stats'])
    assert not np.allclose(y, y_eval)  # Batch statistics vs running ones.
  else:
    np.testing.assert_array_equal(y, y_eval)


@pytest.mark.parametrize('norm', ['instance', 'frn', 'evonorm_b0',
                                  'evonorm_s0'])
def test_new_norms_gradients_match_finite_differences(norm):
  """d/dx sum(y * r) in train mode against central differences of the
  float64 reference."""
  x = _x((4, 3, 3, 4), seed=3).astype(np.float64)
  cfg = _cfg(norm)
  v = _variables(cfg, x.astype(np.float32))
  p = v['params']['norm']
  r = np.random.default_rng(4).normal(size=x.shape)
  grad = jax.grad(lambda x: jnp.sum(
      _apply(cfg, v, x, True)[0] * r))(jnp.asarray(x, jnp.float32))
  numeric = ref.numeric_grad(
      lambda x: np.sum(_reference(norm, x, p, {}, True, True) * r), x)
  np.testing.assert_allclose(grad, numeric, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize('norm,stat', [
    ('batch', 'var'), ('ghost_batch', 'var'), ('batch_renorm', 'std'),
    ('evonorm_b0', 'var')])
def test_zero_debiased_averages_equal_the_population_after_3_steps(norm, stat):
  """Three batches from one stationary distribution (mean 2, std 3): the
  debiased averages are TF's debiased EMA of the batch statistics, which is
  the population's to sampling error; the plain EMA at momentum 0.99 is still
  97% its initial value."""
  momentum = 0.99
  rng = np.random.default_rng(0)
  batches = [rng.normal(2.0, 3.0, (256, 4, 4, 3)).astype(np.float32)
             for _ in range(3)]
  runs = {}
  for debias in (True, False):
    cfg = _cfg(norm, zero_debias=debias, bn_momentum=momentum,
               renorm_momentum=momentum, virtual_batch_size=64)
    v = jax.device_get(Wrap(cfg, train=False).init(jax.random.key(0),
                                                   batches[0]))
    for x in batches:
      _, new = _apply(cfg, v, x, True)
      v = {**v, **new}
    runs[debias] = v['batch_stats']['norm']
  assert int(runs[True]['steps']) == 3
  means = [x.mean((0, 1, 2)) for x in batches]
  variances = [x.var((0, 1, 2)) for x in batches]
  second = (variances if stat == 'var'
            else [np.sqrt(var + EPS) for var in variances])
  np.testing.assert_allclose(runs[True]['mean'],
                             ref.zero_debiased_ema(means, momentum)[-1],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(runs[True][stat],
                             ref.zero_debiased_ema(second, momentum)[-1],
                             rtol=1e-5)
  population = 9.0 if stat == 'var' else 3.0
  np.testing.assert_allclose(runs[True]['mean'], 2.0, atol=0.1)
  np.testing.assert_allclose(runs[True][stat], population, rtol=0.05)
  plain = ref.plain_ema(second, momentum, np.ones(3))[-1]
  np.testing.assert_allclose(runs[False][stat], plain, rtol=1e-5)
  assert np.all(np.abs(runs[False][stat] - population) > 0.5 * population)


def test_noisy_bn_is_bn_then_a_per_channel_affine_redrawn_every_step():
  """Santurkar et al.'s noisy BN: the BN output, each channel scaled by s in
  [1/noise_scale, noise_scale] and shifted by m in [-noise_shift,
  noise_shift]; the same draws for every example, new ones every step, none
  without the train step's noise stream."""
  x = _x(SHAPES['conv'])
  cfg = _cfg('noisy_batch', noise_shift=0.5, noise_scale=2.0)
  v = _variables(cfg, x)
  p = v['params']['norm']
  mu, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
  bn = (x - mu) / np.sqrt(var + EPS) * p['scale'] + p['bias']  # The paper's.
  wrap = Wrap(cfg, train=True)

  def noisy(step, seed=0):
    y, new = wrap.apply(v, x, mutable=['batch_stats'],
                        rngs=models.noise_rngs(seed, step))
    return np.asarray(y), new

  y, new = noisy(3)
  for c in range(x.shape[-1]):
    s, m = np.polyfit(bn[..., c].ravel(), y[..., c].ravel(), 1)
    np.testing.assert_allclose(y[..., c], s * bn[..., c] + m, atol=1e-4)
    assert 0.5 <= s <= 2 and abs(m) <= 0.5, (c, s, m)
  assert not np.allclose(y, bn, atol=1e-2)
  np.testing.assert_array_equal(noisy(3)[0], y)  # A function of the step.
  assert not np.allclose(noisy(4)[0], y)
  assert not np.allclose(noisy(3, seed=1)[0], y)
  # The running averages follow BN's batch statistics, before the noise.
  _, plain = _apply(_cfg('batch'), v, x, True)
  for key in ('mean', 'var'):
    np.testing.assert_allclose(new['batch_stats']['norm'][key],
                               plain['batch_stats']['norm'][key], rtol=1e-5)
  # No noise stream (PreciseBN, eval by batch statistics) or eval: BN.
  np.testing.assert_allclose(_apply(cfg, v, x, True)[0], bn, atol=1e-4)
  np.testing.assert_allclose(_apply(cfg, v, x, False)[0],
                             _apply(_cfg('batch'), v, x, False)[0])
  # Over many steps the draws fill their ranges.
  draws = np.array([[np.polyfit(bn[..., 0].ravel(), noisy(t)[0][..., 0].ravel(),
                                1)] for t in range(60)])[:, 0]
  log_s, m = np.log(draws[:, 0]), draws[:, 1]
  assert np.all(np.abs(log_s) <= np.log(2) + 1e-4) and np.all(np.abs(m) <= .5)
  assert log_s.max() > 0.5 and log_s.min() < -0.5
  assert m.max() > 0.35 and m.min() < -0.35


def test_zero_debias_adds_only_a_step_count_to_the_checkpoint():
  x = _x(SHAPES['conv'])
  plain = Wrap(_cfg('ghost_batch'), train=False).init(jax.random.key(0), x)
  debiased = Wrap(_cfg('ghost_batch', zero_debias=True), train=False).init(
      jax.random.key(0), x)
  assert (set(debiased['batch_stats']['norm'])
          == set(plain['batch_stats']['norm']) | {'steps'})


@pytest.mark.parametrize('conv_impl', ['xla', 'im2col'])
def test_weight_standardized_convs_use_standardized_kernels(conv_impl):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
  conv = cpu.conv_module(conv_impl, platform='cpu')
  for scaled in (False, True):
    module = layers.standardized(conv, scaled=scaled)(
        features=5, kernel_size=(3, 3), padding='SAME', use_bias=False)
    v = jax.tree.map(np.array, module.init(jax.random.key(0), x))
    kernel = rng.normal(0.3, 0.5, (3, 3, 3, 5)).astype(np.float32)
    v['params']['kernel'] = kernel
    gain = None
    if scaled:
      gain = rng.uniform(0.5, 2, 5).astype(np.float32)
      v['params']['gain'] = gain
      expected = ref.scaled_weight_standardize(kernel, gain, 1.0)
    else:
      assert set(v['params']) == {'kernel'}
      expected = ref.weight_standardize(kernel, layers.WS_EPSILON)
    used = layers.standardize(jnp.asarray(kernel), gain)
    np.testing.assert_allclose(used, expected, rtol=1e-4, atol=1e-5)
    if not scaled:  # Every output channel: mean 0, std 1.
      np.testing.assert_allclose(np.mean(used, (0, 1, 2)), 0, atol=1e-5)
      np.testing.assert_allclose(np.std(used, (0, 1, 2)), 1, rtol=1e-3)
    plain = nn.Conv(5, (3, 3), padding='SAME', use_bias=False)
    want = plain.apply({'params': {'kernel': np.float32(expected)}}, x)
    np.testing.assert_allclose(module.apply(v, x), want, rtol=1e-4,
                               atol=1e-4)
    # The gradient reaches the raw kernel through the standardization.
    g = jax.grad(lambda k: jnp.sum(layers.standardize(k, gain) ** 3))(
        jnp.asarray(kernel))
    numeric = ref.numeric_grad(lambda k: np.sum(
        (ref.scaled_weight_standardize(k, gain, 1.0) if scaled else
         ref.weight_standardize(k, layers.WS_EPSILON)) ** 3),
        kernel.astype(np.float64), h=1e-5)
    np.testing.assert_allclose(g, numeric, rtol=2e-2, atol=2e-2)


def test_nf_relu_gain_keeps_unit_variance():
  assert layers.RELU_GAMMA == pytest.approx(ref.RELU_GAMMA, rel=1e-12)
  z = np.random.default_rng(0).normal(size=1_000_000)
  assert np.var(layers.RELU_GAMMA * np.maximum(z, 0)) == pytest.approx(
      1.0, rel=0.01)


def _model(kind, depth, width=None, **model):
  cfg = default.get_config().model
  cfg.kind, cfg.depth, cfg.width = kind, depth, width
  cfg.placement, cfg.kernel_init, cfg.conv_impl = 'pre_act', 'he_normal', 'xla'
  for key, value in model.items():
    cfg[key] = value
  return models.create_model(cfg, 10)


def _intermediates(model, x):
  variables = model.init(jax.random.key(0), x[:1], train=False)
  _, state = model.apply(variables, x, train=True,
                         mutable=['intermediates', 'batch_stats'])
  return {k: np.asarray(v[0]) for k, v in state['intermediates'].items()}


@pytest.mark.parametrize('kind,depth', [('resnet_cifar', 14),
                                        ('preact_resnet', 18)])
def test_skip_init_blocks_start_as_the_identity(kind, depth):
  model = _model(kind, depth, width=4, norm='none', norm_free='skip_init')
  x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
  inter = _intermediates(model, x)
  outs = [name for name in inter
          if name.endswith('_conv2_out') or name == 'conv1_out']
  checked = 0
  for before, after in zip(outs, outs[1:]):
    x_in, x_out = inter[before], inter[after]
    if x_in.shape == x_out.shape:  # Not a transition block.
      np.testing.assert_array_equal(x_out, x_in)
      checked += 1
  assert checked >= (4 if kind == 'resnet_cifar' else 4)
  # Without SkipInit's zero gain the same blocks change their input.
  inter = _intermediates(_model(kind, depth, width=4, norm='none'), x)
  assert not np.array_equal(inter[outs[2]], inter[outs[1]])


def _final_variance(scheme, depth):
  model = _model('resnet_cifar', depth, norm='none', norm_free=scheme)
  x = np.random.default_rng(0).normal(size=(8, 32, 32, 3)).astype(np.float32)
  inter = _intermediates(model, x)
  last = [name for name in inter if name.endswith('_conv2_out')][-1]
  return float(np.var(inter[last]))


def test_fixup_and_nf_keep_activation_variance_bounded_with_depth():
  """At initialization, ResNet-110's last block output against ResNet-20's:
  without a normalizer or a norm-free scheme the variance grows with depth;
  Fixup starts every branch at zero, NF-ResNets grow it by alpha^2 a
  block (1 + 18 * 0.04 against 1 + 3 * 0.04 in the last stage)."""
  ratio = {scheme: _final_variance(scheme, 110) / _final_variance(scheme, 20)
           for scheme in ('none', 'fixup', 'nf')}
  assert ratio['none'] > 10, ratio
  assert ratio['fixup'] == pytest.approx(1.0, rel=1e-5), ratio
  assert 1.1 < ratio['nf'] < 2.5, ratio


def test_fixup_initializes_as_the_paper():
  model = _model('resnet_cifar', 20, norm='none', norm_free='fixup')
  params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                      train=False)['params']
  assert not np.any(params['logits']['kernel'])
  assert 'bias' not in params['s1b1_conv1']  # Scalar biases instead.
  assert float(params['s1b1_conv2_scale']) == 1.0
  assert float(params['s1b1_conv1_bias_in']) == 0.0
  for block in ('s1b1', 's3b3'):
    assert not np.any(params[f'{block}_conv2']['kernel'])
    kernel = params[f'{block}_conv1']['kernel']
    # He et al.'s std sqrt(2 / fan_out) times L^(-1/2), L = 9 branches.
    want = np.sqrt(2 / (kernel.shape[-1] * 9)) / 3
    assert np.std(kernel) == pytest.approx(want, rel=0.1)
  mask = optim._decay_mask(params, include_norms=False, include_biases=True)
  assert mask['s1b1_conv2_scale'] is False
  assert mask['s1b1_conv1']['kernel'] is True


def test_nf_transitions_project_and_gains_are_not_decayed():
  model = _model('resnet_cifar', 20, norm='none', norm_free='nf')
  params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                      train=False)['params']
  # NF-ResNets' 1x1 projection where the width changes, none elsewhere.
  assert [k for k in params if k.endswith('_shortcut')] == [
      's2b1_shortcut', 's3b1_shortcut']
  assert params['s2b1_shortcut']['kernel'].shape == (1, 1, 16, 32)
  mask = optim._decay_mask(params, include_norms=False, include_biases=True)
  assert mask['s1b1_conv1'] == {'kernel': True, 'bias': True, 'gain': False}


def test_adaptive_gradient_clipping_is_the_papers_and_spares_the_classifier():
  config = helpers.tiny_config(optimizer='sgd', momentum=0.0,
                               learning_rate=1.0, agc_clipping=0.01)
  rng = np.random.default_rng(0)
  params = {'conv1': {'kernel': rng.normal(size=(3, 3, 2, 4)),
                      'bias': rng.normal(size=4)},
            'logits': {'kernel': rng.normal(size=(4, 10))}}
  grads = jax.tree.map(lambda p: rng.normal(size=p.shape), params)
  params, grads = jax.tree.map(np.float32, (params, grads))
  tx, _ = optim.make_optimizer(config, 10)
  updates, _ = tx.update(grads, tx.init(params), params)
  flat = lambda t: {'/'.join(k): v for k, v in
                    __import__('flax').traverse_util.flatten_dict(t).items()}
  want = ref.adaptive_grad_clip(flat(grads), flat(params), 0.01)
  got = flat(updates)
  for key in ('conv1/kernel', 'conv1/bias'):
    np.testing.assert_allclose(-got[key], want[key], rtol=1e-5, atol=1e-7)
    assert not np.allclose(-got[key], flat(grads)[key])  # It did clip.
  np.testing.assert_allclose(-got['logits/kernel'], flat(grads)['logits/kernel'],
                             rtol=1e-6)


@pytest.mark.parametrize('overrides,message', [
    ({'model.norm': 'frn'}, "norm='frn' replaces a norm and the activation.*"
     "placement=pre_act"),
    ({'model.norm': 'group', 'model.zero_debias': True},
     "keeps none; use it with one of"),
    ({'model.norm_free': 'fixup'}, "model.kind='cnn' has none"),
    ({'model.norm_free': 'skip', 'model.kind': 'resnet_cifar'},
     "model.norm_free='skip'.*allowed: none, skip_init, fixup, nf"),
    ({'model.norm_free': 'nf', 'model.kind': 'resnet_cifar',
      'model.norm': 'batch', 'model.placement': 'pre_act'},
     "add --config.model.norm=none"),
    ({'model.norm': 'instance'}, 'model.norm=instance normalizes each'),
    ({'agc_clipping': -1.0}, 'agc_clipping=-1'),
    ({'model.nf_alpha': 0.0}, 'model.nf_alpha=0.0'),
    ({'model.norm_free': 'nf', 'model.kind': 'resnet_cifar',
      'model.norm': 'none', 'model.placement': 'pre_act',
      'model.weight_standardization': True},
     'which only a normalizer after it undoes'),
    ({'model.norm': 'none', 'model.weight_standardization': True},
     "model.norm='none' with model.kind='cnn' has none"),
    ({'model.norm_free': 'nf', 'model.kind': 'resnet_cifar',
      'model.norm': 'none', 'model.placement': 'pre_act',
      'model.activation': 'sigmoid'}, "activation must be 'relu'"),
    ({'model.norm': 'evonorm_s0', 'model.placement': 'pre_act',
      'model.activation': 'sigmoid'}, "activation must be 'relu'"),
    ({'model.norm': 'evonorm_b0', 'model.placement': 'pre_act',
      'model.stats_scope': 'per_device'}, 'per_device is for model.norm=batch'),
    ({'model.zero_debias': True, 'model.bn_momentum': 1.0},
     'model.bn_momentum=1.0'),
    ({'model.norm': 'noisy_batch', 'model.noise_scale': 0.5},
     'model.noise_scale=0.5'),
    ({'model.norm': 'noisy_batch', 'model.noise_shift': -1.0},
     'model.noise_shift=-1.0'),
])
def test_bad_configs_are_user_errors(overrides, message):
  with pytest.raises(errors.UserError, match=message):
    validate.validate(helpers.tiny_config(**overrides))


# The new methods through main.py's flags and main(), in this process: the
# ResNets and VGG, NF-ResNet with AGC, EvoNorm-B0 with zero-debiased averages
# evaluated with them, PreciseBN and batch statistics, FRN with WS.
COMMON = ['--config.num_epochs=1', '--config.model.placement=pre_act',
          '--config.model.num_groups=2', '--config.precise_bn_batches=2']
METHOD_RUNS = {
    'nf': ['--config.model.kind=resnet_cifar', '--config.model.depth=8',
           '--config.model.width=4', '--config.model.norm=none',
           '--config.model.norm_free=nf', '--config.agc_clipping=0.01',
           '--config.eval_stats=ema'],
    'evonorm_b0': ['--config.model.kind=resnet_cifar', '--config.model.depth=8',
                   '--config.model.width=4', '--config.model.norm=evonorm_b0',
                   '--config.model.zero_debias=True',
                   '--config.eval_stats=ema,precise,batch'],
    'frn_ws': ['--config.model.kind=vgg', '--config.model.depth=11',
               '--config.model.width=2', '--config.model.norm=frn',
               '--config.model.weight_standardization=True',
               '--config.eval_stats=ema'],
}


@pytest.mark.parametrize('name', METHOD_RUNS)
def test_new_methods_train_and_evaluate_through_main(name, tmp_path,
                                                     learnable_data_dir):
  workdir = tmp_path / name
  code, err = helpers.main_here(
      workdir, f'--config.dataset={helpers.LEARNABLE}',
      f'--config.data_dir={learnable_data_dir}', *COMMON, *METHOD_RUNS[name])
  assert code == 0, err[-3000:]
  scalars = helpers.read_scalars(str(workdir))
  prefixes = ['eval'] + (['eval_precise', 'eval_batch']
                         if name == 'evonorm_b0' else [])
  for prefix in prefixes:
    (step, value), = scalars[f'{prefix}/accuracy']
    assert step == 8 and 0 <= value <= 1, (name, prefix)
  assert not any(t.startswith('eval_batch') for t in scalars) or (
      name == 'evonorm_b0')


def test_every_registered_normalizer_has_its_row_in_the_docs():
  """docs/normalizers.md: one row per registry entry, naming its paper and
  the fields it reads, and saying whether it keeps running statistics."""
  text = open(helpers.ROOT + '/docs/normalizers.md').read()
  table = text[text.index('| `model.norm` |'):].split('\n\n')[0]
  rows = {line.split('|')[1].strip().strip('`'): line
          for line in table.splitlines()[2:]}
  assert set(rows) == set(norms.REGISTRY)
  for name, spec in norms.REGISTRY.items():
    row = rows[name]
    assert spec.paper in row, (name, spec.paper)
    for field in spec.fields:
      assert f'`{field}`' in row, (name, field)
    cells = [c.strip() for c in row.split('|')]
    assert (cells[5] != 'no') == spec.running_stats, (name, cells[5])
