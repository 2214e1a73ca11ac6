r"""He et al. 2016 (section 4.2): ResNet-110 on CIFAR-10, with its warmup.

  python main.py --config=configs/resnet110.py --workdir=runs/resnet110

Published (He et al. 2016, Table 6): 1.7M parameters, 6.43% test error (best
of 5 runs; mean 6.61 +- 0.16%), 93.57% accuracy, after 64k iterations at
batch 128 (164 epochs here). The paper found 0.1 "slightly too large to start
converging" at this depth and warmed up at 0.01 until the training error was
below 80% (about 400 iterations); here a linear warmup over the first epoch
(390 steps) stands in for it. Bjorck et al. 2018 train this network to show
that BN permits the larger learning rate. A GPU run; not trained here.
"""

from configs import resnet20


def get_config():
  config = resnet20.get_config(depth=110)
  config.warmup_epochs = 1.0
  return config
