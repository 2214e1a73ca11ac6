r"""The seed CNN with BN where Ioffe & Szegedy put it: conv/dense (no bias) ->
BN -> ReLU, no BN on the raw image or before the logits.

  python main.py --config=configs/wbn_pre_act.py --workdir=runs/wbn_pre_act

Measured (docs/results/first_runs/README.md; 2 epochs on a 2-core CPU):
eval accuracy after 2 epochs 0.100 with the running averages, 0.593 with
PreciseBN.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.norm = 'batch'
  config.model.placement = 'pre_act'
  config.eval_stats = 'ema,precise'
  return config
