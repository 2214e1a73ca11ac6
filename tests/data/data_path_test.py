"""The data on the device against tf.data: the same batches, on any number
of devices and hosts; each host decodes only its share."""

import socket
import subprocess
import sys

import numpy as np
import pytest

from tests import helpers
from tests.helpers import ROOT

_env = helpers.env_without_device_count


def _command(out, feed, devices=1, augment='crop_flip', **distributed):
  return [sys.executable, '-m', 'tests.dump_batches', f'--feed={feed}',
          f'--devices={devices}', f'--out={out}', f'--augment={augment}',
          *[f'--{k}={v}' for k, v in distributed.items()]]


def _dump(tmp_path, name, *args, **kwargs):
  out = tmp_path / f'{name}.npz'
  proc = subprocess.run(_command(out, *args, **kwargs), cwd=ROOT, env=_env(),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return dict(np.load(out))


def _parallel(tmp_path, name, feed, devices, processes=2, distributed=True):
  outs = [tmp_path / f'{name}{p}.npz' for p in range(processes)]
  extra = {}
  if distributed:
    with socket.socket() as s:
      s.bind(('localhost', 0))
      extra['coordinator_address'] = f'localhost:{s.getsockname()[1]}'
  procs = [subprocess.Popen(
      _command(out, feed, devices, num_processes=processes, process_id=p,
               **extra), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for p, out in enumerate(outs)]
  for proc in procs:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
  return [dict(np.load(out)) for out in outs]


def _train(dump):
  return {k: v for k, v in dump.items() if k.startswith('train')}


def _assert_equal(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture(scope='module')
def both(tmp_path_factory):
  """{augment: one process's tf.data (host_*) and device (device_*) batches}."""
  tmp = tmp_path_factory.mktemp('both')
  return {augment: _dump(tmp, augment, 'both', augment=augment)
          for augment in ('none', 'crop_flip', 'airbench')}


def _part(dump, prefix):
  return {k[len(prefix):]: v for k, v in dump.items() if k.startswith(prefix)}


@pytest.mark.parametrize('augment', ['none', 'crop_flip', 'airbench'])
def test_tf_data_and_on_device_batches_are_identical(both, augment):
  host, device = _part(both[augment], 'host_'), _part(both[augment], 'device_')
  assert any(k.startswith('eval') for k in host)
  _assert_equal(host, device)
  # An augmented epoch differs from the plain one, so the test could fail.
  if augment != 'none':
    assert not np.array_equal(both['none']['host_train0_0_image'],
                              both[augment]['host_train0_0_image'])


def test_split_sharded_over_8_devices_equals_1_device(tmp_path, both):
  eight = _dump(tmp_path, 'eight', 'device', devices=8)
  assert int(eight['devices']) == 8
  one = _part(both['crop_flip'], 'device_')
  assert one.keys() == {k for k in eight if k.startswith(('train', 'eval'))}
  for key in one:
    np.testing.assert_array_equal(one[key], eight[key], err_msg=key)


def test_two_hosts_read_half_and_make_the_same_global_batches(tmp_path):
  host_one = _dump(tmp_path, 'one', 'host')
  # tf.data: each host keeps its slice of each global batch and decodes only
  # the examples in it (64 train examples, batches of 16: 4 steps).
  parts = _parallel(tmp_path, 'host', 'host', 1, distributed=False)
  for key in _train(host_one):
    np.testing.assert_array_equal(
        np.concatenate([p[key] for p in parts]), host_one[key], err_msg=key)
  # One process decodes the split once (here at the start, for per_channel's
  # statistics) and keeps it; each of two decodes half of it each epoch.
  assert int(host_one['decoded_at_start']) == 64
  for epoch in (0, 1):
    assert int(host_one[f'decoded_in_epoch{epoch}']) == 0
    for part in parts:
      assert int(part[f'decoded_in_epoch{epoch}']) == 32
  # On the devices (2 processes x 2 devices): each host puts its half of the
  # split on its devices, and the gathered batches are one host's.
  device_parts = _parallel(tmp_path, 'device', 'device', 2)
  for part in device_parts:
    assert int(part['decoded']) == 32
    assert int(part['devices']) == 4
    for key in _train(host_one):
      np.testing.assert_array_equal(part[key], host_one[key], err_msg=key)
