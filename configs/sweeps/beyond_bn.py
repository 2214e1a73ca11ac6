r"""ResNet-20 (configs/resnet20.py) with BN and the normalizers beyond it,
one budget for every arm.

  python -m bn_study.sweep --sweep=configs/sweeps/beyond_bn.py:seeds=2 --workdir=runs/beyond_bn
  python -m bn_study.report runs/beyond_bn --out=docs/results/beyond_bn/report

Arms: BN; BN with zero-debiased running averages (eval with them alone);
GN; GN+WS (BiT's); FRN+TLU; EvoNorm-S0; no norm with SkipInit. Every arm
keeps He et al.'s recipe (lr 0.1, its steps at 50% and 75% of the run);
the group-based arms use 8 groups (16/32/64 channels: 2-8 per group).
`beyond_bn.py:epochs=N,seeds=N` changes the budget; the measured one is in
docs/results/beyond_bn/README.md.
"""

from bn_study import claims
from bn_study import sweep

CONFIG = 'configs/resnet20.py'

ARMS = [
    {'model.norm': 'batch'},
    {'model.norm': 'batch', 'model.zero_debias': True},
    {'model.norm': 'group'},
    {'model.norm': 'group', 'model.weight_standardization': True},
    {'model.norm': 'frn'},
    {'model.norm': 'evonorm_s0'},
    {'model.norm': 'none', 'model.norm_free': 'skip_init'},
]


def get_sweep(arg=''):
  args = sweep.parse_arg(arg, {'epochs': 2, 'seeds': 1}, 'beyond_bn')
  return sweep.product(ARMS, sweep.values('model.num_groups', [8]),
                       sweep.values('num_epochs', [args['epochs']]),
                       sweep.values('seed', list(range(args['seeds']))))


def _final(**where):
  return claims.final('eval/accuracy', **where)


_BN = _final(**{'model.norm': 'batch', 'model.zero_debias': False})
_GN = _final(**{'model.norm': 'group',
                'model.weight_standardization': False})
_GN_WS = _final(**{'model.norm': 'group',
                   'model.weight_standardization': True})

_BN_DEBIASED = _final(**{'model.norm': 'batch', 'model.zero_debias': True})
_SKIP_INIT = _final(**{'model.norm_free': 'skip_init'})

CLAIMS = [
    claims.less('Zero-debiasing the running averages gains under a point '
                'here (momentum 0.9, 390 steps an epoch)',
                claims.difference(_BN_DEBIASED, _BN), claims.constant(0.01)),
    claims.greater('BN beats the closest batch-independent arm, GN+WS',
                   _BN, _GN_WS),
    claims.greater('WS rescues GN: GN+WS beats GN alone', _GN_WS, _GN),
    claims.greater('GN+WS beats SkipInit without a norm', _GN_WS, _SKIP_INIT),
    claims.greater('Without any norm, SkipInit beats EvoNorm-S0', _SKIP_INIT,
                   _final(**{'model.norm': 'evonorm_s0'})),
    claims.greater('Without any norm, SkipInit beats FRN+TLU', _SKIP_INIT,
                   _final(**{'model.norm': 'frn'})),
    claims.greater('EvoNorm-S0 beats FRN+TLU',
                   _final(**{'model.norm': 'evonorm_s0'}),
                   _final(**{'model.norm': 'frn'})),
]
