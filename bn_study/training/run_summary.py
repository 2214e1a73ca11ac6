"""What a finished run prints last: its final accuracy in each eval mode,
where it is, how to look at it, and, where the running averages and
PreciseBN disagree widely, what that means."""

import shlex
from typing import Dict

# Eval modes' scalar prefixes (evaluator.EVAL_STATS) as a user reads them.
MODE_NAMES = {'eval': 'running averages (ema)',
              'eval_precise': 'PreciseBN statistics (precise)',
              'eval_batch': 'each eval batch\'s own statistics (batch)',
              'eval_tta': 'running averages over TTA views (tta)'}
# A gap this wide is not noise: the averages are stale, or PreciseBN's
# estimate is short of batches.
WIDE_GAP = 0.10
LAG_DOC = 'docs/normalizers.md#running-averages-that-lag'


def text(workdir: str, last: Dict[str, Dict[str, float]], epochs: float,
         steps: int, seconds: float, config) -> str:
  """`last`: {scalar prefix: {'accuracy', 'loss'}} of the final eval."""
  lines = [f'Finished {epochs:g} epochs ({steps} steps) in '
           f'{seconds / 60:.1f} min; workdir {workdir}']
  width = max(len(MODE_NAMES[p]) for p in last)
  for prefix, result in last.items():
    lines.append(f'  eval accuracy with {MODE_NAMES[prefix]:<{width}}  '
                 f'{result["accuracy"]:.4f}  (loss {result["loss"]:.4f}, '
                 f'{prefix}/accuracy)')
  if 'eval' in last and 'eval_precise' in last:
    gap = last['eval_precise']['accuracy'] - last['eval']['accuracy']
    if gap >= WIDE_GAP:
      lines.append(
          f'  The running averages lag the weights ({gap:.2f} below '
          f'PreciseBN): bn_momentum={config.model.bn_momentum:g} over few '
          'steps still holds early training\'s statistics. Trust '
          f'eval_precise; see {LAG_DOC}.')
    elif -gap >= WIDE_GAP:
      lines.append(
          f'  PreciseBN is {-gap:.2f} below the running averages: '
          f'precise_bn_batches={config.precise_bn_batches} batches may be '
          f'too few for its estimate; see {LAG_DOC}.')
  quoted, report = shlex.quote(workdir), shlex.quote(f'{workdir}/report')
  lines += ['Look at it:',
            f'  tensorboard --logdir={quoted}',
            f'  python -m bn_study.report {quoted} --out={report}']
  return '\n'.join(lines)
