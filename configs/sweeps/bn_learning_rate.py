r"""BN and the learning rate (Bjorck et al. 2018; Santurkar et al. 2018).

  python -m bn_study.sweep --sweep=configs/sweeps/bn_learning_rate.py --workdir=runs/bn_learning_rate --parallel=2
  python -m bn_study.report runs/bn_learning_rate --out=docs/results/bn_learning_rate/report

The claim: BN trains at learning rates where the network without BN
diverges, and its best accuracy sits at a higher rate. At a 2-core CPU's
scale: the MNIST MLP of the BN paper's Figure 1 (configs/bn_paper_fig1.py,
3 x 100 units) with ReLU and He-normal init, plain SGD at batch 60, 5 epochs
(5,000 steps), with and without BN before each ReLU, at learning rates 0.003
to 30 (four orders of magnitude), 3 random seeds. Non-finite steps are
skipped, and `train/nonfinite_steps` logs the fraction of the steps in each
log window that were non-finite, so a diverging run still ends and says so.
`:seeds=N` changes the number of random seeds. The report's Claims section
gives the verdicts; docs/results/bn_learning_rate/README.md the numbers.
"""

from bn_study import claims
from bn_study import sweep

CONFIG = 'configs/bn_paper_fig1.py'
RATES = [0.003, 0.03, 0.3, 3.0, 30.0]


def get_sweep(arg=''):
  seeds = sweep.parse_arg(arg, {'seeds': 3}, 'bn_learning_rate')['seeds']
  return sweep.product(
      sweep.values('model.activation', ['relu']),
      sweep.values('model.kernel_init', ['he_normal']),
      sweep.values('num_epochs', [5]),
      sweep.values('eval_every_steps', [0]),
      sweep.values('analysis.every_steps', [0]),
      sweep.values('checkpoint_every_epochs', [5]),
      sweep.values('nonfinite', ['skip']),
      sweep.values('model.norm', ['none', 'batch']),
      sweep.values('learning_rate', RATES),
      sweep.values('seed', list(range(seeds))))


def _accuracy(norm, **where):
  return claims.final('eval/accuracy', **{'model.norm': norm}, **where)


CLAIMS = [
    claims.greater(
        'BN trains at a rate (3) where no BN does not: higher final accuracy',
        _accuracy('batch', learning_rate=3.0),
        _accuracy('none', learning_rate=3.0)),
    claims.greater(
        'Without BN, training diverges at rate 3 (non-finite steps)',
        claims.best('train/nonfinite_steps',
                    **{'model.norm': 'none'}, learning_rate=3.0),
        claims.constant(0.0)),
    claims.less(
        'With BN, training does not diverge at rate 3 (no non-finite steps)',
        claims.best('train/nonfinite_steps',
                    **{'model.norm': 'batch'}, learning_rate=3.0),
        claims.constant(1e-6)),
    claims.greater(
        "BN's best final accuracy sits at a higher learning rate",
        claims.argmax_over('learning_rate', _accuracy('batch')),
        claims.argmax_over('learning_rate', _accuracy('none'))),
    claims.greater(
        "BN's best final accuracy is higher than no BN's",
        claims.max_over('learning_rate', _accuracy('batch')),
        claims.max_over('learning_rate', _accuracy('none'))),
]
