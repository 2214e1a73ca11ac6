r"""The seed CNN on CIFAR-10 with BatchNorm at the input of every layer.

  python main.py --config=configs/wbn.py --workdir=runs/wbn

Measured (docs/results/first_runs/README.md; 2-core AMD EPYC, CPU only):
33.9 min for the 20 epochs. Final eval accuracy 0.517 with the running
averages, 0.622 with PreciseBN (0.1374 and 0.603 after epoch 3). The running
averages lag: momentum 0.99 over 20 steps an epoch leaves 82% of their
initial values in place after epoch 1, so their eval sits near chance for
half the run while PreciseBN's shows what the weights learned
(docs/normalizers.md, "Running averages that lag").
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.norm = 'batch'
  # The running averages (the seed's eval) and PreciseBN's population
  # statistics, side by side: with 20 steps an epoch and momentum 0.99 the
  # averages lag the weights for most of the run.
  config.eval_stats = 'ema,precise'
  return config
