"""Model families: published sizes, every normalizer in every family, the
norm placements each family maps, and mixed precision."""

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from bn_study import errors
from bn_study.runtime import mesh as mesh_lib
from bn_study import models
from bn_study.models import norms
from bn_study.training import predict
from bn_study.training import loop
from bn_study.training import optim
from bn_study.training import steps as steps_lib
from bn_study.training import validate
from configs import default
from tests import helpers

# He et al. 2016, Table 6; the pre-activation ResNet-18 and VGG-16 of the
# common CIFAR code (kuangliu/pytorch-cifar: 11.17M and 14.72M).
# Millions, to the published precision.
PUBLISHED_PARAMS = [
    ('resnet_cifar', 20, '0.27'), ('resnet_cifar', 32, '0.46'),
    ('resnet_cifar', 44, '0.66'), ('resnet_cifar', 56, '0.85'),
    ('resnet_cifar', 110, '1.7'), ('preact_resnet', 18, '11.17'),
    ('vgg', 16, '14.72')]
# The smallest member of each family, at tiny widths.
TINY = {'resnet_cifar': dict(depth=8, width=4),
        'preact_resnet': dict(depth=10, width=2),
        'vgg': dict(depth=11, width=2),
        'airbench': dict(width=8)}
FAMILIES = tuple(TINY)


def family_config(kind, **model):
  config = helpers.tiny_config(**{'model.kind': kind, 'model.placement':
                                  'pre_act', 'model.virtual_batch_size': 4,
                                  'model.num_groups': 2})
  for key, value in {**TINY[kind], **model}.items():
    config.model[key] = value
  return config


@pytest.mark.parametrize('kind,depth,published', PUBLISHED_PARAMS)
def test_parameter_counts_are_the_published_ones(kind, depth, published):
  config = default.get_config().model
  config.kind, config.depth, config.norm = kind, depth, 'batch'
  config.placement = 'pre_act'
  model = models.create_model(config, 10)
  millions = models.num_params(model, (1, 32, 32, 3)) / 1e6
  decimals = len(published.split('.')[1])
  assert f'{millions:.{decimals}f}' == published


def test_published_depth_and_width_are_the_defaults():
  config = default.get_config().model
  config.kind, config.norm, config.placement = 'resnet_cifar', 'batch', 'pre_act'
  shapes = models.layer_shapes(models.create_model(config, 10), (2, 32, 32, 3))
  # 1 + 3 stages x 3 blocks x 2 convs + the classifier: ResNet-20.
  convs = [name for name in shapes if 'conv' in name]
  assert len(convs) == 19
  assert shapes['conv1'] == (2, 32, 32, 16)
  assert shapes['s2b1_conv1'] == (2, 16, 16, 32)
  assert shapes['s3b3_conv2'] == (2, 8, 8, 64)
  assert list(shapes)[-2:] == ['pool', 'logits']
  assert shapes['logits'] == (2, 10)


def test_option_a_shortcut_has_no_parameters_and_zero_pads():
  config = family_config('resnet_cifar', norm='none')
  model = models.create_model(config.model, 10)
  params = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))['params']
  assert not [name for name in params if 'shortcut' in name]
  # With every conv zero, a block's output is its shortcut's ReLU: the
  # identity, subsampled, with zero channels appended.
  x = jnp.abs(jax.random.normal(jax.random.key(1), (2, 32, 32, 3)))
  variables = model.init(jax.random.key(0), x, train=False)
  zeroed = jax.tree.map(jnp.zeros_like, variables['params'])
  zeroed['conv1']['bias'] = jnp.arange(1.0, 5.0)  # conv1 -> channels 1..4.
  _, inter = model.apply({'params': zeroed}, x, train=False,
                         mutable=['intermediates'])
  out = inter['intermediates']['s2b1_conv2_out'][0]
  assert out.shape == (2, 16, 16, 8)
  np.testing.assert_array_equal(out[..., :4], jnp.broadcast_to(
      jnp.arange(1.0, 5.0), (2, 16, 16, 4)))
  np.testing.assert_array_equal(out[..., 4:], 0.0)


def test_preact_block_projects_where_the_shape_changes():
  config = family_config('preact_resnet')
  model = models.create_model(config.model, 10)
  layers = models.weight_layers(model, (1, 32, 32, 3))
  assert [l for l in layers if 'shortcut' in l] == [
      's2b1_shortcut', 's3b1_shortcut', 's4b1_shortcut']
  assert layers[0] == 'conv1' and layers[-1] == 'logits'
  variables = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
  # norm -> ReLU -> conv: the first block's first norm sees conv1's output,
  # and a final norm precedes the classifier.
  assert variables['batch_stats']['s1b1_conv1_norm']['mean'].shape == (2,)
  assert 'logits_norm' in variables['batch_stats']
  assert 'bias' not in variables['params']['s1b1_conv1']


