r"""BN vs no BN on the seed CNN with every instrument on (bn_study/training/instruments.py):
does BN reduce internal covariate shift here, and does it smooth the loss?

  python -m bn_study.sweep --sweep=configs/sweeps/instruments.py --workdir=runs/instruments
  python -m bn_study.report runs/instruments --out=docs/results/instruments/report

Instruments every 10 steps (each costs about as much as 10 train steps on
this model: ICS takes one gradient per layer). `instruments.py:epochs=N,seeds=N`
changes the length (default 3 epochs) and random seeds (default 1).
Measured: docs/results/instruments/README.md.
"""

from bn_study import sweep

CONFIG = 'configs/default.py'


def get_sweep(arg=''):
  opts = sweep.parse_arg(arg, {'epochs': 3, 'seeds': 1}, 'instruments')
  return sweep.product(
      sweep.values('num_epochs', [opts['epochs']]),
      sweep.values('analysis.every_steps', [10]),
      sweep.zipped(sweep.values('model.norm', ['none', 'batch']),
                   sweep.values('eval_stats', ['ema', 'ema,precise'])),
      sweep.values('seed', list(range(opts['seeds']))))
