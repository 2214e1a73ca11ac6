r"""Which population statistics evaluate BN well (Wu & Johnson 2021).

  python -m bn_study.sweep --sweep=configs/sweeps/population_statistics.py --workdir=runs/population_statistics --parallel=2
  python -m bn_study.report runs/population_statistics --out=docs/results/population_statistics/report

The seed's eval failed because its running averages never moved. This study
asks how far any EMA lags, and whether PreciseBN fixes it. Every run
evaluates its network three ways: with the EMA (`eval/`), with PreciseBN
(`eval_precise/`: statistics recomputed over `precise_bn_batches` training
batches, weights frozen) and with batch statistics (`eval_batch/`). The arms
differ only in what eval uses: the EMA at momentum 0.9, 0.99 or 0.999; the
zero-debiased EMA at 0.99; PreciseBN over K = 1, 5 or 20 batches. Training
itself normalizes with batch statistics, so all arms of a random seed train
alike.

At a 2-core CPU's scale: the MNIST MLP of the BN paper's Figure 1 (3 x 100,
batch 60) with ReLU, He-normal init and BN before each ReLU, plain SGD, in
two regimes: a high learning rate (1.0) and few steps (evals every 50 steps
of one epoch; the claims read step 100), and the end of a normal run
(learning rate 0.3, 5 epochs). 2 random seeds (`:seeds=N`). The report's Claims
section gives the verdicts.
"""

from bn_study import claims
from bn_study import sweep

CONFIG = 'configs/bn_paper_fig1.py'
EARLY, NORMAL = 1.0, 0.3  # The regimes' learning rates name them.


def get_sweep(arg=''):
  seeds = sweep.parse_arg(arg, {'seeds': 2}, 'population_statistics')['seeds']
  return sweep.product(
      sweep.values('model.activation', ['relu']),
      sweep.values('model.kernel_init', ['he_normal']),
      sweep.values('model.norm', ['batch']),
      sweep.values('analysis.every_steps', [0]),
      sweep.values('eval_stats', ['ema,precise,batch']),
      sweep.zipped(sweep.values('learning_rate', [EARLY, NORMAL]),
                   sweep.values('num_epochs', [1, 5]),
                   sweep.values('eval_every_steps', [50, 0])),
      sweep.zipped(
          sweep.values('model.bn_momentum', [0.9, 0.99, 0.999, 0.99, 0.99,
                                             0.99]),
          sweep.values('model.zero_debias', [False, False, False, True,
                                             False, False]),
          sweep.values('precise_bn_batches', [20, 20, 20, 20, 1, 5])),
      sweep.values('seed', list(range(seeds))))


def _arm(momentum=0.99, zero_debias=False, batches=20, rate=EARLY):
  return {'model.bn_momentum': momentum, 'model.zero_debias': zero_debias,
          'precise_bn_batches': batches, 'learning_rate': rate}


def _early(tag, **arm):
  return claims.at_step(tag, 100, **_arm(**arm))


def _end(tag, **arm):
  return claims.final(tag, **_arm(rate=NORMAL, **arm))


CLAIMS = [
    claims.greater(
        'Early (step 100, rate 1): PreciseBN (K=20) beats the EMA at 0.999',
        _early('eval_precise/accuracy', momentum=0.999),
        _early('eval/accuracy', momentum=0.999)),
    claims.greater(
        'Early: PreciseBN (K=20) beats the EMA at 0.99',
        _early('eval_precise/accuracy'), _early('eval/accuracy')),
    claims.greater(
        'Early: the EMA at 0.9 beats the EMA at 0.999 (it lags less)',
        _early('eval/accuracy', momentum=0.9),
        _early('eval/accuracy', momentum=0.999)),
    claims.greater(
        'Early: the zero-debiased EMA at 0.99 beats the plain one',
        _early('eval/accuracy', zero_debias=True), _early('eval/accuracy')),
    claims.greater(
        'Early: PreciseBN over 20 batches beats PreciseBN over 1',
        _early('eval_precise/accuracy'),
        _early('eval_precise/accuracy', batches=1)),
    claims.greater(
        'End of a normal run (rate 0.3, 5 epochs): PreciseBN (K=20) beats '
        'the EMA at 0.99',
        _end('eval_precise/accuracy'), _end('eval/accuracy')),
]