def test_zero_init_residual_zeroes_each_branchs_last_norm():
  config = family_config('resnet_cifar', zero_init_residual=True)
  model = models.create_model(config.model, 10)
  params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                      train=False)['params']
  for name, p in params.items():
    if name.endswith('_conv2_norm'):
      np.testing.assert_array_equal(p['scale'], 0.0)
    elif name.endswith('_norm'):
      np.testing.assert_array_equal(p['scale'], 1.0)
  config = family_config('vgg', zero_init_residual=True)
  with pytest.raises(errors.UserError, match='zero_init_residual.*resnet_cifar'):
    models.validate(config.model)


@pytest.mark.parametrize('kind,field,value,match', [
    ('resnet_cifar', 'depth', 21, 'model.depth=21 .*6n \\+ 2'),
    ('preact_resnet', 'depth', 50, 'model.depth=50 .*\\[10, 18, 34\\]'),
    ('vgg', 'depth', 12, 'model.depth=12 .*\\[11, 13, 16, 19\\]'),
    ('resnet_cifar', 'placement', 'input', "placement='input' .*'pre_act'"),
    ('vgg', 'width', 0, 'model.width=0'),
    ('resnet_cifar', 'dtype', 'float16', "model.dtype='float16'"),
])
def test_bad_family_fields_are_user_errors(kind, field, value, match):
  config = family_config(kind)
  config.model[field] = value
  with pytest.raises(errors.UserError, match=match):
    models.validate(config.model)


# Every family builds its norms with the one norms.make_norm, so each
# normalizer is trained in one family, the families taken in turn. FRN goes
# in all three: a normalization-activation layer is the one kind whose wiring
# each family decides (where no activation follows, it loses its TLU).
NORM_IN_FAMILY = [('frn', kind) for kind in FAMILIES] + [
    (norm, FAMILIES[i % len(FAMILIES)])
    for i, norm in enumerate(n for n in norms.NORMS if n != 'frn')]


def test_the_pairs_cover_every_norm_and_each_family_meets_every_kind():
  assert {norm for norm, _ in NORM_IN_FAMILY} == set(norms.NORMS)
  for kind in FAMILIES:
    met = {norm for norm, k in NORM_IN_FAMILY if k == kind}
    assert met & set(norms.BATCH_NORMS), kind
    assert met - set(norms.BATCH_NORMS) - set(norms.NORM_ACTS), kind
    assert met & set(norms.NORM_ACTS), kind


@pytest.mark.parametrize('norm,kind', NORM_IN_FAMILY)
def test_every_norm_trains_and_evaluates_in_a_family(norm, kind):
  _train_and_evaluate(family_config(kind, norm=norm))


# The methods beyond a normalizer choice, each where it applies.
METHODS = {
    'ws': dict(norm='group', weight_standardization=True),  # BiT's GN+WS.
    'zero_debias': dict(norm='batch', zero_debias=True),
    'skip_init': dict(norm='none', norm_free='skip_init'),
    'fixup': dict(norm='none', norm_free='fixup'),
    'nf': dict(norm='none', norm_free='nf'),
}


# The normalizer-free schemes rewrite each ResNet family's blocks, so they
# go in both; weight standardization and zero-debiasing live in the norm and
# the conv, so one family each.
METHOD_IN_FAMILY = [('ws', 'vgg'), ('zero_debias', 'preact_resnet')] + [
    (method, kind) for method in ('skip_init', 'fixup', 'nf')
    for kind in ('resnet_cifar', 'preact_resnet')] + [('fixup', 'vgg')]


@pytest.mark.parametrize('method,kind', METHOD_IN_FAMILY)
def test_every_method_trains_and_evaluates_where_it_applies(method, kind):
  config = family_config(kind, **METHODS[method])
  if method == 'nf':
    config.agc_clipping = 0.01  # NF-ResNets' companion.
  if config.model.norm_free != 'none' and kind == 'vgg':
    with pytest.raises(errors.UserError, match='has none'):
      validate.validate(config)
    return
  _train_and_evaluate(config)


def _train_and_evaluate(config):
  """Two train steps and every eval mode the model has, on a padded batch."""
  norm = config.model.norm
  validate.validate(config)
  mesh = mesh_lib.make_mesh()
  model = models.create_model(config.model, 10, total_steps=4)
  tx, schedule = optim.make_optimizer(config, 4)
  state = steps_lib.create_train_state(config, model, (32, 32, 3), tx, mesh)
  steps = steps_lib.jit_steps(mesh, schedule)
  images, labels = helpers.learnable_images(8)
  batch = mesh_lib.global_batch(
      {'image': images.astype(np.float32) / 255.0,
       'label': labels.astype(np.int32),
       'mask': np.array([1.0] * 6 + [0.0] * 2, np.float32)}, mesh)
  before = jax.device_get((state.params, state.batch_stats))
  metrics = steps_lib.TrainMetrics.empty()
  for _ in range(2):
    state, metrics = steps.train(state, {k: batch[k] for k in ('image', 'label')},
                                 metrics)
  assert np.isfinite(metrics.compute()['loss'])
  moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), before[0],
                       jax.device_get(state.params))
  assert any(jax.tree.leaves(moved))
  assert bool(state.batch_stats) == (norm in norms.BATCH_NORMS)
  modes = [steps.eval] + ([steps.eval_batch] if state.batch_stats else [])
  for step in modes:
    result = step(state, batch, steps_lib.EvalMetrics.empty()).compute()
    assert np.isfinite(result['loss'])
    assert 0 <= result['accuracy'] <= 1


