"""Data: seeded order, resumability, host slices, exact eval, clear errors."""

import dataclasses
import errno
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from urllib3.exceptions import ConnectTimeoutError
from urllib3.exceptions import MaxRetryError
from urllib3.exceptions import NameResolutionError
from urllib3.exceptions import NewConnectionError
from urllib3.exceptions import ProxyError
from urllib3.util import retry
from urllib3.util.retry import Retry

from bn_study import errors
from bn_study.data import info as dataset_info
from bn_study.data import input_pipeline
from tests import helpers
from tests.helpers import ROOT


def _labels(batches):
  return [b['label'].tolist() for b in batches]


def _pipeline(num_examples=40, **overrides):
  with tfds.testing.mock_data(num_examples=num_examples):
    return input_pipeline.Pipeline(helpers.tiny_config(**overrides))


def test_batches_are_a_function_of_seed_and_epoch():
  with helpers.mock_learnable(64, 20):
    config = helpers.tiny_config()
    a = input_pipeline.Pipeline(config)
    b = input_pipeline.Pipeline(config)
    other_seed = input_pipeline.Pipeline(helpers.tiny_config(seed=1))
  assert a.steps_per_epoch == 8
  epoch0 = list(a.train(0))
  assert len(epoch0) == 8
  assert _labels(epoch0) == _labels(b.train(0))
  for x, y in zip(epoch0, b.train(0)):
    np.testing.assert_array_equal(x['image'], y['image'])
  assert _labels(a.train(1)) != _labels(epoch0)  # Reshuffled every epoch...
  assert _labels(a.train(1)) == _labels(b.train(1))  # ...reproducibly.
  assert _labels(other_seed.train(0)) != _labels(epoch0)
  # Every example once per epoch (64 = 8 full batches of 8).
  assert sorted(sum(_labels(epoch0), [])) == sorted(
      sum(_labels(a.train(1)), []))


def test_resuming_mid_epoch_yields_the_remaining_batches():
  with helpers.mock_learnable(64, 20):
    p = input_pipeline.Pipeline(helpers.tiny_config())
  full = list(p.train(3))
  tail = list(p.train(3, start_step=5))
  assert len(tail) == 3
  for x, y in zip(full[5:], tail):
    np.testing.assert_array_equal(x['image'], y['image'])


def test_batch_format():
  with helpers.mock_learnable(64, 20):
    p = input_pipeline.Pipeline(helpers.tiny_config())
  batch = next(p.train(0))
  assert batch['image'].shape == (8, 32, 32, 3)
  assert batch['image'].dtype == np.float32
  assert 0.0 <= batch['image'].min() and batch['image'].max() <= 1.0
  assert batch['label'].dtype == np.int32
  assert p.info.num_classes == 10 and len(p.info.class_names) == 10


# Augmented images too: each host crops and flips the same global batch.
@pytest.mark.parametrize('augment', ['none', 'crop_flip'])
def test_hosts_read_disjoint_slices_of_the_same_global_batch(augment):
  with helpers.mock_learnable(64, 20):
    config = helpers.tiny_config(augment=augment)
    whole = input_pipeline.Pipeline(config)
    hosts = [input_pipeline.Pipeline(config, process_index=i, process_count=2)
             for i in range(2)]
  for g, h0, h1 in zip(whole.train(2), hosts[0].train(2), hosts[1].train(2)):
    np.testing.assert_array_equal(
        g['image'], np.concatenate([h0['image'], h1['image']]))
  for g, h0, h1 in zip(whole.eval(), hosts[0].eval(), hosts[1].eval()):
    np.testing.assert_array_equal(g['mask'],
                                  np.concatenate([h0['mask'], h1['mask']]))


def test_eval_covers_every_example_once_with_a_padded_last_batch():
  with helpers.mock_learnable(64, 21):
    p = input_pipeline.Pipeline(helpers.tiny_config())
  batches = list(p.eval())
  assert p.info.num_eval == 21
  assert len(batches) == 3  # 8 + 8 + 5 real examples.
  assert all(b['image'].shape == (8, 32, 32, 3) for b in batches)
  assert batches[-1]['mask'].tolist() == [1] * 5 + [0] * 3
  assert sum(b['mask'].sum() for b in batches) == 21
  _, labels = helpers.learnable_images(21, seed=2)
  got = np.concatenate([b['label'][b['mask'] > 0] for b in batches])
  np.testing.assert_array_equal(got, labels)


def test_shapes_info_is_the_pipelines_without_decoding(monkeypatch):
  config = helpers.tiny_config(normalize='per_channel')
  with tfds.testing.mock_data(num_examples=40):
    full = input_pipeline.Pipeline(config).info
    monkeypatch.setattr(input_pipeline.Pipeline, 'read_train', None)
    shapes = input_pipeline.shapes_info(config)
  assert shapes.pixel_mean == (0.0,) * 3 and full.pixel_mean != shapes.pixel_mean
  assert shapes == dataclasses.replace(
      full, pixel_mean=shapes.pixel_mean, pixel_std=shapes.pixel_std)


def test_unprepared_dataset_says_what_to_do(tmp_path):
  config = helpers.tiny_config(dataset='mnist', data_dir=str(tmp_path),
                               download=False)
  with pytest.raises(errors.UserError) as e:
    input_pipeline.Pipeline(config)
  message = str(e.value)
  assert "'mnist'" in message and str(tmp_path) in message
  assert 'download_and_prepare' in message and 'data_dir' in message


