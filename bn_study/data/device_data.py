"""The train and eval splits kept on the devices, batched and cropped there.

Each split lives on the devices as uint8, sharded along the mesh's `data`
axis: device k of D holds examples [k * S, (k + 1) * S) of the split padded
to D * S. A batch is a list of example indices (data_order's epoch order),
so its examples sit on any device: each device gathers those it holds, zeros
elsewhere, and a reduce-scatter over `data` (a sum in which each example has
one non-zero term, so exact) hands every device its own slice of the batch.
That moves one batch per step between devices, never the split.

The crops and flips are data_order's, the pixels' float values
dataset_info.pixel_table's: the batches equal the tf.data pipeline's, bit for
bit. Nothing here imports TensorFlow, so a machine without it trains from
decoded arrays (image_folder).
"""

import os
from typing import Iterator, Tuple

import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np

from bn_study.data import order as data_order
from bn_study.data import info as dataset_info
from bn_study import errors
from bn_study.runtime import mesh as mesh_lib
MODES = ('auto', 'on', 'off')
# auto keeps the splits on the devices when they take at most this share of
# a device's memory (of the host's, on CPU, where the devices share it).
AUTO_MEMORY_FRACTION = 0.25


def validate(config):
  errors.check_choice('data_on_device', config.data_on_device, MODES)


def split_bytes(info) -> int:
  """Bytes of both splits as uint8."""
  return (info.num_train + info.num_eval) * int(np.prod(info.image_shape))


def device_memory_bytes(device) -> int:
  """What one device can hold: its memory limit, or on CPU its share of
  the host's physical memory."""
  try:
    stats = device.memory_stats() or {}
  except Exception:  # pylint: disable=broad-except
    stats = {}
  if stats.get('bytes_limit'):
    return int(stats['bytes_limit'])
  total = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  return total // max(1, len(jax.local_devices()))


def wanted(mode: str, info, mesh) -> bool:
  """Whether to keep the splits on the devices (mode: data_on_device)."""
  if mode != 'auto':
    return mode == 'on'
  per_device = split_bytes(info) / mesh.size
  return per_device <= AUTO_MEMORY_FRACTION * device_memory_bytes(
      mesh.devices.flat[0])


def rows_per_device(num_examples: int, mesh) -> int:
  return -(-num_examples // mesh.size)


def host_rows(num_examples: int, mesh) -> Tuple[int, int]:
  """The [start, stop) rows of a split this host's devices hold (the mesh
  groups each host's devices in one contiguous block)."""
  rows = rows_per_device(num_examples, mesh)
  positions = [k for k, d in enumerate(mesh.devices.flat)
               if d.process_index == jax.process_index()]
  return positions[0] * rows, (positions[-1] + 1) * rows


def put_split(images: np.ndarray, labels: np.ndarray, num_examples: int,
              mesh) -> dict:
  """This host's rows (`host_rows`, unpadded) -> the global sharded split."""
  rows = rows_per_device(num_examples, mesh)
  start, stop = host_rows(num_examples, mesh)
  pad = (stop - start) - len(labels)
  images = np.concatenate(
      [images, np.zeros((pad, *images.shape[1:]), np.uint8)])
  labels = np.concatenate([labels, np.zeros(pad, np.int32)]).astype(np.int32)
  sharding = NamedSharding(mesh, P('data'))
  total = rows * mesh.size
  return {
      'image': jax.make_array_from_process_local_data(
          sharding, images, (total, *images.shape[1:])),
      'label': jax.make_array_from_process_local_data(
          sharding, labels, (total,)),
  }


def gather(split: dict, indices, mesh) -> dict:
  """The examples `indices` (replicated, shape (B,)) of a sharded split, as
  one batch sharded along `data` (call under jit)."""

  def local(image, label, idx):
    rows = label.shape[0]
    idx = idx - lax.axis_index('data') * rows
    here = (idx >= 0) & (idx < rows)
    idx = jnp.clip(idx, 0, rows - 1)
    image = jnp.where(here[:, None, None, None], image[idx], 0)
    label = jnp.where(here, label[idx], 0)
    return (lax.psum_scatter(image, 'data', tiled=True),
            lax.psum_scatter(label, 'data', tiled=True))

  image, label = jax.shard_map(
      local, mesh=mesh, in_specs=(P('data'), P('data'), P()),
      out_specs=(P('data'), P('data')))(split['image'], split['label'],
                                         indices)
  return {'image': image, 'label': label}


def crop_flip(images, params, augment='crop_flip'):
  """input_pipeline.crop_flip in JAX: each uint8 image padded, cropped at
  its (top, left) and mirrored where its flip is 1."""
  pad, mode = data_order.PADDING[augment]
  height, width = images.shape[1], images.shape[2]
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)),
                   mode=mode)
  rows = params[:, :1] + jnp.arange(height)[None]
  cols = params[:, 1:2] + jnp.arange(width)[None]
  cols = jnp.where(params[:, 2:] > 0, cols[:, ::-1], cols)
  cropped = jnp.take_along_axis(padded, rows[:, :, None, None], axis=1)
  return jnp.take_along_axis(cropped, cols[:, None, :, None], axis=2)


