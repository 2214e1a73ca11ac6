r"""The first runs: the seed CNN without and with BN, the seed's eval
failure beside PreciseBN, then each of the other normalizers of the seed's
configs. Every point is one of configs/*.py as given (their fields over
configs/default.py); `wbn` is the README's quick start,
`python main.py --config=configs/wbn.py --workdir=runs/wbn`.

  python -m bn_study.sweep --sweep=configs/sweeps/first_runs.py --workdir=runs/first_runs
  python -m bn_study.report runs/first_runs --out=docs/results/first_runs/report

About an hour on 2 CPU cores, one run at a time (34 minutes of it for wbn).
Measured: docs/results/first_runs/README.md. `first_runs.py:epochs=N`
trains the other normalizers N epochs (default 2).
"""

from bn_study import claims
from bn_study import sweep

CONFIG = 'configs/default.py'

_PRE_ACT = {'model.placement': 'pre_act'}


def get_sweep(arg=''):
  args = sweep.parse_arg(arg, {'epochs': 2}, 'first_runs')
  others = {'num_epochs': args['epochs']}
  return [
      # configs/wobn.py, 3 epochs.
      {'model.norm': 'none', 'num_epochs': 3},
      # configs/wbn.py as given: 20 epochs, the running averages and PreciseBN.
      {'model.norm': 'batch', 'eval_stats': 'ema,precise'},
      # configs/wbn_pre_act.py, ghost.py, renorm.py, group.py, layer.py.
      {'model.norm': 'batch', **_PRE_ACT, 'eval_stats': 'ema,precise',
       **others},
      {'model.norm': 'ghost_batch', **_PRE_ACT,
       'model.virtual_batch_size': 250, 'eval_stats': 'ema,precise', **others},
      {'model.norm': 'batch_renorm', **_PRE_ACT, 'eval_stats': 'ema,precise',
       **others},
      {'model.norm': 'group', **_PRE_ACT, 'model.num_groups': 10, **others},
      {'model.norm': 'layer', **_PRE_ACT, **others},
  ]


_NONE = {'model.norm': 'none'}
_WBN = {'model.norm': 'batch', 'model.placement': 'input'}
# One seed a run: a claim needs its margin.
_MARGIN = 0.02

CLAIMS = [
    claims.less('BN trains faster: a lower training loss at step 60 (the '
                'end of epoch 3)',
                claims.at_step('train/loss', 60, **_WBN),
                claims.at_step('train/loss', 60, **_NONE), _MARGIN),
    claims.less("The seed's failure: after epoch 3 (step 60), BN evaluates "
                'near chance with the running averages (under 0.2)',
                claims.at_step('eval/accuracy', 60, **_WBN),
                claims.constant(0.2), _MARGIN),
    claims.greater('PreciseBN fixes it: after epoch 3, eval with PreciseBN '
                   'beats eval with the running averages',
                   claims.at_step('eval_precise/accuracy', 60, **_WBN),
                   claims.at_step('eval/accuracy', 60, **_WBN), _MARGIN),
    claims.greater('With PreciseBN statistics, BN is more accurate than no BN '
                   'after epoch 3',
                   claims.at_step('eval_precise/accuracy', 60, **_WBN),
                   claims.at_step('eval/accuracy', 60, **_NONE), _MARGIN),
    claims.greater('The running averages catch up: by the end of 20 epochs '
                   'their eval is above 0.4',
                   claims.final('eval/accuracy', **_WBN),
                   claims.constant(0.4), _MARGIN),
]
