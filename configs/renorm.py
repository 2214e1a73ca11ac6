r"""Batch renormalization (Ioffe 2017), pre-activation, with the paper's r_max /
d_max schedule scaled to the run (configs/default.py).

  python main.py --config=configs/renorm.py --workdir=runs/renorm

Measured (docs/results/first_runs/README.md; 2 epochs on a 2-core CPU):
eval accuracy after 2 epochs 0.100 with the running averages, 0.271 with
PreciseBN (its eval loss 110.565: it collapses in epoch 2).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.norm = 'batch_renorm'
  config.model.placement = 'pre_act'
  config.eval_stats = 'ema,precise'
  return config
