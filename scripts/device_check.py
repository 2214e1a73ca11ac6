r"""The GPU check (scripts/device_check.sh runs it): on one GPU in at most 8
minutes, with no network, TensorFlow, TFDS, clu or ml_collections installed
(device_bundle/ brings what is missing), writes under --out:

- benchmark_loop.json: `python -m bn_study.benchmark --loop` rows for the
  BN paper's MLP at batch 60, the seed CNN at 2,500 and ResNet-20 at 128;
- airbench94/: configs/airbench94.py's whole run (XLA's convs), whose
  timing.json and summary give its wall time against the paper's 3.29 s
  on an A100 and its TTA accuracy against 94.01%;
- seed_study/: the seed study at full length (20 epochs x 3 seeds x 3 arms)
  and its report;
- resnet20/: ResNet-20 with and without BN for as many epochs as fit;
- device_check.json: what ran, how long, and what could not run and why;
- *.log: each command's output.

  python scripts/device_check.py --out=OUT [--cpu_rehearsal]

--cpu_rehearsal shrinks the work so that every path runs on a CPU in about
10 minutes: the benchmark rows at batches 60, 250 and 32 with 2 s of loop,
airbench94 at width 8 for half an epoch, the seed study to 1 epoch x 1 seed, ResNet-20 to one epoch of ResNet-8 at
width 8 and batch 500; the time budget is then 3 times as long.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGET_S = 8 * 60
RESNET_STEPS_PER_EPOCH = 50000 // 128


def _run(name, argv, out, timeout, summary):
  """Runs argv (from the repository root), its output to OUT/NAME.log."""
  start = time.time()
  log = os.path.join(out, f'{name}.log')
  try:
    with open(log, 'w') as f:
      proc = subprocess.run([sys.executable] + argv, cwd=ROOT, stdout=f,
                            stderr=subprocess.STDOUT, timeout=max(1, timeout),
                            check=False)
    status = 'ok' if proc.returncode == 0 else f'exit {proc.returncode}'
  except subprocess.TimeoutExpired:
    status = f'stopped after {timeout:.0f} s (time budget)'
  summary['steps'].append({'name': name, 'command': ' '.join(argv),
                           'status': status,
                           'seconds': round(time.time() - start, 1)})
  print(f'{name}: {status} ({time.time() - start:.0f} s)', flush=True)
  return status == 'ok'


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', required=True)
  parser.add_argument('--bundle', default=os.path.join(ROOT, 'device_bundle'))
  parser.add_argument('--cpu_rehearsal', action='store_true')
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  start = time.time()
  budget = BUDGET_S * (3 if args.cpu_rehearsal else 1)
  left = lambda: budget - (time.time() - start)
  scale = 3 if args.cpu_rehearsal else 1
  cifar = os.path.join(args.bundle, 'data', 'cifar10-jpeg.tar.gz')
  mnist = os.path.join(args.bundle, 'data', 'mnist-png.tar.gz')
  summary = {'cpu_rehearsal': args.cpu_rehearsal, 'steps': [], 'missing': []}
  try:
    import jax  # pylint: disable=g-import-not-at-top
    summary.update(device=str(jax.devices()[0].device_kind),
                   platform=jax.devices()[0].platform,
                   jax_version=jax.__version__)
  except Exception as e:  # pylint: disable=broad-except
    summary['missing'].append(f'jax: {e}')
  for path in (cifar, mnist):
    if not os.path.exists(path):
      summary['missing'].append(f'{path}: run scripts/device_bundle.sh first')
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    summary['missing'].append('matplotlib: the seed study\'s report has its '
                              'tables but no plots')
  cache = os.path.join(args.out, 'jax_cache')
  on_device = 'data_on_device=on'

  # 1. The loop against the step.
  loop_seconds = 2 if args.cpu_rehearsal else 10
  cnn, resnet = (250, 32) if args.cpu_rehearsal else (2500, 128)
  rows = [f'configs/bn_paper_fig1.py@60 image_folder={mnist} {on_device}',
          f'configs/wbn.py@{cnn} image_folder={cifar} {on_device}',
          f'configs/resnet20.py@{resnet} image_folder={cifar} {on_device}']
  _run('benchmark_loop', ['-m', 'bn_study.benchmark',
                          *[f'--loop={r}' for r in rows],
                          f'--loop_seconds={loop_seconds}',
                          f'--compilation_cache_dir={cache}',
                          f'--json={os.path.join(args.out, "benchmark_loop.json")}'],
       args.out, min(150 * scale, left() - 240 * scale), summary)

  # 2. airbench94, whole: 476 steps and the TTA eval.
  shrink = (['--config.model.width=8', '--config.num_epochs=0.5']
            if args.cpu_rehearsal else [])
  _run('airbench94', [
      'main.py', '--config=configs/airbench94.py',
      f'--workdir={os.path.join(args.out, "airbench94")}',
      f'--compilation_cache_dir={cache}', '--config.model.conv_impl=xla',
      f'--config.image_folder={cifar}', '--config.data_on_device=on',
      *shrink], args.out, min(150 * scale, left() - 300 * scale), summary)

  # 3. The seed study at full length.
  study = os.path.join(args.out, 'seed_study')
  sweep_arg = ':epochs=1,seeds=1' if args.cpu_rehearsal else ''
  if _run('seed_study', ['-m', 'bn_study.sweep',
                         f'--sweep=configs/sweeps/seed_study.py{sweep_arg}',
                         f'--workdir={study}', f'--set=image_folder={cifar}'],
          args.out, min(180 * scale, left() - 120 * scale), summary):
    _run('seed_study_report', ['-m', 'bn_study.report', study,
                               f'--out={study}/report'], args.out, 30 * scale,
         summary)

  # 4. ResNet-20 with and without BN, as many epochs as the time left allows
  # at the loop's measured step time (each arm half of it, with a margin).
  epochs = 1
  try:
    with open(os.path.join(args.out, 'benchmark_loop.json')) as f:
      row = [r for r in json.load(f)['loop']
             if r['config'] == 'configs/resnet20.py'][0]
    per_epoch = row['loop_step_s'] * RESNET_STEPS_PER_EPOCH * 1.3 + 2
    epochs = max(1, int((left() - 40) / 2 / per_epoch))
  except (OSError, KeyError, IndexError, ValueError):
    pass
  # The rehearsal: one epoch of ResNet-8 at width 8, batch 500 (100 steps).
  small = (['--config.model.depth=8', '--config.model.width=8',
            '--config.batch_size=500'] if args.cpu_rehearsal else [])
  if args.cpu_rehearsal:
    epochs = 1
  summary['resnet20_epochs'] = epochs
  for norm in ('batch', 'none'):
    _run(f'resnet20_{norm}', [
        'main.py', '--config=configs/resnet20.py',
        f'--workdir={os.path.join(args.out, "resnet20", norm)}',
        f'--compilation_cache_dir={cache}',
        f'--config.model.norm={norm}', f'--config.num_epochs={epochs}',
        f'--config.image_folder={cifar}', *small], args.out, (left() - 5) / (
            2 if norm == 'batch' else 1), summary)
  summary['total_s'] = round(time.time() - start, 1)
  with open(os.path.join(args.out, 'device_check.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  print(json.dumps(summary, indent=2))


if __name__ == '__main__':
  main()
