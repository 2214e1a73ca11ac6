r"""The seed's comparison: no BN, BN at the seed's placement (the input of every
layer), and BN before each ReLU (Ioffe & Szegedy), over several seeds.

  python -m bn_study.sweep --sweep=configs/sweeps/seed_study.py --workdir=runs/seed_study
  python -m bn_study.report runs/seed_study --out=docs/results/seed_study

The full study is the seed's 20 epochs x 3 seeds (9 runs, ~1 h each on 2 CPU
cores). An argument shortens it: `seed_study.py:epochs=5,seeds=2`.
BN arms evaluate with the running averages (eval/) and PreciseBN
(eval_precise/). Measured: docs/results/seed_study/README.md.
"""

from bn_study import sweep

CONFIG = 'configs/default.py'


def get_sweep(arg=''):
  opts = sweep.parse_arg(arg, {'epochs': 20, 'seeds': 3}, 'seed_study')
  arms = sweep.zipped(
      sweep.values('model.norm', ['none', 'batch', 'batch']),
      sweep.values('model.placement', ['input', 'input', 'pre_act']),
      sweep.values('eval_stats', ['ema', 'ema,precise', 'ema,precise']))
  return sweep.product(
      sweep.values('num_epochs', [opts['epochs']]),
      arms,
      sweep.values('seed', list(range(opts['seeds']))))
