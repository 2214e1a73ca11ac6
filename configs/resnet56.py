r"""He et al. 2016 (section 4.2): ResNet-56 on CIFAR-10, ResNet-20's recipe.

  python main.py --config=configs/resnet56.py --workdir=runs/resnet56

Published (He et al. 2016, Table 6): 0.85M parameters, 6.97% test error
(93.03% accuracy) after 64k iterations at batch 128 (164 epochs here). A GPU
run; not trained here.
"""

from configs import resnet20


def get_config():
  return resnet20.get_config(depth=56)