# main.py on an unprepared dataset that TFDS would download, with the
# network broken in one of two ways: no resolver, or every host resolving to
# a loopback port where nothing listens (a real refused connection).
_OFFLINE = r'''
import runpy, socket, sys
if sys.argv[1] == 'resolver':
  def getaddrinfo(*args, **kwargs):
    raise socket.gaierror(socket.EAI_AGAIN, 'Temporary failure in name resolution')
else:
  def getaddrinfo(*args, **kwargs):
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, '', ('127.0.0.1', 9))]
socket.getaddrinfo = getaddrinfo
sys.argv = ['main.py', *sys.argv[2:]]
runpy.run_path('main.py', run_name='__main__')
'''


@pytest.mark.parametrize('failure', ['resolver', 'refused'])
def test_offline_download_stops_at_once_with_the_not_prepared_message(
    tmp_path, failure):
  env = dict(os.environ, BN_STUDY_MALLOC='0')
  proc = subprocess.run(
      [sys.executable, '-c', _OFFLINE, failure, '--config=configs/tiny.py',
       f'--workdir={tmp_path / "run"}', '--config.dataset=mnist',
       f'--config.data_dir={tmp_path / "tfds"}'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
      check=False)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "error: dataset='mnist' is not prepared" in proc.stderr
  assert 'the download failed' in proc.stderr
  assert 'Traceback' not in proc.stderr
  # TFDS asks urllib3 for 10 tries with backoff (3.5 minutes): none is made.
  assert 'Retrying' not in proc.stderr, proc.stderr[-3000:]


def test_transient_connection_errors_keep_their_retries(monkeypatch):
  monkeypatch.setattr(retry, 'Retry', Retry)  # Put back after the test.
  refused = NewConnectionError(None, 'refused')
  refused.__cause__ = ConnectionRefusedError(errno.ECONNREFUSED, 'refused')
  reset = NewConnectionError(None, 'reset')
  reset.__cause__ = ConnectionResetError(errno.ECONNRESET, 'reset')
  unresolved = NameResolutionError('host', None, 'no')
  assert input_pipeline._offline(unresolved)
  assert input_pipeline._offline(refused)
  assert input_pipeline._offline(ProxyError('proxy', refused))
  assert not input_pipeline._offline(reset)
  assert not input_pipeline._offline(ConnectTimeoutError())
  assert not input_pipeline._offline(None)  # A 5xx status: no error object.
  with input_pipeline._no_retries_offline():
    assert retry.Retry(total=3).increment(error=reset).total == 2
  assert retry.Retry is Retry  # No offline error: TFDS's own Retry again.
  with input_pipeline._no_retries_offline():
    assert retry.Retry(total=3).increment(error=reset).total == 2
    with pytest.raises(MaxRetryError):
      retry.Retry(total=3).increment(error=refused)
  assert retry.Retry is not Retry  # Offline: downloads still running fail too.
  with pytest.raises(MaxRetryError):
    retry.Retry(total=3).increment(error=unresolved)


def test_unknown_dataset_is_a_user_error():
  with pytest.raises(errors.UserError, match="dataset='cifar11' is not a TFDS"):
    input_pipeline.Pipeline(helpers.tiny_config(dataset='cifar11'))


def test_batch_larger_than_the_split_is_a_user_error():
  with pytest.raises(errors.UserError, match='batch_size=8 is larger'):
    _pipeline(num_examples=5)
  # The rule is data/info's, told the field that gave the size (the
  # benchmark's --batch_sizes[i]).
  with pytest.raises(errors.UserError,
                     match=r"--batch_sizes\[1\]=8 is larger than the 5 "
                     r"examples of split 'train'"):
    dataset_info.steps_per_epoch(5, 8, 'train', field='--batch_sizes[1]')
  assert dataset_info.steps_per_epoch(21, 8, 'train') == 2


def test_load_image_resizes_and_scales(tmp_path):
  from PIL import Image
  path = tmp_path / 'big.png'
  Image.fromarray(np.full((64, 48, 3), 255, np.uint8)).save(path)
  image = input_pipeline.load_image(str(path), (32, 32, 3))
  assert image.shape == (32, 32, 3) and image.dtype == np.float32
  np.testing.assert_allclose(image, 1.0, atol=1e-5)
  (tmp_path / 'notes.txt').write_text('not an image')
  with pytest.raises(errors.UserError, match='not a readable PNG/JPEG'):
    input_pipeline.load_image(str(tmp_path / 'notes.txt'), (32, 32, 3))


REAL_DATA_REASON = (
    'CIFAR-10 is not prepared in the TFDS data_dir ($TFDS_DATA_DIR or '
    '~/tensorflow_datasets); prepare it with TFDS (see README) to run this.')


def _cifar10_prepared():
  return tfds.builder('cifar10', data_dir=os.environ.get('TFDS_DATA_DIR')
                      ).is_prepared()


@pytest.mark.skipif(not _cifar10_prepared(), reason=REAL_DATA_REASON)
def test_real_cifar10():
  config = helpers.tiny_config(batch_size=2500, eval_batch_size=3000)
  p = input_pipeline.Pipeline(config)
  assert (p.info.num_train, p.info.num_eval) == (50000, 10000)
  assert p.steps_per_epoch == 20  # The seed's 20 steps per pass.
  assert p.info.class_names[:2] == ('airplane', 'automobile')
  batches = list(p.eval())
  assert len(batches) == 4
  assert sum(b['mask'].sum() for b in batches) == 10000
  labels = np.concatenate([b['label'][b['mask'] > 0] for b in batches])
  assert np.bincount(labels).tolist() == [1000] * 10
  first = next(p.train(0))
  assert first['image'].shape == (2500, 32, 32, 3)
  assert 0.3 < first['image'].mean() < 0.6
