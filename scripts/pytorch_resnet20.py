r"""ResNet-20's train step in PyTorch: the reference docs/performance.md
compares bn_study's step with. Not part of the project: it needs torch, which
the project never installs or imports; run it in a scratch venv.

  python -m venv /tmp/torch_venv
  /tmp/torch_venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
  /tmp/torch_venv/bin/python scripts/pytorch_resnet20.py --batch_size=128

The model is He et al. 2016's CIFAR ResNet-20 as `configs/resnet20.py`
builds it: 3 stages of 3 basic blocks, 16/32/64 channels, conv -> BN -> ReLU,
option A shortcuts (a stride-2 subsample zero-padded to the new width), He
initialization (fan-out), BN momentum 0.1 and eps 1e-5; SGD with momentum
0.9 and 1e-4 weight decay on every parameter, cross entropy. One train step:
forward, backward, update. Prints the median over --repeats after --warmup,
in NCHW and channels-last, one line each.
"""

import argparse
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F


class Block(nn.Module):

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.stride, self.pad = stride, cout - cin

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    shortcut = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
    if self.pad:  # Option A: the new channels are zeros.
      shortcut = F.pad(shortcut, (0, 0, 0, 0, self.pad // 2,
                                  self.pad - self.pad // 2))
    return F.relu(y + shortcut)


class ResNet20(nn.Module):

  def __init__(self, num_classes=10, blocks=3):
    super().__init__()
    self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
    self.bn = nn.BatchNorm2d(16)
    layers, cin = [], 16
    for stage, cout in enumerate((16, 32, 64)):
      for i in range(blocks):
        layers.append(Block(cin, cout, 2 if stage and not i else 1))
        cin = cout
    self.blocks = nn.Sequential(*layers)
    self.fc = nn.Linear(64, num_classes)
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')

  def forward(self, x):
    x = self.blocks(F.relu(self.bn(self.conv(x))))
    return self.fc(x.mean(dim=(2, 3)))


def time_steps(batch_size, channels_last, warmup, repeats):
  torch.manual_seed(0)
  model = ResNet20()
  images = torch.randn(batch_size, 3, 32, 32)
  labels = torch.randint(0, 10, (batch_size,))
  if channels_last:
    model = model.to(memory_format=torch.channels_last)
    images = images.contiguous(memory_format=torch.channels_last)
  opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9,
                        weight_decay=1e-4)
  model.train()
  times = []
  for i in range(warmup + repeats):
    start = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(images), labels).backward()
    opt.step()
    if i >= warmup:
      times.append(time.perf_counter() - start)
  return statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch_size', type=int, default=128)
  parser.add_argument('--warmup', type=int, default=3)
  parser.add_argument('--repeats', type=int, default=10)
  args = parser.parse_args()
  print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, '
        f'batch {args.batch_size}, median of {args.repeats}')
  for channels_last in (False, True):
    seconds = time_steps(args.batch_size, channels_last, args.warmup,
                         args.repeats)
    layout = 'channels-last' if channels_last else 'NCHW'
    print(f'{layout}: {seconds * 1e3:.1f} ms/step')


if __name__ == '__main__':
  main()
