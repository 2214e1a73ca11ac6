"""Residual networks: He et al.'s CIFAR ResNets (v1) and the pre-activation
ResNet (v2).

Where the norms sit (model.placement=pre_act in both, a norm right before
each ReLU; docs/models.md); `model.norm_free` trains either without one
(bn_study/models/norm_free.py):
- resnet_cifar (He et al. 2016, section 4.2): conv -> norm -> ReLU; a block
  is conv-norm-ReLU-conv-norm, added to the shortcut, then ReLU.
- preact_resnet (He et al. 2016b): norm -> ReLU -> conv; a block is
  norm-ReLU-conv-norm-ReLU-conv added to the shortcut, and a final
  norm-ReLU before pooling.
"""

import flax.linen as nn
import jax.numpy as jnp

from bn_study import errors
from bn_study.models import layers
from bn_study.models import norm_free

# resnet_cifar: depth 6n + 2, three stages of n blocks at widths w, 2w, 4w.
CIFAR_WIDTH = 16
# preact_resnet: BasicBlocks per stage at widths w, 2w, 4w, 8w. ResNet-10,
# one block a stage, is the family's smallest (timm's resnet10t has its stages).
PREACT_BLOCKS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
PREACT_WIDTH = 64


def _option_a(x, features: int, stride: int):
  """He et al.'s option A shortcut: identity, subsampled by `stride`, the
  new channels zeros; no parameters."""
  if stride > 1:
    x = x[:, ::stride, ::stride, :]
  extra = features - x.shape[-1]
  if extra:
    x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, extra)))
  return x


class ResNetCIFAR(layers.Family):
  """He et al. 2016's CIFAR ResNet-(6n+2): a 3x3 conv, 3 stages of n basic
  blocks (16, 32, 64 channels at depth's published width; stride 2 at the
  start of stages 2 and 3), global average pooling, a dense layer. With
  model.norm_free=nf its blocks are NF-ResNets' pre-activation ones, with
  their projection shortcuts at the transitions."""

  @nn.compact
  def __call__(self, x, *, train: bool, mask=None):
    cfg = self.model_config
    L = layers.Layers(self, train=train, mask=mask)
    width = cfg.width or CIFAR_WIDTH
    n = (cfg.depth - 2) // 6
    R = norm_free.Residual(self, num_blocks=3 * n)
    x = L.conv(L.input(x), 'conv1', width)
    if not R.nf:  # NF's stem feeds the first block's own activation.
      x = L.norm_act(R.bias(x, 'conv1_bias_act'), 'conv1')
    x = L.out(x, 'conv1')
    for stage in range(3):
      features = width * 2**stage
      for block in range(n):
        name = f's{stage + 1}b{block + 1}'
        stride = 2 if stage and not block else 1
        transition = x.shape[-1] != features
        if R.nf:
          # NF-ResNets' transition: a 1x1 conv of the activated x / beta
          # (option A's zero channels would carry no variance).
          h = L.act(R.nf_input(x, transition), f'{name}_input')
          shortcut = x
          if transition:
            shortcut = L.conv(h, f'{name}_shortcut', features, kernel=1,
                              stride=stride)
        else:  # Fixup's subsampled shortcut takes the biased input too.
          h = R.bias(x, f'{name}_conv1_bias_in')
          shortcut = _option_a(h if transition else x, features, stride)
        y = L.conv(h, f'{name}_conv1', features, stride=stride,
                   kernel_init=R.branch_init(last=False))
        y = L.norm_act(R.bias(y, f'{name}_conv1_bias_act'), f'{name}_conv1')
        y = L.conv(R.bias(L.out(y, f'{name}_conv1'), f'{name}_conv2_bias_in'),
                   f'{name}_conv2', features,
                   kernel_init=R.branch_init(last=True))
        y = L.norm(y, f'{name}_conv2', zero_scale=cfg.zero_init_residual)
        y = R.branch_end(y, f'{name}_conv2') + shortcut
        x = L.out(y if R.nf else L.act(y, f'{name}_conv2'), f'{name}_conv2')
    if R.nf:
      x = L.act(x, 'logits')
    return L.logits(R.bias(x, 'logits_bias_in'), self.num_classes,
                    zero_init=R.fixup)


class PreActResNet(layers.Family):
  """He et al. 2016b's pre-activation ResNet in the common CIFAR form
  (ResNet-18: a 3x3 conv at 64 channels, 4 stages of 2 BasicBlocks at 64,
  128, 256, 512, stride 2 at the start of stages 2-4). A block's shortcut is
  the identity, or a 1x1 conv of the block's normalized input where the
  shape changes (projection, option B)."""

  @nn.compact
  def __call__(self, x, *, train: bool, mask=None):
    cfg = self.model_config
    L = layers.Layers(self, train=train, mask=mask)
    width = cfg.width or PREACT_WIDTH
    R = norm_free.Residual(self, num_blocks=sum(PREACT_BLOCKS[cfg.depth]))
    # The first conv feeds a norm (the first block's), so no bias with one.
    x = L.out(L.conv(L.input(x), 'conv1', width), 'conv1')
    for stage, blocks in enumerate(PREACT_BLOCKS[cfg.depth]):
      features = width * 2**stage
      for block in range(blocks):
        name = f's{stage + 1}b{block + 1}'
        stride = 2 if stage and not block else 1
        transition = stride > 1 or x.shape[-1] != features
        if R.nf:
          h = L.act(R.nf_input(x, transition), f'{name}_conv1')
        else:
          h = L.norm_act(R.bias(x, f'{name}_conv1_bias_act'), f'{name}_conv1')
        h = R.bias(h, f'{name}_conv1_bias_in')
        shortcut = x
        if transition:
          shortcut = L.conv(h, f'{name}_shortcut', features, kernel=1,
                            stride=stride, use_bias=False)
        y = L.out(L.conv(h, f'{name}_conv1', features, stride=stride,
                         kernel_init=R.branch_init(last=False)),
                  f'{name}_conv1')
        y = L.norm_act(R.bias(y, f'{name}_conv2_bias_act'), f'{name}_conv2')
        y = L.conv(R.bias(y, f'{name}_conv2_bias_in'), f'{name}_conv2',
                   features, kernel_init=R.branch_init(last=True))
        x = L.out(R.branch_end(y, f'{name}_conv2') + shortcut,
                  f'{name}_conv2')
    x = L.norm_act(R.bias(x, 'logits_bias_act'), 'logits')
    return L.logits(R.bias(x, 'logits_bias_in'), self.num_classes,
                    zero_init=R.fixup)


def validate_cifar(cfg):
  if (not isinstance(cfg.depth, int) or cfg.depth < 8
      or (cfg.depth - 2) % 6):
    raise errors.UserError(
        f'model.depth={cfg.depth!r} is not a CIFAR ResNet depth: it must be '
        '6n + 2 with n >= 1, e.g. 20, 32, 44, 56 or 110.')


def validate_preact(cfg):
  if cfg.depth not in PREACT_BLOCKS:
    raise errors.UserError(
        f'model.depth={cfg.depth!r} is not a pre-activation ResNet depth here; '
        f'choose one of {sorted(PREACT_BLOCKS)}.')