@pytest.mark.parametrize('norm', norms.NORMS[1:])
def test_under_bfloat16_norms_reduce_in_float32_and_return_bfloat16(norm):
  config = family_config('resnet_cifar', norm=norm, dtype='bfloat16')
  model = models.create_model(config.model, 10, total_steps=4)
  x = jax.random.normal(jax.random.key(1), (8, 32, 32, 3))
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x,
                                           train=False))(x)
  assert all(p.dtype == jnp.float32
             for p in jax.tree.leaves(variables['params']))
  for train_mode in (True, False):
    logits, state = jax.jit(lambda v, x, t=train_mode: model.apply(
        v, x, train=t, mutable=['intermediates', 'batch_stats']))(variables, x)
    assert logits.dtype == jnp.float32  # The loss is computed in float32.
    inter = state['intermediates']
    # Each norm feeds a ReLU: its input is the norm's output.
    for name, (value,) in inter.items():
      if name.endswith('_preact'):
        assert value.dtype == jnp.bfloat16, (name, train_mode)
    for leaf in jax.tree.leaves(state.get('batch_stats', {})):
      assert leaf.dtype in (jnp.float32, jnp.int32)


def test_bfloat16_statistics_match_float32():
  # The running averages, reduced in float32 from bf16 activations, land
  # within bf16's rounding of the float32 model's.
  out = {}
  for dtype in ('float32', 'bfloat16'):
    config = family_config('resnet_cifar', norm='batch', dtype=dtype,
                           conv_impl='xla')
    model = models.create_model(config.model, 10)
    x = jax.random.normal(jax.random.key(1), (64, 32, 32, 3))
    variables = jax.jit(lambda x: model.init(jax.random.key(0), x,
                                             train=False))(x)
    _, state = jax.jit(lambda v, x: model.apply(
        v, x, train=True, mutable=['batch_stats']))(variables, x)
    out[dtype] = state['batch_stats']['conv1_norm']
  for key in ('mean', 'var'):
    np.testing.assert_allclose(out['bfloat16'][key], out['float32'][key],
                               rtol=0.02, atol=1e-3)


# The two ResNets: weight layers for the instruments with parameter-free
# shortcuts and with projections. VGG's plain chain of convs, the simplest
# case, trains and evaluates with its norms above.
@pytest.mark.parametrize('kind', ['resnet_cifar', 'preact_resnet'])
def test_a_family_runs_the_whole_machinery(kind, tmp_path):
  # Augmented, normalized input; PreciseBN and batch-statistics eval; every
  # instrument; then --predict on the run.
  config = family_config(kind, norm='batch')
  config.update_from_flattened_dict({
      'num_epochs': 1, 'augment': 'crop_flip', 'normalize': 'per_channel',
      # PreciseBN over more batches than an epoch has (8).
      'eval_stats': 'ema,precise,batch', 'precise_bn_batches': 10,
      'analysis.every_steps': 4, 'analysis.probe_size': 8,
      'lr_schedule': 'piecewise', 'optimizer': 'sgd', 'learning_rate': 0.05,
      'weight_decay': 1e-4, 'weight_decay_style': 'coupled'})
  with helpers.mock_learnable(64, 21):
    state = loop.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 8
  scalars = helpers.read_scalars(str(tmp_path))
  for prefix in ('eval', 'eval_precise', 'eval_batch'):
    (step, value), = scalars[f'{prefix}/accuracy']
    assert step == 8 and 0 <= value <= 1
  model = models.create_model(config.model, 10)
  layers = models.weight_layers(model, (1, 32, 32, 3))
  for layer in layers[1:]:
    assert [s for s, _ in scalars[f'ics/{layer}/l2']] == [0, 4], layer
  for layer in layers:
    assert f'norms/{layer}/update_ratio' in scalars, layer
  assert 'smoothness/beta_max' in scalars
  assert any(tag.startswith('act/') for tag in scalars)
  image = tmp_path / 'x.png'
  Image.fromarray(helpers.learnable_images(1)[0][0]).save(image)
  (path, name, score), = predict.predict(config, str(tmp_path), [str(image)])
  assert path == str(image) and 0 < score <= 1 and name
