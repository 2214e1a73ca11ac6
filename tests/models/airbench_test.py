"""airbench94's network: the whitening conv against its definition, the
shapes and parameter count of the paper's network, and the dirac init.

Not yet in families_test's training of every norm in every family: at XLA's
backend optimization level 0 (the suite's fast compiles) two train steps of
this network with model.norm=instance or frn left every parameter NaN, where
the default level leaves them finite (cause not found yet)."""

import jax
import jax.numpy as jnp
import numpy as np

from bn_study import models
from bn_study.models import airbench
from bn_study.runtime import cpu
from tests import helpers


def _images(n=64, seed=0):
  """Images whose neighbouring pixels and channels are correlated, as real
  ones are (a whitening of white noise would prove little)."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 16, 16, 3))
  x = x + np.roll(x, 1, axis=1) + np.roll(x, 1, axis=2)
  x[..., 1] += 0.8 * x[..., 0]
  return x.astype(np.float32)


def test_patches_are_in_the_conv_kernels_order():
  # The whitening fit reads its patches as Im2colConv does (cpu.patches).
  images = _images(4)
  kernel = np.random.default_rng(1).normal(size=(2, 2, 3, 5)).astype(
      np.float32)
  conv = jax.lax.conv_general_dilated(
      images, kernel, (1, 1), 'VALID',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  rows = cpu.patches(images, 2, 2, (1, 1)).reshape(-1, 12)
  np.testing.assert_allclose(rows @ kernel.reshape(-1, 5),
                             np.asarray(conv).reshape(-1, 5), rtol=1e-5,
                             atol=1e-5)


def test_whitening_kernel_whitens_the_patches_it_was_fit_to():
  images = _images()
  eps = airbench.WHITEN_EPS
  kernel = np.asarray(airbench.whitening_kernel(images, eps))
  assert kernel.shape == (2, 2, 3, 24)
  np.testing.assert_array_equal(kernel[..., 12:], -kernel[..., :12])
  # numpy's own: the patches' second moments, their eigenvalues, largest
  # first. Whitened, the patches' second moments are diag(l / (l + eps)).
  p = np.stack([images[:, i:15 + i, j:15 + j] for i in (0, 1)
                for j in (0, 1)], axis=3).reshape(-1, 12).astype(np.float64)
  eigenvalues = np.sort(np.linalg.eigvalsh(p.T @ p / len(p)))[::-1]
  white = p @ kernel[..., :12].reshape(12, 12).astype(np.float64)
  np.testing.assert_allclose(white.T @ white / len(p),
                             np.diag(eigenvalues / (eigenvalues + eps)),
                             atol=2e-3)
  assert eigenvalues[0] / eigenvalues[-1] > 10  # The test data is colored.


def _model(**model):
  config = helpers.tiny_config(**{'model.kind': 'airbench',
                                  'model.placement': 'pre_act',
                                  'model.activation': 'gelu',
                                  'model.norm': 'batch'})
  for key, value in model.items():
    config.model[key] = value
  models.validate(config.model)
  return models.create_model(config.model, 10)


def test_the_papers_shapes_and_parameters():
  model = _model()
  shapes = models.layer_shapes(model, (2, 32, 32, 3))
  assert shapes['whiten'] == (2, 31, 31, 24)
  assert shapes['b1_conv1'] == (2, 15, 15, 64)
  assert shapes['b2_conv2'] == (2, 7, 7, 256)
  assert shapes['b3_conv2'] == (2, 3, 3, 256)
  assert shapes['pool'] == (2, 256) and shapes['logits'] == (2, 10)
  # By hand: the whitening conv and its bias; six bias-free 3x3 convs; the
  # head without a bias; each BN's scale and bias.
  convs = 24 * 64 + 64 * 64 + 64 * 256 + 256 * 256 + 2 * 256 * 256
  expected = (2 * 2 * 3 * 24 + 24) + 9 * convs + 256 * 10 + 2 * (
      2 * 64 + 4 * 256)
  assert models.num_params(model, (1, 32, 32, 3)) == expected == 1_972_792


def test_block_convs_start_as_the_identity_on_their_inputs():
  params = _model().init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                         train=False)['params']
  for name, cin in (('b1_conv1', 24), ('b1_conv2', 64), ('b2_conv1', 64),
                    ('b3_conv2', 256)):
    kernel = np.asarray(params[name]['kernel'])
    identity = np.zeros(kernel.shape[:3] + (cin,), np.float32)
    identity[1, 1] = np.eye(cin)
    np.testing.assert_array_equal(kernel[..., :cin], identity, err_msg=name)
    rest = kernel[..., cin:]
    if rest.size:  # PyTorch's default init: U(+-1/sqrt(fan_in)).
      bound = 1 / np.sqrt(9 * cin)
      assert np.abs(rest).max() <= bound and rest.std() > bound / 3, name


def test_width_scales_the_blocks():
  shapes = models.layer_shapes(_model(width=8), (1, 32, 32, 3))
  assert [shapes[f'b{b}_conv2'][-1] for b in (1, 2, 3)] == [8, 32, 32]
