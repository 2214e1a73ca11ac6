r"""Group norm against BN over batch sizes (Wu & He 2018, Figure 1).

  python -m bn_study.sweep --sweep=configs/sweeps/gn_batch_size.py --workdir=runs/gn_batch_size --parallel=2
  python -m bn_study.report runs/gn_batch_size --out=docs/results/gn_batch_size/report

The claim: BN's accuracy falls at small batches while GN's stays flat. Two
arms:
- batch: BN, GN and GN+WS (BiT's) trained at batch sizes 2, 4, 8, 16 and 32,
  the learning rate scaled linearly with the batch (0.1 x B / 128, Goyal et
  al.), as the paper does;
- ghost: BN at a batch of 128 (rate 0.1) normalizing ghost batches of 2, 4,
  8, 16, 32 or 128 (= plain BN), so only the normalization batch changes and
  the optimizer's stays. Its fall says how much of the batch arm's is the
  statistics alone.

At a 2-core CPU's scale: ResNet-8 (configs/resnet20.py at depth 8: n=1,
the published width 16, BN before each ReLU, He et al.'s SGD recipe with
the schedule compressed: momentum 0.9, steps of 10x at 50% and 75%,
L2 1e-4, crop and flip), trained on the first 10,000 CIFAR-10 training
images for 4 epochs (the same 40,000 images at every batch size) and
evaluated on the 10,000 test images with the running averages. GN uses 4
groups (4, 8 and 16 channels a group: the paper's 32 needs wider layers).
2 random seeds (`:seeds=N`; `:epochs=N`, `:images=N`, `:depth=N` scale it). The
full-scale command for a GPU is in docs/results/gn_batch_size/README.md.
"""

from bn_study import claims
from bn_study import sweep

CONFIG = 'configs/resnet20.py'
BATCHES = [2, 4, 8, 16, 32]
GHOST_BATCH = 128
BASE_RATE = 0.1  # At batch 128 (He et al.), scaled linearly.


def _rate(batch):
  return round(BASE_RATE * batch / GHOST_BATCH, 6)


def get_sweep(arg=''):
  opts = sweep.parse_arg(arg, {'seeds': 2, 'epochs': 4, 'images': 10000,
                               'depth': 8}, 'gn_batch_size')
  norms = sweep.zipped(
      sweep.values('model.norm', ['batch', 'group', 'group']),
      sweep.values('model.weight_standardization', [False, False, True]))
  batch_arm = sweep.product(
      norms,
      sweep.zipped(sweep.values('batch_size', BATCHES),
                   sweep.values('learning_rate', [_rate(b) for b in BATCHES])))
  ghost_arm = sweep.product(
      sweep.values('model.norm', ['ghost_batch']),
      sweep.values('batch_size', [GHOST_BATCH]),
      sweep.values('learning_rate', [_rate(GHOST_BATCH)]),
      sweep.values('model.virtual_batch_size', BATCHES + [GHOST_BATCH]))
  return sweep.product(
      sweep.values('train_split', [f'train[:{opts["images"]}]']),
      sweep.values('num_epochs', [opts['epochs']]),
      sweep.values('model.depth', [opts['depth']]),
      sweep.values('model.num_groups', [4]),
      sweep.values('log_every_steps', [50]),
      sweep.chain(batch_arm, ghost_arm),
      sweep.values('seed', list(range(opts['seeds']))))


def _accuracy(norm, ws=False, **where):
  return claims.final('eval/accuracy', **{
      'model.norm': norm, 'model.weight_standardization': ws}, **where)


def _fall(norm, ws=False):
  """Accuracy at batch 32 minus at batch 2."""
  return claims.difference(_accuracy(norm, ws, batch_size=32),
                           _accuracy(norm, ws, batch_size=2))


def _ghost(size):
  return claims.final('eval/accuracy', **{
      'model.norm': 'ghost_batch', 'model.virtual_batch_size': size})


_GHOST_FALL = claims.difference(_ghost(32), _ghost(2))

CLAIMS = [
    claims.less("BN's accuracy falls from batch 32 to batch 2",
                _accuracy('batch', batch_size=2),
                _accuracy('batch', batch_size=32)),
    claims.less("GN's accuracy varies less over batch sizes 2-32 than BN's",
                claims.range_over('batch_size', _accuracy('group')),
                claims.range_over('batch_size', _accuracy('batch'))),
    claims.less("GN+WS's accuracy varies less over batch sizes than BN's",
                claims.range_over('batch_size', _accuracy('group', True)),
                claims.range_over('batch_size', _accuracy('batch'))),
    claims.greater('At batch 2, GN beats BN',
                   _accuracy('group', batch_size=2),
                   _accuracy('batch', batch_size=2)),
    claims.greater('At batch 32, BN beats GN',
                   _accuracy('batch', batch_size=32),
                   _accuracy('group', batch_size=32)),
    claims.less("GN's accuracy stays flat: it falls by under 0.02 from "
                'batch 32 to 2', _fall('group'), claims.constant(0.02)),
    claims.greater('Ghost arm (optimizer batch 128): ghost batches of 2 '
                   'alone cost accuracy against ghost batches of 32',
                   _GHOST_FALL, claims.constant(0.0)),
    claims.less("The ghost arm's fall (32 to 2) is smaller than the batch "
                "arm's: part of BN's fall is not the statistics",
                _GHOST_FALL, _fall('batch')),
]
