r"""BN's choices inside airbench94 (configs/airbench94.py), one at a time
from the paper's, at a budget a 2-core CPU can afford.

  python -m bn_study.sweep --sweep=configs/sweeps/airbench_bn.py --workdir=runs/airbench_bn
  python -m bn_study.report runs/airbench_bn --out=runs/airbench_bn/report

Arms, each the paper's recipe with one thing changed: the scale learned
instead of frozen at 1; the norms' bias rate x1 instead of x64; running-
average momentum 0.9 or 0.99 instead of 0.6 (PyTorch's 0.1 and 0.01
instead of 0.4); eps 1e-5 instead of 1e-12; GN (16 groups) or LN instead of
BN; no norm, at a tenth of the rate. `airbench_bn.py:epochs=N,seeds=N`
changes the budget (default 2 epochs, 1 random seed: 96 steps a run).

The author's published ablation (KellerJordan/cifar10-zoo,
airbench_ablations) measured the epochs each variant needs for 94%; there,
the 64x BN-bias rate cut them from 22 to 17. At a fixed, short budget the
same effect shows as accuracy: the CLAIMS below compare final test
accuracies with the running averages. The runs skip the 6-view TTA (2 min
a run on a 2-core CPU, a fifth of a 1-epoch run): it shifts every arm alike
and decides none of the claims.
"""

from bn_study import claims
from bn_study import sweep

CONFIG = 'configs/airbench94.py'

PAPER = {'model.norm': 'batch', 'model.use_scale': False,
         'norm_bias_lr_multiplier': 64.0, 'model.bn_momentum': 0.6,
         'model.bn_epsilon': 1e-12}
ARMS = [
    PAPER,
    {**PAPER, 'model.use_scale': True},
    {**PAPER, 'norm_bias_lr_multiplier': 1.0},
    {**PAPER, 'model.bn_momentum': 0.9},
    {**PAPER, 'model.bn_momentum': 0.99},
    {**PAPER, 'model.bn_epsilon': 1e-5},
    {**PAPER, 'model.norm': 'group', 'model.num_groups': 16},
    {**PAPER, 'model.norm': 'layer'},
    {**PAPER, 'model.norm': 'none', 'learning_rate': 1.15},
]
# A single random seed has no spread: a claim is decided only by more than
# this margin (accuracy, 0-1).
MARGIN = 0.01


def get_sweep(arg=''):
  args = sweep.parse_arg(arg, {'epochs': 2, 'seeds': 1}, 'airbench_bn')
  return sweep.product(ARMS, sweep.values('num_epochs', [args['epochs']]),
                       sweep.values('eval_stats', ['ema']),
                       sweep.values('seed', list(range(args['seeds']))))


def _ema(**changed):
  return claims.final('eval/accuracy', **{**PAPER, **changed})


CLAIMS = [
    claims.greater("The 64x rate for BN's biases beats 1x at this budget",
                   _ema(), _ema(norm_bias_lr_multiplier=1.0), MARGIN),
    claims.greater('Freezing the scale at 1 costs nothing: no worse than a '
                   'learned scale by more than the margin', _ema(),
                   claims.difference(_ema(**{'model.use_scale': True}),
                                     claims.constant(MARGIN))),
    claims.greater('Momentum 0.6 beats 0.99: at a few hundred steps the '
                   'slow averages lag the weights (eval with them)', _ema(),
                   _ema(**{'model.bn_momentum': 0.99}), MARGIN),
    claims.greater('BN beats GN here', _ema(),
                   _ema(**{'model.norm': 'group'}), MARGIN),
    claims.greater('BN beats LN here', _ema(),
                   _ema(**{'model.norm': 'layer'}), MARGIN),
    claims.greater('BN beats no norm here', _ema(),
                   _ema(**{'model.norm': 'none'}), MARGIN),
]
