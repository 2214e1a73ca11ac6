r"""Learning rate x normalizer on the seed CNN: which normalizers let Adam take
larger steps, and which need smaller ones?

  python -m bn_study.sweep --sweep=configs/sweeps/lr_norms.py --workdir=runs/lr_norms
  python -m bn_study.report runs/lr_norms --out=runs/lr_norms/report

No norm and four normalizers (batch, ghost_batch, group, layer: 5 of the
11 model.norm values) before each ReLU (pre_act, where BN is usually put);
the batch-statistics ones also evaluate with PreciseBN. 5 x 4 = 20 runs of
`epochs` (default 5) epochs, one random seed; `lr_norms.py:epochs=2`
shortens them. Never run, so no results (20 runs x 5 epochs is about 5 h on
2 CPU cores).
"""

from bn_study import sweep

CONFIG = 'configs/default.py'


def get_sweep(arg=''):
  epochs = sweep.parse_arg(arg, {'epochs': 5}, 'lr_norms')['epochs']
  return sweep.product(
      sweep.values('num_epochs', [epochs]),
      sweep.values('model.placement', ['pre_act']),
      sweep.zipped(
          sweep.values('model.norm',
                       ['none', 'batch', 'ghost_batch', 'group', 'layer']),
          sweep.values('eval_stats',
                       ['ema', 'ema,precise', 'ema,precise', 'ema', 'ema'])),
      sweep.values('learning_rate', [3e-4, 1e-3, 3e-3, 1e-2]))
