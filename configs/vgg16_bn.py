r"""VGG-16 on CIFAR-10 with BN after every conv (torchvision's vgg16_bn in
its CIFAR form), or without (:nobn): the network of Santurkar et al. 2018.

  python main.py --config=configs/vgg16_bn.py --workdir=runs/vgg16_bn
  python main.py --config=configs/vgg16_bn.py:nobn --workdir=runs/vgg16

13 3x3 convs in 5 stages with max-pooling, each conv -> BN -> ReLU, then one
dense layer from the 512 pooled features (14.72M parameters; the CIFAR head
of kuangliu/pytorch-cifar, not ImageNet's three 4096-wide layers).
Santurkar et al. compare this network with and without BN at learning rates
0.1 and 0.5 and measure ICS and smoothness along training
(analysis.every_steps); kuangliu/pytorch-cifar's README (not a paper)
reports 92.64% with BN. The recipe here, chosen rather than published:
SGD 0.1 (0.01 without BN, not tuned; --config.learning_rate=0.1 gives
Santurkar et al.'s same-rate comparison), momentum
0.9, L2 5e-4, lr / 10 at 50% and 75%, crop and flip, 160 epochs. A GPU run;
not trained here.
"""

from configs import resnet20


def get_config(arm='bn'):
  if arm not in ('bn', 'nobn'):
    raise ValueError(f'configs/vgg16_bn.py:{arm}: the argument is bn or nobn.')
  config = resnet20.get_config()
  config.model.kind = 'vgg'
  config.model.depth = 16
  config.model.norm = 'batch' if arm == 'bn' else 'none'
  config.weight_decay = 5e-4
  config.num_epochs = 160
  if arm == 'nobn':
    config.learning_rate = 0.01
  return config
