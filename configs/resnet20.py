r"""He et al. 2016 (section 4.2): ResNet-20 on CIFAR-10, the paper's recipe.

  python main.py --config=configs/resnet20.py --workdir=runs/resnet20
  python main.py --config=configs/resnet20.py --workdir=runs/resnet20_nonorm \
      --config.model.norm=none

Published (He et al. 2016, Table 6): 0.27M parameters, 8.75% test error
(91.25% accuracy) after 64k iterations at batch 128 (164 epochs here: 390
steps each). Meant for a GPU; on a 2-core CPU an epoch takes minutes.

The recipe: SGD, momentum 0.9, learning rate 0.1 divided by 10 at 50% and
75% of the run (the paper's 32k and 48k of 64k iterations), weight decay
1e-4 as L2 on every parameter, batch 128, He initialization (N(0, 2/fan_out),
as fb.resnet.torch), option A shortcuts, BN after every conv and before its
ReLU, with Torch's momentum 0.1 (0.9 here, a decay) and eps 1e-5; per-channel
normalized images, padded by 4 and randomly cropped and flipped. Evaluated
on the 10,000 test images after each epoch with the running averages.

Compressed for a CPU (the schedule is in fractions of the run, so it keeps
its shape):

  python main.py --config=configs/resnet20.py --workdir=runs/resnet20_15ep \
      --config.num_epochs=15

Measured here, 15 epochs on a 2-core CPU (docs/results/resnet20/README.md,
with accuracy and seconds per epoch): 83.19% eval accuracy with BN; without
a norm (--config.model.norm=none) the loss was not finite within 50 steps at
0.1, and at --config.learning_rate=0.01 it ended at 56.11%. About 9 minutes
an epoch with two runs sharing the 2 cores (134.9 min for 15); 541 ms a step alone (211 s of
steps an epoch, docs/performance.md).
"""

from configs import default


def get_config(depth=20):
  config = default.get_config()
  config.model.kind = 'resnet_cifar'
  config.model.depth = int(depth)
  config.model.norm = 'batch'
  config.model.placement = 'pre_act'  # conv -> norm -> ReLU.
  config.model.kernel_init = 'he_normal'
  config.model.bn_momentum = 0.9
  config.model.bn_epsilon = 1e-5
  config.model.num_groups = 16  # For --config.model.norm=group: divides 16/32/64.
  config.augment = 'crop_flip'
  config.normalize = 'per_channel'
  config.batch_size = 128
  config.eval_batch_size = 1000
  config.num_epochs = 164
  config.optimizer = 'sgd'
  config.learning_rate = 0.1
  config.momentum = 0.9
  config.lr_schedule = 'piecewise'
  config.lr_boundaries = (0.5, 0.75)
  config.lr_decay_factor = 0.1
  config.weight_decay = 1e-4
  config.weight_decay_style = 'coupled'
  config.weight_decay_norms = True
  config.log_every_steps = 50
  config.model.virtual_batch_size = 32  # For --config.model.norm=ghost_batch.
  return config
