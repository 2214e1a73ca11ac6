r"""Does BN reduce internal covariate shift on VGG? (Santurkar et al. 2018)

  python -m bn_study.sweep --sweep=configs/sweeps/ics_vgg.py --workdir=runs/ics_vgg --parallel=2
  python -m bn_study.report runs/ics_vgg --out=docs/results/ics_vgg/report

Santurkar et al. found that on VGG BN does not reduce ICS while it smooths
the loss, and that "noisy BN" (BN followed by noise of non-zero mean and
non-unit variance, redrawn every step: model.norm=noisy_batch) still trains
about as well as BN. Three arms: no BN, BN and noisy BN, at one learning
rate, with the instruments on (bn_study/training/instruments.py: ICS per layer, the loss
and gradient along the gradient, activations) every 100 steps, on the state
before that step's update. The ICS claims below state the popular belief,
"BN reduces ICS": the paper predicts that they do not hold.

Both BN arms are evaluated with PreciseBN too (`eval_precise/`), which the
claims read: noisy BN's running averages average statistics taken under the
noise, which eval does not add.

At a 2-core CPU's scale: VGG-11 at a quarter of the width (configs/
vgg16_bn.py with model.depth=11, model.width=16: channels 16-128, BN after
every conv and before its ReLU), SGD at 0.02 for every arm (one rate low
enough for the arm without BN, not tuned; configs/vgg16_bn.py runs VGG
without BN at 0.01), momentum 0.9, L2 5e-4, steps of 10x at 50%
and 75%, crop and flip, batch 128, 3 epochs of the 50,000 CIFAR-10
training images (1,170 steps; non-finite steps skipped, their fraction
logged), 2 random seeds (`:seeds=N`, `:epochs=N`, `:depth=N`, `:width=N`).
The claims read the instruments from step 100 on, past the first steps'
transient. The full-scale command for a GPU is in
docs/results/ics_vgg/README.md.
"""

from bn_study import claims
from bn_study import sweep

CONFIG = 'configs/vgg16_bn.py'
ARMS = ['none', 'batch', 'noisy_batch']
FROM = 100  # The first measurement the claims read.
# At depth 11: a middle conv, the last conv and the classifier.
LAYERS = ('conv4', 'conv8', 'logits')


def get_sweep(arg=''):
  opts = sweep.parse_arg(arg, {'seeds': 2, 'epochs': 3, 'depth': 11,
                               'width': 16}, 'ics_vgg')
  return sweep.product(
      sweep.values('model.depth', [opts['depth']]),
      sweep.values('model.width', [opts['width']]),
      sweep.values('learning_rate', [0.02]),
      sweep.values('num_epochs', [opts['epochs']]),
      sweep.values('analysis.every_steps', [100]),
      sweep.values('log_every_steps', [50]),
      sweep.values('nonfinite', ['skip']),  # A diverging arm still ends.
      sweep.zipped(sweep.values('model.norm', ARMS),
                   sweep.values('eval_stats', ['ema', 'ema,precise',
                                               'ema,precise'])),
      sweep.values('seed', list(range(opts['seeds']))))


def _mean(tag, norm):
  return claims.mean(tag, FROM, **{'model.norm': norm})


def _accuracy(norm):
  """Final eval accuracy; the BN arms' with PreciseBN statistics."""
  tag = 'eval/accuracy' if norm == 'none' else 'eval_precise/accuracy'
  return claims.final(tag, **{'model.norm': norm})


_NOISY_GAP = claims.difference(_accuracy('batch'), _accuracy('noisy_batch'))

CLAIMS = [
    # The popular belief, which Santurkar et al. found does not hold on VGG.
    *[claims.less(f'BN reduces ICS at {layer}: smaller ||G - G\'||',
                  _mean(f'ics/{layer}/l2', 'batch'),
                  _mean(f'ics/{layer}/l2', 'none')) for layer in LAYERS],
    *[claims.greater(f'BN reduces ICS at {layer}: higher cos(G, G\')',
                     _mean(f'ics/{layer}/cos', 'batch'),
                     _mean(f'ics/{layer}/cos', 'none')) for layer in LAYERS],
    claims.less('BN smooths the loss: smaller loss range along the gradient',
                _mean('smoothness/loss_range', 'batch'),
                _mean('smoothness/loss_range', 'none')),
    claims.less("BN smooths the loss: smaller gradient change along it "
                "(effective beta)",
                _mean('smoothness/beta_max', 'batch'),
                _mean('smoothness/beta_max', 'none')),
    claims.greater('BN ends more accurate than no BN', _accuracy('batch'),
                   _accuracy('none')),
    claims.greater('Noisy BN ends more accurate than no BN',
                   _accuracy('noisy_batch'), _accuracy('none')),
    # "About as well": within 0.05 either way.
    claims.less('Noisy BN ends at most 0.05 below BN', _NOISY_GAP,
                claims.constant(0.05)),
    claims.greater('Noisy BN ends at most 0.05 above BN', _NOISY_GAP,
                   claims.constant(-0.05)),
]
