"""Training from a folder of image files, without TensorFlow."""

import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

from bn_study import errors
from bn_study.data import image_folder
from tests import helpers
from tests.helpers import ROOT

CLASSES = ('cat', 'airplane', 'dog')  # Sorted: airplane, cat, dog.


def _write_folder(root, num_train=24, num_eval=9, grayscale=False):
  images, labels = {}, {}
  for split, n, seed in (('train', num_train, 1), ('test', num_eval, 2)):
    x, y = helpers.learnable_images(n, seed, shape=(12, 12, 3),
                                    num_classes=len(CLASSES))
    images[split], labels[split] = x, y
    for i, (image, label) in enumerate(zip(x, y)):
      folder = root / split / CLASSES[label]
      folder.mkdir(parents=True, exist_ok=True)
      pil = Image.fromarray(image)
      if grayscale:
        pil = pil.convert('L')
      pil.save(folder / f'{i:04d}.png')
  return images, labels


def test_reads_classes_labels_and_pixels_from_a_folder_or_an_archive(tmp_path):
  images, labels = _write_folder(tmp_path / 'data')
  archive = tmp_path / 'data.tar.gz'
  with tarfile.open(archive, 'w:gz') as tar:
    tar.add(tmp_path / 'data', arcname='data')  # One wrapping folder.
  for root in (tmp_path / 'data', archive):
    source = image_folder.ImageFolder(helpers.tiny_config(
        image_folder=str(root), batch_size=8))
    info = source.info
    assert info.class_names == ('airplane', 'cat', 'dog')
    assert info.image_shape == (12, 12, 3)
    assert (info.num_train, info.num_eval) == (24, 9)
    got, got_labels = source.read_train()
    # Each decoded image, by its label's name, is one written to that class.
    for image, label in zip(got, got_labels):
      name = info.class_names[label]
      written = images['train'][[CLASSES[l] == name for l in labels['train']]]
      assert any(np.array_equal(image, w) for w in written)
    some, _ = source.read_train(np.array([3, 5]))
    np.testing.assert_array_equal(some, got[[3, 5]])


def test_grayscale_folders_keep_one_channel(tmp_path):
  _write_folder(tmp_path, grayscale=True)
  source = image_folder.ImageFolder(helpers.tiny_config(
      image_folder=str(tmp_path), batch_size=8))
  assert source.info.image_shape == (12, 12, 1)
  assert source.read_eval()[0].shape == (9, 12, 12, 1)


@pytest.mark.parametrize('layout,match', [
    ('empty', 'no images under train/<class>/'),
    ('missing', 'neither a directory nor a tar archive')])
def test_bad_folders_say_what_is_wrong(tmp_path, layout, match):
  root = tmp_path / 'x'
  if layout == 'empty':
    root.mkdir()
  with pytest.raises(errors.UserError, match=match):
    image_folder.ImageFolder(helpers.tiny_config(image_folder=str(root)))


def test_main_trains_from_a_folder_without_tensorflow(tmp_path):
  _write_folder(tmp_path / 'data')
  workdir = tmp_path / 'run'
  # TensorFlow (and so TFDS and clu's writer) cannot be imported here.
  code = ('import sys; sys.modules["tensorflow"] = None; '
          'sys.modules["tensorflow_datasets"] = None; '
          'sys.argv[0] = "main.py"; import runpy; '
          'runpy.run_path("main.py", run_name="__main__")')
  proc = subprocess.run(
      [sys.executable, '-c', code, '--config=configs/tiny.py',
       f'--workdir={workdir}', f'--config.image_folder={tmp_path / "data"}',
       '--config.batch_size=8', '--config.eval_batch_size=4',
       '--config.augment=crop_flip', '--config.normalize=per_channel',
       '--config.eval_stats=ema,precise,batch',
       '--config.analysis.every_steps=3', '--config.analysis.probe_size=4'],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'data on the devices' in proc.stderr
  scalars = helpers.read_scalars(str(workdir))
  assert len(scalars['eval/accuracy']) == 2  # Two epochs.
  assert {'eval_precise/accuracy', 'eval_batch/accuracy',
          'train/loss'} <= set(scalars)
  assert any(t.startswith('act/') for t in scalars)
  info = json.loads((workdir / 'dataset.json').read_text())
  assert info['class_names'] == ['airplane', 'cat', 'dog']
  assert os.path.isdir(workdir / 'checkpoints')
