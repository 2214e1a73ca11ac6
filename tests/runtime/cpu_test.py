"""bn_study.runtime.cpu: where the steps loop in XLA (the im2col conv is in
models_test, the norm and compiler options in train_test)."""

import builtins
import os

from bn_study.runtime import cpu
from tests import helpers


def test_steps_loop_in_xla_unless_cpu_convs_are_xla_convs():
  def model(**overrides):
    return helpers.tiny_config(**{f'model.{k}': v
                                  for k, v in overrides.items()}).model
  assert cpu.steps_in_one_loop('gpu', model(conv_impl='xla'))
  assert cpu.steps_in_one_loop('cpu', model(conv_impl='im2col'))
  assert cpu.steps_in_one_loop('cpu', model(kind='mlp'))
  assert not cpu.steps_in_one_loop('cpu', model(conv_impl='xla'))
  assert not cpu.steps_in_one_loop('cpu', model(kind='resnet_cifar',
                                                conv_impl='auto'))


def test_identity_names_the_cpu_and_its_cores(monkeypatch):
  assert cpu.identity().endswith(f' x{os.cpu_count()}')
  # Without /proc/cpuinfo (macOS) it still answers, and says it does not know.
  real_open = builtins.open

  def no_cpuinfo(path, *args, **kwargs):
    if path == '/proc/cpuinfo':
      raise OSError(path)
    return real_open(path, *args, **kwargs)

  monkeypatch.setattr(builtins, 'open', no_cpuinfo)
  assert cpu.identity().startswith('unknown CPU x')
