"""The seed CNN: collections, shapes, placement, bad names, and that the
families left it as it was."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bn_study.runtime import cpu
from bn_study import errors
from bn_study import models
from configs import tiny
from configs import wbn
from configs import wobn


def _init(config, shape=(2, 32, 32, 3)):
  model = models.create_model(config.model, 10)
  return model, jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))


def test_wobn_has_only_params_and_wbn_has_batch_stats():
  _, v = _init(wobn.get_config())
  assert set(v) == {'params'}
  _, v = _init(wbn.get_config())
  assert set(v) == {'params', 'batch_stats'}
  # The seed: a BN at the input of all six layers, raw image and logits too.
  assert sorted(v['batch_stats']) == sorted(
      f'{l}_norm' for l in ('conv1', 'conv2', 'conv3', 'dense1', 'dense2',
                            'logits'))
  assert v['batch_stats']['conv1_norm']['mean'].shape == (3,)
  assert v['batch_stats']['dense1_norm']['mean'].shape == (7260,)


@pytest.mark.parametrize('config_module', [wobn, wbn])
def test_seed_layer_shapes(config_module):
  model = models.create_model(config_module.get_config().model, 10)
  shapes = models.layer_shapes(model, (7, 32, 32, 3))
  assert list(shapes.values()) == [
      (7, 15, 15, 30), (7, 13, 13, 50), (7, 11, 11, 60), (7, 7260),
      (7, 3500), (7, 700), (7, 10)]
  assert list(shapes) == ['conv1', 'conv2', 'conv3', 'flatten', 'dense1',
                          'dense2', 'logits']


def test_summary_table_lists_every_layer():
  model = models.create_model(wbn.get_config().model, 10)
  table = models.summary(model, (10, 32, 32, 3))
  for text in ('conv1_norm', 'dense1', 'float32[10,7260]', 'float32[10,10]'):
    assert text in table


def test_initializers_are_tf1_defaults():
  config = wobn.get_config()
  model = models.create_model(config.model, 10)
  v = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
  assert float(jnp.abs(v['params']['dense1']['bias']).max()) == 0.0
  kernel = v['params']['dense1']['kernel']
  limit = (6 / (7260 + 3500)) ** 0.5  # Glorot-uniform bound.
  assert float(jnp.abs(kernel).max()) <= limit * (1 + 1e-6)
  assert float(jnp.abs(kernel).max()) > 0.95 * limit


def test_pre_act_drops_the_bias_before_each_norm():
  config = wbn.get_config()
  config.model.placement = 'pre_act'
  _, v = _init(config)
  for layer in ('conv1', 'conv2', 'conv3', 'dense1', 'dense2'):
    assert 'bias' not in v['params'][layer]
    assert f'{layer}_norm' in v['batch_stats']
  assert 'bias' in v['params']['logits']
  assert 'logits_norm' not in v['batch_stats']
  # Input placement keeps biases (the seed's tf.layers did).
  _, v = _init(wbn.get_config())
  assert 'bias' in v['params']['conv1']


@pytest.mark.parametrize('field,value', [('norm', 'batchnorm'),
                                         ('placement', 'after')])
def test_unknown_names_are_user_errors(field, value):
  config = wbn.get_config()
  config.model[field] = value
  with pytest.raises(errors.UserError, match=f'model.{field}=.*allowed'):
    models.validate(config.model)


def test_post_act_normalizes_after_the_relu_and_keeps_biases():
  config = wbn.get_config()
  config.model.placement = 'post_act'
  model, v = _init(config)
  for layer in ('conv1', 'conv2', 'conv3', 'dense1', 'dense2'):
    assert 'bias' in v['params'][layer]
    assert f'{layer}_norm' in v['batch_stats']
  assert 'logits_norm' not in v['batch_stats']
  # The norm sees the ReLU's output: its running mean moves to the mean of
  # non-negative values.
  x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  _, new = model.apply(variables, x, train=True, mutable=['batch_stats'])
  assert float(new['batch_stats']['conv1_norm']['mean'].min()) >= 0.0


@pytest.mark.parametrize('padding,stride', [('VALID', 2), ('VALID', 1),
                                            ('SAME', 2), ('SAME', 1)])
def test_im2col_conv_is_nn_conv(padding, stride):
  x = jax.random.normal(jax.random.key(0), (3, 11, 10, 4))
  kwargs = dict(features=5, kernel_size=(3, 3), strides=(stride, stride),
                padding=padding, use_bias=True,
                kernel_init=nn.initializers.glorot_uniform(),
                bias_init=nn.initializers.normal(1.0))
  ref = nn.Conv(**kwargs)
  ours = cpu.Im2colConv(**kwargs)
  variables = ref.init(jax.random.key(1), x)
  # Same parameter tree and the same initial values from the same key.
  ours_vars = ours.init(jax.random.key(1), x)
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(ours_vars)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(ours.apply(variables, x), ref.apply(variables, x),
                             rtol=1e-5, atol=1e-5)
  loss = lambda m: lambda v, x: (m.apply(v, x) ** 2).sum()
  g_ref = jax.grad(loss(ref), argnums=(0, 1))(variables, x)
  g_ours = jax.grad(loss(ours), argnums=(0, 1))(variables, x)
  for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_im2col_conv_forward_mode_is_nn_conv():
  # Its custom JVP must give nn.Conv's tangents too (jax.jvp, Hessian-vector
  # products), not only its gradients.
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, 4))
  kwargs = dict(features=6, kernel_size=(3, 3), strides=(1, 1),
                padding='VALID', use_bias=False,
                kernel_init=nn.initializers.glorot_uniform(),
                bias_init=nn.initializers.zeros)
  ref, ours = nn.Conv(**kwargs), cpu.Im2colConv(**kwargs)
  variables = ref.init(jax.random.key(1), x)
  tangents = (jax.tree.map(lambda v: jax.random.normal(jax.random.key(2),
                                                       v.shape), variables),
              jax.random.normal(jax.random.key(3), x.shape))
  out_ref, t_ref = jax.jvp(ref.apply, (variables, x), tangents)
  out_ours, t_ours = jax.jvp(ours.apply, (variables, x), tangents)
  np.testing.assert_allclose(out_ours, out_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(t_ours, t_ref, rtol=1e-4, atol=1e-4)


def test_conv_impl_chooses_the_conv_module():
  config = tiny.get_config()
  assert cpu.conv_module('auto', 'cpu') is cpu.Im2colConv
  assert cpu.conv_module('auto', 'cpu', 'bfloat16') is nn.Conv
  assert cpu.conv_module('auto', 'cpu', kind='resnet_cifar') is nn.Conv
  assert cpu.conv_module('im2col', 'cpu', kind='vgg') is cpu.Im2colConv
  assert cpu.conv_module('auto', 'gpu') is nn.Conv
  assert cpu.conv_module('xla', 'cpu') is nn.Conv
  assert cpu.conv_module('im2col', 'tpu') is cpu.Im2colConv
  config.model.conv_impl = 'xla'
  assert models.create_model(config.model, num_classes=10).conv is nn.Conv
  config.model.conv_impl = 'fft'
  with pytest.raises(errors.UserError, match="model.conv_impl='fft'"):
    models.validate(config.model)


def test_mlp_of_the_bn_paper():
  from configs import bn_paper_fig1  # pylint: disable=g-import-not-at-top
  config = bn_paper_fig1.get_config()
  model = models.create_model(config.model, num_classes=10)
  x = jnp.ones((4, 28, 28, 1))
  variables = model.init(jax.random.key(0), x, train=False)
  shapes = jax.tree.map(jnp.shape, variables['params'])
  assert shapes['dense1']['kernel'] == (784, 100)
  assert shapes['dense3']['kernel'] == (100, 100)
  assert shapes['logits']['kernel'] == (100, 10)
  assert 'bias' not in shapes['dense1']  # BN before the sigmoid drops it.
  assert set(variables['batch_stats']) == {'dense1_norm', 'dense2_norm',
                                           'dense3_norm'}
  # Small Gaussian weights, as the paper; N(0, 0.1^2) here.
  assert abs(float(variables['params']['dense1']['kernel'].std()) - 0.1) < 0.005
  _, inter = model.apply(variables, x, train=True,
                         mutable=['intermediates', 'batch_stats'])
  pre = inter['intermediates']['dense2_preact'][0]
  out = inter['intermediates']['dense2_out'][0]
  np.testing.assert_allclose(out, jax.nn.sigmoid(pre), rtol=1e-6)
  nobn = bn_paper_fig1.get_config('nobn').model
  assert nobn.norm == 'none' and nobn.activation == 'sigmoid'


# Fingerprints of the seed CNN and the BN paper's MLP, taken with the code as
# it was before the model families (bn_study/models.py at 52e3b83): parameter
# count, sum of |initial params| and sum of |logits| on a fixed input, in
# train and eval mode. The families must leave these models as they were.
SEED_FINGERPRINTS = {
    'wbn': (27935746, 359907.375, 51.78704833984375, 1.2901875972747803),
    'wobn': (27912660, 348364.375, 1.2940617799758911, 1.2940617799758911),
    'fig1': (100010, 8207.7861328125, 17.827367782592773, 16.18545913696289),
    'fig1_nobn': (99710, 7907.78662109375, 16.185354232788086,
                  16.185354232788086),
}


@pytest.mark.parametrize('name', SEED_FINGERPRINTS)
def test_seed_models_are_unchanged(name):
  from configs import bn_paper_fig1  # pylint: disable=g-import-not-at-top
  config, shape = {
      'wbn': (wbn.get_config(), (4, 32, 32, 3)),
      'wobn': (wobn.get_config(), (4, 32, 32, 3)),
      'fig1': (bn_paper_fig1.get_config(), (4, 28, 28, 1)),
      'fig1_nobn': (bn_paper_fig1.get_config('nobn'), (4, 28, 28, 1)),
  }[name]
  model = models.create_model(config.model, 10, total_steps=10)
  x = jax.random.uniform(jax.random.key(1), shape)
  v = model.init(jax.random.key(0), x[:1], train=False)
  leaves = jax.tree.leaves(v['params'])
  logits_train, _ = model.apply(v, x, train=True, mutable=['batch_stats'])
  logits_eval = model.apply(v, x, train=False)
  got = (sum(l.size for l in leaves),
         float(sum(jnp.abs(l).sum() for l in leaves)),
         float(jnp.abs(logits_train).sum()), float(jnp.abs(logits_eval).sum()))
  count, *sums = SEED_FINGERPRINTS[name]
  assert got[0] == count
  np.testing.assert_allclose(got[1:], sums, rtol=1e-5)
