"""A dataset as a folder of image files, read with Pillow, without TFDS or
TensorFlow: for machines that have neither (scripts/device_check.sh).

The layout is torchvision's ImageFolder, one folder per split and class:
`<root>/<split>/<class>/<file>` (train_split and eval_split name the split
folders), as a directory or a .tar/.tar.gz archive of one. Classes are the
train split's folder names, sorted; examples are in (class, file name)
order. The images go to the devices (device_data), which shuffle them.
"""

import concurrent.futures
import io
import os
import tarfile
from typing import List, Optional, Tuple

import numpy as np

from bn_study.data import info as dataset_info
from bn_study import errors

EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')


class _Files:
  """Relative path -> bytes, from a directory or a tar archive."""

  def __init__(self, root: str):
    self._tar = None
    if os.path.isdir(root):
      self.names = [
          os.path.relpath(os.path.join(d, f), root)
          for d, _, files in os.walk(root) for f in files]
      self._root = root
    elif os.path.isfile(root) and tarfile.is_tarfile(root):
      self._tar = tarfile.open(root)
      self._members = {m.name.lstrip('./'): m for m in self._tar.getmembers()
                       if m.isfile()}
      self.names = list(self._members)
    else:
      raise errors.UserError(
          f'image_folder={root!r} is neither a directory nor a tar archive '
          '(.tar, .tar.gz) of <split>/<class>/<image> files.')

  def read(self, name: str) -> bytes:
    if self._tar is not None:
      return self._tar.extractfile(self._members[name]).read()
    with open(os.path.join(self._root, name), 'rb') as f:
      return f.read()


def _split_files(files: _Files, split: str) -> List[Tuple[str, str]]:
  """(class, relative path) of every image of `split`, wherever the split
  folder sits (the archive may wrap it in one top folder)."""
  out = []
  for name in files.names:
    parts = name.split('/')
    if (len(parts) >= 3 and parts[-3] == split
        and name.lower().endswith(EXTENSIONS)):
      out.append((parts[-2], name))
  return sorted(out)


def _decode(data: bytes, channels: int) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image = Image.open(io.BytesIO(data))
  image = image.convert('RGB' if channels == 3 else 'L')
  array = np.asarray(image, np.uint8)
  return array if array.ndim == 3 else array[..., None]


class ImageFolder:
  """`info`, and decoded uint8 images and int32 labels of either split."""

  def __init__(self, config):
    self._files = _Files(config.image_folder)
    self._train = _split_files(self._files, config.train_split)
    self._eval = _split_files(self._files, config.eval_split)
    for split, found in ((config.train_split, self._train),
                         (config.eval_split, self._eval)):
      if not found:
        raise errors.UserError(
            f'image_folder={config.image_folder!r} has no images under '
            f'{split}/<class>/ (train_split={config.train_split!r}, '
            f'eval_split={config.eval_split!r}).')
    self._classes = sorted({c for c, _ in self._train})
    self.decoded = 0  # Images decoded so far.
    from PIL import Image  # pylint: disable=g-import-not-at-top
    first = Image.open(io.BytesIO(self._files.read(self._train[0][1])))
    # Grayscale datasets (MNIST) keep one channel; everything else is RGB.
    self._channels = channels = 1 if first.mode in ('L', '1', 'I', 'F') else 3
    shape = (first.height, first.width, channels)
    dataset_info.steps_per_epoch(len(self._train), config.batch_size,
                                 config.train_split)
    mean, std = np.zeros(channels), np.ones(channels)
    if config.normalize == 'per_channel':
      mean, std = dataset_info.channel_stats(self.read_train()[0])
    name = os.path.basename(config.image_folder.rstrip('/'))
    self.info = dataset_info.DatasetInfo(
        name=name.split('.')[0], image_shape=shape,
        num_classes=len(self._classes), class_names=tuple(self._classes),
        num_train=len(self._train), num_eval=len(self._eval),
        pixel_mean=tuple(float(m) for m in mean),
        pixel_std=tuple(float(s) for s in std))

  def _read(self, entries, keep: Optional[np.ndarray]):
    if keep is not None:
      entries = [entries[i] for i in keep]
    index = {c: i for i, c in enumerate(self._classes)}
    datas = [self._files.read(name) for _, name in entries]
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
      images = list(pool.map(lambda d: _decode(d, self._channels), datas))
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
      raise errors.UserError(
          f'image_folder: images of different sizes {sorted(shapes)[:3]}; '
          'every image must have the same height and width.')
    labels = np.asarray([index.get(c, -1) for c, _ in entries], np.int32)
    if (labels < 0).any():
      raise errors.UserError(
          'image_folder: the eval split has classes the train split lacks: '
          f'{sorted({c for c, _ in entries} - set(index))}.')
    self.decoded += len(entries)
    return np.stack(images), labels

  def read_train(self, keep=None) -> Tuple[np.ndarray, np.ndarray]:
    return self._read(self._train, keep)

  def read_eval(self) -> Tuple[np.ndarray, np.ndarray]:
    return self._read(self._eval, None)
