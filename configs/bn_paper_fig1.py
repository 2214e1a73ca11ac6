r"""Ioffe & Szegedy (2015), Figure 1: an MNIST MLP with and without BN.

  python main.py --config=configs/bn_paper_fig1.py --workdir=runs/fig1_bn
  python main.py --config=configs/bn_paper_fig1.py:nobn --workdir=runs/fig1_nobn
  python -m bn_study.sweep --sweep=configs/sweeps/bn_paper_fig1.py --workdir=runs/bn_paper_fig1
  python -m bn_study.report runs/bn_paper_fig1 --out=docs/results/bn_paper_fig1/report

From the paper: 3 fully connected hidden layers of 100 sigmoid units, small
random Gaussian initial weights, a 10-way softmax, 50,000 steps of 60 examples,
BN on every hidden layer before its sigmoid (bias dropped), the 15th/50th/85th
percentiles of a typical sigmoid's input on held-out data over training.

Where the paper is silent, chosen here (the same for both arms):
- weights N(0, 0.1^2) ("small random Gaussian");
- plain SGD, learning rate 0.5, constant;
- pixels scaled to [0, 1], nothing else;
- BN's running averages with momentum 0.99 (Flax's default) and eps 1e-3;
- eval on the 10,000 test images every 500 steps; instruments every 500 steps,
  act/ on the first 1,000 test images (BN in train mode).
Measured: docs/results/bn_paper_fig1/README.md.
"""

from configs import default


def get_config(arm='bn'):
  config = default.get_config()
  config.dataset = 'mnist'
  config.model.kind = 'mlp'
  config.model.hidden = (100, 100, 100)
  config.model.activation = 'sigmoid'
  config.model.kernel_init = 'normal'
  config.model.kernel_init_stddev = 0.1
  config.model.norm = {'bn': 'batch', 'nobn': 'none'}[arm]
  config.model.placement = 'pre_act'
  config.batch_size = 60
  config.eval_batch_size = 1000
  config.num_epochs = 50  # 1,000 steps per epoch of 60,000 images: 50,000 steps.
  config.optimizer = 'sgd'
  config.momentum = 0.0
  config.learning_rate = 0.5
  config.log_every_steps = 100
  config.eval_every_steps = 500
  config.checkpoint_every_epochs = 10
  config.analysis.every_steps = 500
  config.analysis.probe_size = 1000
  return config
