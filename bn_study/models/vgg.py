"""VGG (Simonyan & Zisserman 2015) in its CIFAR form, the network of
Santurkar et al. 2018 and of torchvision's vgg*_bn.

3x3 SAME convs in five stages, each ended by 2x2 max-pooling (32x32 -> 1x1),
with a norm between each conv and its ReLU (model.placement=pre_act, as
vgg*_bn) or after the ReLU (post_act). The classifier head is one dense
layer from the 512 pooled features to the classes, as in the common CIFAR
VGG code (e.g. kuangliu/pytorch-cifar), not ImageNet's three 4096-wide
layers: the published 14.7M parameters of CIFAR VGG-16 are this form's.
"""

import flax.linen as nn

from bn_study import errors
from bn_study.models import layers

# Convs per stage (channels 64, 128, 256, 512, 512 at the default width).
STAGES = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3),
          19: (2, 2, 4, 4, 4)}
WIDTH = 64
PLACEMENTS = ('pre_act', 'post_act')


class VGG(layers.Family):

  @nn.compact
  def __call__(self, x, *, train: bool, mask=None):
    cfg = self.model_config
    L = layers.Layers(self, train=train, mask=mask)
    width = cfg.width or WIDTH
    post_act = cfg.placement == 'post_act'
    x = L.input(x)
    i = 0
    for stage, convs in enumerate(STAGES[cfg.depth]):
      features = width * 2**min(stage, 3)
      for _ in range(convs):
        i += 1
        name = f'conv{i}'
        # A bias only where no norm follows the conv directly.
        x = L.conv(x, name, features, use_bias=not L.normed or post_act)
        if post_act:
          x = L.norm(L.act(x, name), name)
        else:
          x = L.norm_act(x, name)
        x = L.out(x, name)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    return L.logits(x, self.num_classes)


def validate(cfg):
  if cfg.depth not in STAGES:
    raise errors.UserError(
        f'model.depth={cfg.depth!r} is not a VGG depth; choose one of '
        f'{sorted(STAGES)}.')