def to_float(image, table):
  """input_pipeline.to_float in JAX."""
  channels = image.shape[-1]
  return jnp.asarray(table)[image.astype(jnp.int32) +
                            256 * jnp.arange(channels)]


class DeviceData:
  """Both splits on the devices, and the batches of each epoch.

  `source` gives `info` and this host's rows of each split
  (`read_train(keep)`, `read_eval()`); only those rows are decoded.
  """

  def __init__(self, source, config, mesh):
    self.info = info = source.info
    self.source = source
    self._mesh = mesh
    self._seed = config.seed
    self._augment = None if config.augment == 'none' else config.augment
    self.batch_size = config.batch_size
    self.eval_batch_size = config.eval_batch_size
    self.steps_per_epoch = dataset_info.steps_per_epoch(
        info.num_train, config.batch_size, config.train_split)
    start, stop = host_rows(info.num_train, mesh)
    images, labels = source.read_train(
        np.arange(start, min(stop, info.num_train)))
    self.train_split = put_split(images, labels, info.num_train, mesh)
    start, stop = host_rows(info.num_eval, mesh)
    images, labels = source.read_eval()
    self.eval_split = put_split(images[start:stop], labels[start:stop],
                                info.num_eval, mesh)
    self._repl = mesh_lib.replicated(mesh)
    # A numpy constant: small (channels x 256), so baked into the calls.
    self._table = dataset_info.pixel_table(info.pixel_mean, info.pixel_std)
    self._plan = None
    self._batch = jax.jit(self.train_batch)
    self._eval_batch = jax.jit(self._eval_batch_at, static_argnums=(2,))

  def epoch(self, epoch: int) -> dict:
    """The epoch's plan on the devices: its order of example indices and,
    by example, the crops."""
    if self._plan is None or self._plan[0] != epoch:
      n = self.info.num_train
      order = data_order.batches(data_order.permutation(self._seed, epoch, n),
                                 self.batch_size).reshape(-1)
      crops = (data_order.augment_params(self._augment, self._seed, epoch, n)
               if self._augment else np.zeros((1, 3), np.int32))
      self._plan = (epoch, jax.device_put(
          {'order': order, 'crops': crops}, self._repl))
    return self._plan[1]

  def inputs(self, epoch: int) -> dict:
    """What a jitted call needs to make `epoch`'s batches: the train split
    and the epoch's plan (arguments, not constants baked into the call)."""
    return {'split': self.train_split, 'plan': self.epoch(epoch)}

  def train_batch(self, inputs: dict, position):
    """The global batch at `position` of the epoch of `inputs` (under jit;
    position may be traced)."""
    plan = inputs['plan']
    indices = lax.dynamic_slice_in_dim(plan['order'],
                                       position * self.batch_size,
                                       self.batch_size)
    batch = gather(inputs['split'], indices, self._mesh)
    image = batch['image']
    if self._augment:
      image = crop_flip(image, plan['crops'][indices], self._augment)
    return {'image': self._to_float(image), 'label': batch['label']}

  def batch(self, inputs: dict, position: int) -> dict:
    """The global batch at `position` of the epoch of `inputs`, now."""
    return self._batch(inputs, np.int32(position))

  def batches(self, epoch: int) -> Iterator[dict]:
    """Every batch of `epoch`, then of the epochs after it."""
    while True:
      inputs = self.inputs(epoch)
      for position in range(self.steps_per_epoch):
        yield self.batch(inputs, position)
      epoch += 1

  def _to_float(self, image):
    return to_float(image, self._table)

  def _eval_batch_at(self, split, first, size):
    indices = first + jnp.arange(size, dtype=jnp.int32)
    real = indices < self.info.num_eval
    batch = gather(split, jnp.where(real, indices, 0), self._mesh)
    mask = real.astype(jnp.float32)
    image = jnp.where(real[:, None, None, None],
                      self._to_float(batch['image']), 0.0)
    return {'image': image, 'label': jnp.where(real, batch['label'], 0),
            'mask': jax.lax.with_sharding_constraint(
                mask, mesh_lib.batch_sharding(self._mesh))}

  def eval(self) -> Iterator[dict]:
    """Every eval example once; the last batch padded, mask 0 there."""
    size = self.eval_batch_size
    for first in range(0, self.info.num_eval, size):
      yield self._eval_batch(self.eval_split, np.int32(first), size)

  def probe(self, size: int) -> jax.Array:
    """The eval split's first `size` images, for the act/ instrument."""
    if size > self.info.num_eval:
      raise errors.UserError(
          f'analysis.probe_size={size} must be at most the '
          f'{self.info.num_eval} eval examples.')
    return self._eval_batch(self.eval_split, np.int32(0), size)['image']
