r"""The original airbench94 (PyTorch), run on a CPU on the CIFAR-10 prepared
with TFDS: the control for configs/airbench94.py's accuracy, the same data
through the author's own code. Not part of the project: it needs torch,
which the project never installs or imports, and the author's file, which
the project does not copy.

  # 1. the images, with the project's venv:
  python scripts/airbench_original_cpu.py --export=/tmp/ab
  # 2. airbench94.py from github.com/KellerJordan/cifar10-airbench (the
  #    paper's version: commit 31ce2de), run in a scratch venv with torch:
  /tmp/torch_venv/bin/python scripts/airbench_original_cpu.py --data=/tmp/ab --airbench=airbench94.py --runs=1

Step 2 runs the author's file unchanged but for what a CPU needs: its tensors
on the CPU in float32 (`.half()` -> `.float()`, no `.cuda()`), its CUDA
timers on `time.perf_counter`, torchvision (for its dataset download and
`Normalize` only) replaced by the exported arrays and the same per-channel
normalization, and --runs runs instead of 25. It prints the author's table:
each epoch's test accuracy without TTA, then the 6-view TTA accuracy and the
training time.
"""

import argparse
import os
import sys
import time
import types

# The author's file, before and after; each must occur in it.
CPU_EDITS = (('map_location=torch.device(gpu)', "map_location='cpu'"),
             ('.half()', '.float()'),
             ('.cuda()', ''),
             ('for run in range(25)', 'for run in range(RUNS)'))


def export(out: str, data_dir):
  """CIFAR-10's splits from TFDS as uint8 NHWC arrays in OUT/*.npz."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  os.makedirs(out, exist_ok=True)
  for split in ('train', 'test'):
    data = tfds.as_numpy(tfds.load('cifar10', split=split, batch_size=-1,
                                   data_dir=data_dir))
    np.savez(os.path.join(out, f'{split}.npz'), images=data['image'],
             labels=data['label'])
    print(f'{split}: {data["image"].shape}')


class _Timer:
  """torch.cuda.Event's interface on the host clock."""

  def __init__(self, enable_timing=True):
    del enable_timing
    self.t = None

  def record(self):
    self.t = time.perf_counter()

  def elapsed_time(self, end):
    return 1e3 * (end.t - self.t)


def _torchvision_stand_in(torch):
  """The two things airbench94.py takes from torchvision: the dataset (here
  already saved where it looks for it) and Normalize."""

  def normalize(mean, std):
    mean = torch.as_tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32).view(3, 1, 1)
    return lambda x: (x - mean) / std

  transforms = types.ModuleType('torchvision.transforms')
  transforms.Normalize = normalize
  torchvision = types.ModuleType('torchvision')
  torchvision.transforms = transforms
  return {'torchvision': torchvision, 'torchvision.transforms': transforms}


def run(data: str, airbench: str, runs: int):
  import numpy as np  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  with open(airbench, encoding='utf-8') as f:
    source = f.read()
  for before, after in CPU_EDITS:
    if before not in source:
      sys.exit(f'--airbench={airbench}: no {before!r} in it; this script '
               'edits the paper\'s version (commit 31ce2de).')
    source = source.replace(before, after)
  # It loads cifar10/{train,test}.pt relative to the working directory.
  os.makedirs(os.path.join(data, 'cifar10'), exist_ok=True)
  for split in ('train', 'test'):
    arrays = np.load(os.path.join(data, f'{split}.npz'))
    torch.save({'images': torch.from_numpy(arrays['images']),
                'labels': torch.from_numpy(arrays['labels'].astype(np.int64)),
                'classes': [str(c) for c in range(10)]},
               os.path.join(data, 'cifar10', f'{split}.pt'))
  edited = os.path.join(data, 'airbench94_cpu.py')
  with open(edited, 'w', encoding='utf-8') as f:
    f.write(source)
  sys.modules.update(_torchvision_stand_in(torch))
  torch.cuda.Event = _Timer
  torch.cuda.synchronize = lambda: None
  os.chdir(data)
  sys.argv = [edited]  # It logs its own source, read from argv[0].
  start = time.perf_counter()
  exec(compile(source, edited, 'exec'),  # pylint: disable=exec-used
       {'__name__': '__main__', 'RUNS': runs})
  print(f'whole script: {time.perf_counter() - start:.0f} s')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--export', help='write the TFDS images here, then stop')
  parser.add_argument('--data_dir', default=None, help='TFDS data_dir')
  parser.add_argument('--data', help='a folder --export wrote')
  parser.add_argument('--airbench', help="the author's airbench94.py")
  parser.add_argument('--runs', type=int, default=1)
  args = parser.parse_args()
  if args.export:
    export(args.export, args.data_dir)
  elif args.data and args.airbench:
    run(os.path.abspath(args.data), os.path.abspath(args.airbench), args.runs)
  else:
    parser.error('give --export=DIR, or --data=DIR and --airbench=FILE')


if __name__ == '__main__':
  main()
