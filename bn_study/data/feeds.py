"""How batches reach the jitted steps: from tf.data on the host, or from the
splits kept on the devices. The train loop sees one interface:

- `inputs(epoch, position, n)`: the arguments of one call of n train steps
  starting at `position` in `epoch`;
- `take(inputs, position, i)`: under jit, the global batch of the call's
  i-th step, at `position` in the epoch;
- `batch(inputs, position)`: the call's first batch, now (instruments);
- `eval()`, `probe(size)`, `batches(epoch)` (PreciseBN): global batches;
- `first_train_images(n)`: the split's first n images as the model sees
  them, unaugmented, one unsharded array (what a family fits itself to:
  airbench's whitening), through the pixel table both paths use.

Which one a run gets: data_on_device (device_data.wanted). Without
TensorFlow installed, only the devices' (from an image folder).
"""

import itertools
from typing import Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from bn_study.data import device_data
from bn_study.data import info as dataset_info
from bn_study.data import order as data_order
from bn_study import errors
from bn_study.data import image_folder
from bn_study.runtime import mesh as mesh_lib
from bn_study.runtime import process
def _first_train_images(source, n: int):
  images, _ = source.read_train(np.arange(min(n, source.info.num_train)))
  info = source.info
  return device_data.to_float(
      images, dataset_info.pixel_table(info.pixel_mean, info.pixel_std))


class HostFeed:
  """tf.data batches (input_pipeline.Pipeline), stacked `steps_per_call`
  deep: every call gets the same shapes (unused steps zero), so one
  compilation serves calls of any length."""

  on_device = False

  def __init__(self, pipeline, mesh, steps_per_call: int):
    self._pipeline = pipeline
    self.info = pipeline.info
    self.steps_per_epoch = pipeline.steps_per_epoch
    self._mesh = mesh
    self._depth = steps_per_call
    self._iterator, self._next = None, None
    self._stacked = NamedSharding(mesh, P(None, 'data'))
    self._first = jax.jit(lambda inputs: jax.tree.map(lambda x: x[0], inputs),
                          out_shardings=mesh_lib.batch_sharding(mesh))

  def inputs(self, epoch: int, position: int, n: int) -> dict:
    if self._next != (epoch, position):
      self._iterator = self._pipeline.train(epoch, position)
    local = [next(self._iterator) for _ in range(n)]
    self._next = (epoch, position + n)
    out = {}
    for key in local[0]:
      x = np.stack([b[key] for b in local])
      if n < self._depth:
        x = np.concatenate([x, np.zeros((self._depth - n, *x.shape[1:]),
                                        x.dtype)])
      shape = (self._depth, self._pipeline.batch_size, *x.shape[2:])
      out[key] = jax.make_array_from_process_local_data(self._stacked, x,
                                                        shape)
    return out

  def set_steps_per_call(self, steps_per_call: int):
    self._depth = steps_per_call

  def take(self, inputs, position, i):
    del position
    return jax.tree.map(lambda x: x[i], inputs)

  def batch(self, inputs, position: int) -> dict:
    del position
    return self._first(inputs)

  def eval(self) -> Iterator[dict]:
    for batch in self._pipeline.eval():
      yield mesh_lib.global_batch(batch, self._mesh)

  def probe(self, size: int):
    return mesh_lib.global_batch(self._pipeline.probe(size),
                                 self._mesh)['image']

  def batches(self, epoch: int) -> Iterator[dict]:
    for e in itertools.count(epoch):
      for batch in self._pipeline.train(e):
        yield mesh_lib.global_batch(batch, self._mesh)

  def first_train_images(self, n: int):
    return _first_train_images(self._pipeline, n)


class DeviceFeed:
  """Batches gathered and cropped on the devices (device_data.DeviceData)."""

  on_device = True

  def __init__(self, data: device_data.DeviceData):
    self._data = data
    self.info = data.info
    self.steps_per_epoch = data.steps_per_epoch

  def set_steps_per_call(self, steps_per_call: int):
    del steps_per_call  # Any number of steps reads the same inputs.

  def inputs(self, epoch: int, position: int, n: int) -> dict:
    del position, n
    return self._data.inputs(epoch)

  def take(self, inputs, position, i):
    del i
    return self._data.train_batch(inputs, position)

  def batch(self, inputs, position: int) -> dict:
    return self._data.batch(inputs, position)

  def eval(self) -> Iterator[dict]:
    return self._data.eval()

  def probe(self, size: int):
    return self._data.probe(size)

  def batches(self, epoch: int) -> Iterator[dict]:
    return self._data.batches(epoch)

  def first_train_images(self, n: int):
    return _first_train_images(self._data.source, n)


def validate(config):
  """The data fields: which split and how it is augmented, normalized and
  fed. The dataset itself is checked when it is opened (input_pipeline,
  image_folder)."""
  errors.check_choice('augment', config.augment, data_order.AUGMENTS)
  errors.check_choice('normalize', config.normalize, dataset_info.NORMALIZES)
  device_data.validate(config)
  if config.image_folder is not None and not isinstance(config.image_folder,
                                                        str):
    raise errors.UserError(
        f'image_folder={config.image_folder!r} must be a path.')
  if not isinstance(config.download, bool):
    raise errors.UserError(
        f'download={config.download!r} must be True or False.')


def make_feed(config, mesh, steps_per_call: int):
  """The feed `config` asks for (data_on_device, image_folder)."""
  if config.image_folder:
    source = image_folder.ImageFolder(config)
    if config.data_on_device == 'off':
      raise errors.UserError(
          f'image_folder={config.image_folder!r} is read into the devices: '
          "it needs data_on_device='auto' or 'on', not 'off'.")
    return DeviceFeed(device_data.DeviceData(source, config, mesh))
  if not process.tensorflow_available():
    raise errors.UserError(
        f'dataset={config.dataset!r} is read with TFDS, and TensorFlow is '
        'not installed here. Install requirements.txt, or train from a '
        'folder of images with --config.image_folder=DIR (train/<class>/*, '
        'test/<class>/*; data_on_device).')
  from bn_study.data import input_pipeline  # pylint: disable=g-import-not-at-top
  pipeline = input_pipeline.Pipeline(
      config, process_index=jax.process_index(),
      process_count=jax.process_count())
  if device_data.wanted(config.data_on_device, pipeline.info, mesh):
    return DeviceFeed(device_data.DeviceData(pipeline, config, mesh))
  return HostFeed(pipeline, mesh, steps_per_call)
