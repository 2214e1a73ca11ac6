"""airbench94's network (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a
single GPU", arXiv 2404.00498), with the config's normalizer in place of BN.

A 2x2 patch-whitening conv (VALID, 24 channels, a bias), GELU, then three
blocks of widths 64, 256, 256, each conv3x3 -> maxpool2 -> norm -> GELU ->
conv3x3 -> norm -> GELU, without residual connections; a global max pool
(32 -> 31 -> 15 -> 7 -> 3 -> 1), a linear head without a bias, and the
logits times 1/9. GELU is model.activation=gelu (configs/airbench94.py).
The block convs start as the paper's: PyTorch's default
uniform init, then the identity (dirac) on their first in-channels.

The whitening kernel is not learned: `whitening_kernel` fits it to training
images (training/data_init.py puts it in the params; `frozen` tells the
optimizer to leave it, and its bias after model.whiten_bias_epochs).
"""

import flax.linen as nn
import jax.numpy as jnp

from bn_study import errors
from bn_study.models import layers
from bn_study.runtime import cpu

WIDTHS = (64, 256, 256)
WHITEN_KERNEL = 2
# The eigenvectors of a 2x2x3 patch's covariance (12) and their negatives.
WHITEN_WIDTH = 2 * 3 * WHITEN_KERNEL**2
WHITEN_EPS = 5e-4  # Added to each eigenvalue before its inverse square root.
WHITEN_IMAGES = 5000  # The training split's first, as the paper fits it.
LOGIT_SCALE = 1 / 9
PLACEMENTS = ('pre_act',)  # conv -> (pool) -> norm -> GELU, as the paper.
# PyTorch's default conv and linear init, U(+-1/sqrt(fan_in)), which the
# paper keeps for the filters past the identity ones.
TORCH_INIT = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')


def dirac_init(base=TORCH_INIT):
  """`base`, then each of the first min(C, F) filters of a (kh, kw, C, F)
  kernel the identity on its own channel (torch.nn.init.dirac_)."""

  def init(key, shape, dtype=jnp.float32):
    kh, kw, cin, cout = shape
    n = min(cin, cout)
    identity = jnp.zeros((kh, kw, cin, n), dtype).at[kh // 2, kw // 2].set(
        jnp.eye(cin, n, dtype=dtype))
    return base(key, shape, dtype).at[..., :n].set(identity)

  return init


def whitening_kernel(images, eps: float = WHITEN_EPS):
  """The (2, 2, C, 8C) whitening kernel fit to `images` (NHWC, float, as
  the network sees them): the eigenvectors of the patches' second-moment
  matrix P^T P / n, largest eigenvalue first, each divided by
  sqrt(eigenvalue + eps), then the same negated."""
  k = WHITEN_KERNEL  # Every k x k patch, a row each, in the kernel's order.
  p = cpu.patches(jnp.asarray(images, jnp.float32), k, k, (1, 1))
  p = p.reshape(-1, p.shape[-1])
  eigenvalues, eigenvectors = jnp.linalg.eigh(p.T @ p / p.shape[0])
  order = jnp.argsort(-eigenvalues)
  scaled = eigenvectors[:, order] / jnp.sqrt(eigenvalues[order] + eps)
  c = images.shape[-1]
  kernel = scaled.reshape(k, k, c, -1)
  return jnp.concatenate([kernel, -kernel], axis=-1)


class AirBench(layers.Family):

  @nn.compact
  def __call__(self, x, *, train: bool, mask=None):
    cfg = self.model_config
    L = layers.Layers(self, train=train, mask=mask)
    x = L.input(x)
    # Not L.conv: VALID, not SAME, and never weight-standardized (its
    # kernel is the whitening, fit to the data).
    x = self.conv(features=WHITEN_WIDTH,
                  kernel_size=(WHITEN_KERNEL, WHITEN_KERNEL), padding='VALID',
                  use_bias=True, kernel_init=TORCH_INIT,
                  bias_init=layers.BIAS_INIT, dtype=L.dtype, name='whiten')(x)
    x = L.out(L.act(x, 'whiten'), 'whiten')
    width = (cfg.width or WIDTHS[0]) / WIDTHS[0]
    for block, features in enumerate(WIDTHS, start=1):
      features = int(features * width)
      for i in (1, 2):
        name = f'b{block}_conv{i}'
        x = L.conv(x, name, features, kernel_init=dirac_init())
        if i == 1:
          x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = L.out(L.norm_act(x, name), name)
    # A max pool over the whole map, as the paper's MaxPool2d(3): its
    # gradient goes to one maximum. (jnp.max's splits it among the elements
    # equal to the maximum, and XLA:CPU at optimization level 0 can
    # recompute them too differently for any to be: 0 / 0.)
    x = nn.max_pool(x, x.shape[1:3])
    x = L.out(x.reshape(x.shape[0], -1), 'pool')
    x = nn.Dense(self.num_classes, use_bias=False, dtype=L.dtype,
                 kernel_init=TORCH_INIT, name='logits')(x)
    return L.out(x.astype(jnp.float32) * LOGIT_SCALE, 'logits')


def data_init(images):
  """{param path: value} fit to training images: the whitening kernel."""
  return {('whiten', 'kernel'): whitening_kernel(images)}


def frozen(cfg):
  """The whitening kernel never trains; its bias trains for
  model.whiten_bias_epochs."""
  return {('whiten', 'kernel'): 0, ('whiten', 'bias'): cfg.whiten_bias_epochs}


def validate(cfg):
  if cfg.depth not in (None, 0):
    raise errors.UserError(
        f'model.depth={cfg.depth!r}: model.kind=airbench has one depth '
        '(leave model.depth unset); model.width scales its 64-256-256.')
  errors.check_number('model.whiten_bias_epochs', cfg.whiten_bias_epochs, 0)
