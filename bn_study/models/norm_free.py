"""Residual networks trained without any normalizer: `model.norm_free`.

- skip_init (De & Smith 2020): a learnable scalar from 0 multiplies each
  residual branch (`<block>_conv2_skip_gain`), so every block starts as the
  identity, what BN does implicitly by shrinking the branches.
- fixup (Zhang et al. 2019): no conv biases; a scalar bias before each conv,
  each activation inside a branch and the classifier, a scalar multiplier
  (from 1) at the end of each branch; the branches' convs He-initialized and
  scaled by L^(-1/(2m-2)) = L^(-1/2) (L residual branches of m = 2 convs),
  their last conv and the classifier initialized to 0. As in the authors'
  CIFAR code, the ReLU after a v1 block's addition has no bias of its own
  (the branch's last bias precedes it). Their code also trains the scalars
  at a tenth of the learning rate; here they take the run's.
- nf (Brock et al. 2021a, NF-ResNets): pre-activation blocks
  x + alpha * f(x / beta), beta = sqrt of the residual stream's expected
  variance, computed analytically (Var grows by alpha^2 a block and is reset
  at each transition, whose shortcut is a 1x1 conv of the block's activated
  input, unit variance as every branch conv's); every conv in
  Scaled Weight Standardization (bn_study/models/layers.py) and every ReLU
  times its gain, so each branch starts with unit-variance signals.
  Adaptive gradient clipping, its companion, is the optimizer option
  `agc_clipping` (bn_study/training/optim.py).

The residual families (bn_study/models/resnet.py) call a `Residual` where
the schemes differ; with norm_free=none every hook is the identity and the
norms do the work.
"""

import math

import flax.linen as nn

from bn_study import errors

NORM_FREE = ('none', 'skip_init', 'fixup', 'nf')
RESIDUAL_KINDS = ('resnet_cifar', 'preact_resnet')


def validate(cfg):
  errors.check_choice('model.norm_free', cfg.norm_free, NORM_FREE)
  errors.check_number('model.nf_alpha', cfg.nf_alpha, 0, low_open=True)
  if cfg.norm_free == 'none':
    return
  if cfg.kind not in RESIDUAL_KINDS:
    raise errors.UserError(
        f'model.norm_free={cfg.norm_free!r} rescales residual branches, and '
        f'model.kind={cfg.kind!r} has none; use it with one of '
        f'{list(RESIDUAL_KINDS)}.')
  if cfg.norm != 'none':
    raise errors.UserError(
        f'model.norm_free={cfg.norm_free!r} trains without a normalizer, but '
        f'model.norm={cfg.norm!r}; add --config.model.norm=none.')
  if cfg.norm_free == 'nf' and cfg.activation != 'relu':
    raise errors.UserError(
        f'model.norm_free=nf keeps unit variance with the ReLU\'s gain, so '
        f'model.activation must be \'relu\', not {cfg.activation!r}.')


class Residual:
  """One residual network's norm-free parts, built inside its compact
  __call__ (the scalars bind to `module`)."""

  def __init__(self, module, num_blocks: int):
    cfg = module.model_config
    self.module = module
    self.scheme = cfg.norm_free
    self.alpha = cfg.nf_alpha
    self.num_blocks = num_blocks
    self.nf = self.scheme == 'nf'
    self.fixup = self.scheme == 'fixup'
    self.expected_var = 1.0  # nf: of the residual stream, before a block.

  def _scalar(self, name: str, value: float):
    return self.module.param(name, nn.initializers.constant(value), ())

  def bias(self, x, name: str):
    """Fixup's scalar bias (from 0) before a conv, activation or the
    classifier; x itself for the other schemes."""
    if not self.fixup:
      return x
    return x + self._scalar(name, 0.0).astype(x.dtype)

  def branch_init(self, last: bool):
    """Fixup's init of a residual branch's conv (None: the config's)."""
    if not self.fixup:
      return None
    if last:
      return nn.initializers.zeros
    # He et al.'s N(0, 2 / fan_out), its std times L^(-1/2).
    return nn.initializers.variance_scaling(2.0 / self.num_blocks, 'fan_out',
                                            'normal')

  def branch_end(self, y, layer: str):
    """The branch's output before it joins the shortcut."""
    if self.scheme == 'skip_init':
      return y * self._scalar(f'{layer}_skip_gain', 0.0).astype(y.dtype)
    if self.fixup:
      y = y * self._scalar(f'{layer}_scale', 1.0).astype(y.dtype)
      return self.bias(y, f'{layer}_bias_out')
    if self.nf:
      return y * self.alpha
    return y

  def nf_input(self, x, transition: bool):
    """nf: the block's input divided by beta, and the expected variance
    after the block updated."""
    beta = math.sqrt(self.expected_var)
    self.expected_var = ((1.0 if transition else self.expected_var)
                         + self.alpha**2)
    return x / beta
