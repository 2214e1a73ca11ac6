"""conv_impl=auto: the rule for small steps, a timing for large ones, cached
beside the compilation cache and kept by the run folder."""

import json

import numpy as np

from bn_study.runtime import mesh as mesh_lib
from bn_study.training import conv_choice
from tests import helpers


def _resnet(**overrides):
  return helpers.tiny_config(**{
      'model.kind': 'resnet_cifar', 'model.placement': 'pre_act',
      'model.depth': 8, 'model.width': 4, **overrides})


def test_small_steps_keep_the_rule_and_the_run_folder_keeps_the_choice(
    tmp_path):
  mesh = mesh_lib.make_mesh()
  # The seed's CNN: the rule, im2col.
  seed = conv_choice.choose(helpers.tiny_config(), mesh, (32, 32, 3), 10,
                            str(tmp_path))
  assert seed.conv_impl == 'im2col' and 'the rule' in seed.why
  # A ResNet this small: not worth timing, the rule (XLA's convs).
  choice = conv_choice.choose(_resnet(), mesh, (32, 32, 3), 10,
                              str(tmp_path))
  assert choice.conv_impl == 'xla' and 'under 10 to time' in choice.why
  saved = json.loads((tmp_path / conv_choice.CHOICE).read_text())
  assert saved['conv_impl'] == 'xla'
  # A relaunch keeps what the run began with, whatever would be chosen now.
  (tmp_path / conv_choice.CHOICE).write_text(
      json.dumps({'conv_impl': 'im2col', 'why': 'earlier'}))
  again = conv_choice.choose(_resnet(), mesh, (32, 32, 3), 10, str(tmp_path))
  assert again.conv_impl == 'im2col' and 'before' in again.why
  # An explicit field is used as it is.
  fixed = conv_choice.choose(helpers.tiny_config(**{'model.conv_impl': 'xla'}),
                             mesh, (32, 32, 3), 10, str(tmp_path))
  assert fixed.conv_impl == 'xla'


def test_large_steps_are_timed_once_then_read_from_the_cache(tmp_path,
                                                             monkeypatch):
  monkeypatch.setattr(conv_choice, 'MIN_STEP_FLOPS', 0)
  monkeypatch.setattr(conv_choice, '_cache_dir', lambda: str(tmp_path / 'c'))
  timed = []

  def fake_seconds(config, impl, *args):
    timed.append(impl)
    return {'xla': 0.2, 'im2col': 0.1 if config.batch_size == 8 else 0.19}[
        impl]

  monkeypatch.setattr(conv_choice, '_step_seconds', fake_seconds)
  mesh = mesh_lib.make_mesh()
  for run in ('run1', 'run2', 'run3'):
    (tmp_path / run).mkdir()
  first = conv_choice.choose(_resnet(), mesh, (32, 32, 3), 10,
                             str(tmp_path / 'run1'))
  assert first.conv_impl == 'im2col' and 'timed here' in first.why
  assert sorted(timed) == ['im2col', 'xla']
  second = conv_choice.choose(_resnet(), mesh, (32, 32, 3), 10,
                              str(tmp_path / 'run2'))
  assert second.conv_impl == 'im2col' and 'cached' in second.why
  assert len(timed) == 2
  # Another batch size is another decision; a near tie keeps the rule.
  tie = conv_choice.choose(_resnet(batch_size=16), mesh, (32, 32, 3), 10,
                           str(tmp_path / 'run3'))
  assert len(timed) == 4 and tie.conv_impl == 'xla'
  assert 'only when under 0.9x' in tie.why
  # Another kind of CPU is timed again, not given this one's answer.
  (tmp_path / 'run4').mkdir()
  monkeypatch.setattr(conv_choice.cpu, 'identity', lambda: 'another CPU x64')
  other = conv_choice.choose(_resnet(), mesh, (32, 32, 3), 10,
                             str(tmp_path / 'run4'))
  assert len(timed) == 6 and 'timed here' in other.why


def test_a_timed_step_is_a_positive_time():
  seconds = conv_choice._step_seconds(_resnet(), 'im2col',
                                      mesh_lib.make_mesh(), (32, 32, 3), 10)
  assert np.isfinite(seconds) and seconds > 0
