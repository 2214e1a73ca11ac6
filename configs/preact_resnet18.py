r"""The pre-activation ResNet-18 (He et al. 2016b) on CIFAR-10.

  python main.py --config=configs/preact_resnet18.py --workdir=runs/preact18

The common CIFAR ResNet-18: a 3x3 conv, four stages of two BasicBlocks (64,
128, 256, 512 channels), each norm -> ReLU -> conv, projection shortcuts
where the shape changes, a final norm -> ReLU, 11.17M parameters. He et al.
2016b report no ResNet-18 on CIFAR; kuangliu/pytorch-cifar's README (not a
paper) reports 95.11% for this network with its own recipe. Here: He et al.'s
CIFAR recipe (SGD 0.1, momentum 0.9, L2 5e-4 as that code uses, lr / 10 at
50% and 75%, crop and flip), 200 epochs. A GPU run; not trained here.
"""

from configs import resnet20


def get_config():
  config = resnet20.get_config()
  config.model.kind = 'preact_resnet'
  config.model.depth = 18
  config.model.num_groups = 32  # For --config.model.norm=group: Wu & He's G.
  config.weight_decay = 5e-4
  config.num_epochs = 200
  return config
