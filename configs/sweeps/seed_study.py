r"""The seed's comparison: no BN, BN at the seed's placement (the input of every
layer), and BN before each ReLU (Ioffe & Szegedy), over several random
seeds.

  python -m bn_study.sweep --sweep=configs/sweeps/seed_study.py --workdir=runs/seed_study
  python -m bn_study.report runs/seed_study --out=docs/results/seed_study/report

The full study is the seed's 20 epochs x 3 random seeds (9 runs, each as
long as the README's 20-epoch run of configs/wbn.py). An argument shortens
it: `seed_study.py:epochs=5,seeds=2`.
BN arms evaluate with the running averages (eval/) and PreciseBN
(eval_precise/). The seed's claims are CLAIMS below; the report computes
their verdicts. Measured: docs/results/seed_study/README.md.
"""

from bn_study import claims
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


_NONE = {'model.norm': 'none'}
_SEED_BN = {'model.norm': 'batch', 'model.placement': 'input'}
_PRE_ACT_BN = {'model.norm': 'batch', 'model.placement': 'pre_act'}
# With one seed a side has no spread: a claim then needs its margin.
_MARGIN = 0.02

CLAIMS = [
    claims.less("The seed: BN reaches a training loss of 0.2 in ~75 steps "
                "(the loss logged at step 76, the mean of steps 75-76)",
                claims.at_step('train/loss', 76, **_SEED_BN),
                claims.constant(0.2), _MARGIN),
    claims.less('BN trains faster: a lower training loss at step 76',
                claims.at_step('train/loss', 76, **_SEED_BN),
                claims.at_step('train/loss', 76, **_NONE), _MARGIN),
    claims.less('The seed: BN evaluates at chance with the running averages '
                '(final accuracy under 0.2)',
                claims.final('eval/accuracy', **_SEED_BN),
                claims.constant(0.2), _MARGIN),
    claims.greater('With PreciseBN statistics, BN ends more accurate than no '
                   'BN', claims.final('eval_precise/accuracy', **_SEED_BN),
                   claims.final('eval/accuracy', **_NONE), _MARGIN),
    claims.greater('BN overfits early: its final eval loss (PreciseBN) is '
                   'above that after epoch 3 (step 60)',
                   claims.final('eval_precise/loss', **_SEED_BN),
                   claims.at_step('eval_precise/loss', 60, **_SEED_BN),
                   _MARGIN),
    claims.greater('BN before the ReLU ends more accurate than at the '
                   "seed's placement (PreciseBN)",
                   claims.final('eval_precise/accuracy', **_PRE_ACT_BN),
                   claims.final('eval_precise/accuracy', **_SEED_BN),
                   _MARGIN),
]
