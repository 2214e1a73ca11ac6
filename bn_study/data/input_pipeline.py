"""TFDS + tf.data: seeded, resumable training batches and exact eval batches.

The order of training batches and each example's augmentation are pure
functions of (seed, epoch) (data_order): a resumed run sees exactly the
images an uninterrupted one would, whatever the number of hosts, and the
split kept on the devices (device_data) gives the same batches. Each host
decodes and keeps only its slice of every global batch.

Images reach the model as float32: pixels / 255, then with
normalize=per_channel minus the train split's per-channel mean, over its std.
"""

import contextlib
import dataclasses
import errno
from typing import Iterator, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from urllib3.exceptions import MaxRetryError
from urllib3.exceptions import NameResolutionError
from urllib3.exceptions import NewConnectionError
from urllib3.exceptions import ProxyError
from urllib3.util import retry
from urllib3.util.retry import Retry

from bn_study.data import order as data_order
from bn_study import errors
from bn_study.data import info as dataset_info
from bn_study.data.info import DatasetInfo

CROP_PAD = data_order.CROP_PAD
def is_prepared(config) -> bool:
  """Whether the dataset is ready to read, without trying to download it."""
  try:
    return tfds.builder(config.dataset, data_dir=config.data_dir).is_prepared()
  except tfds.core.registered.DatasetNotFoundError:
    return False


def _builder(config) -> tfds.core.DatasetBuilder:
  """The prepared TFDS builder, or a UserError that says how to prepare it."""
  where = config.data_dir or 'the TFDS default (~/tensorflow_datasets or $TFDS_DATA_DIR)'
  try:
    builder = tfds.builder(config.dataset, data_dir=config.data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise errors.UserError(
        f'dataset={config.dataset!r} is not a TFDS dataset. Use a TFDS image '
        'classification dataset with `image` and `label` features, e.g. '
        "cifar10, cifar100, mnist, fashion_mnist (`tfds.list_builders()` "
        'lists them all).') from e
  if not builder.is_prepared():
    problem = 'downloading is off (config.download=False)'
    if config.download:
      try:
        with _no_retries_offline():
          builder.download_and_prepare()
        return builder
      except Exception as e:  # pylint: disable=broad-except
        problem = f'the download failed ({type(e).__name__}: {str(e)[:300]})'
    raise errors.UserError(
        f'dataset={config.dataset!r} is not prepared in data_dir={where}, and '
        f'{problem}. Prepare it on a machine with network access '
        f"(python -c \"import tensorflow_datasets as tfds; "
        f"tfds.builder('{config.dataset}').download_and_prepare()\") and copy "
        'the data_dir here, or follow TFDS\'s manual download instructions '
        'for this dataset; then pass --config.data_dir=DIR if it is not the '
        'default.')
  features = builder.info.features
  if 'image' not in features or 'label' not in features:
    raise errors.UserError(
        f'dataset={config.dataset!r} has features {sorted(features)}; bn_study '
        'needs an image classification dataset with `image` and `label`.')
  return builder


# Connection errors that the next try would meet again: no resolver or no such
# host, a refused connection, no route (a machine without network).
_OFFLINE_ERRNOS = (errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH)


def _offline(error) -> bool:
  if isinstance(error, ProxyError):  # Through a proxy: what the proxy met.
    error = error.original_error
  if isinstance(error, NameResolutionError):
    return True
  cause = getattr(error, '__cause__', None)
  return (isinstance(error, NewConnectionError) and isinstance(cause, OSError)
          and cause.errno in _OFFLINE_ERRNOS)


@contextlib.contextmanager
def _no_retries_offline():
  """TFDS's downloads retry every failed connection with backoff (urllib3's
  Retry, 10 tries: 3.5 minutes before a machine without network hears that
  the dataset is not prepared). While this is open, the Retry that TFDS
  makes fails at once where the host cannot be resolved, refuses the
  connection or has no route; other errors (timeouts, resets, 5xx) keep
  their retries. Once such an error is seen the process is offline: the
  policy then stays for the download threads TFDS leaves running, which
  would otherwise retry until the interpreter can exit. (It overrides
  Retry.increment, whose signature requirements.txt pins.)"""
  offline = []

  class FailFastRetry(Retry):

    def increment(self, method=None, url=None, response=None, error=None,
                  _pool=None, _stacktrace=None):
      if _offline(error):
        offline.append(error)
        raise MaxRetryError(_pool, url, error) from error
      return super().increment(method, url, response, error, _pool,
                               _stacktrace)

  retry.Retry = FailFastRetry  # Where TFDS looks it up, per download.
  try:
    yield
  finally:
    if not offline:
      retry.Retry = Retry


def _split(builder, split: str) -> tf.data.Dataset:
  """(uint8 image, int32 label) pairs, in the order the dataset stores them."""
  try:
    ds = builder.as_dataset(split=split, shuffle_files=False)
  except (KeyError, ValueError) as e:
    raise errors.UserError(
        f'split {split!r} of dataset {builder.name!r} does not exist; it has '
        f'{sorted(builder.info.splits)} (config.train_split / '
        'config.eval_split).') from e
  return ds.map(lambda ex: (ex['image'], tf.cast(ex['label'], tf.int32)),
                num_parallel_calls=tf.data.AUTOTUNE)


def _num_examples(ds: tf.data.Dataset, builder, split: str) -> int:
  n = int(ds.cardinality())
  return n if n >= 0 else builder.info.splits[split].num_examples


def to_float(image, table):
  """uint8 images -> float32 through dataset_info.pixel_table `table`
  (device_data.to_float in JAX)."""
  channels = image.shape[-1]
  index = tf.cast(image, tf.int32) + 256 * tf.range(channels)
  return tf.gather(table, index)


def crop_flip(images, params, augment='crop_flip'):
  """`augment`'s crops and flips of a batch of uint8 images, each by its
  row of data_order.augment_params' (top, left, flip) (device_data.crop_flip
  in JAX)."""
  pad, mode = data_order.PADDING[augment]
  height, width = images.shape[1], images.shape[2]
  padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]],
                  mode=mode.upper())
  rows = params[:, :1] + tf.range(height)[None]
  cols = params[:, 1:2] + tf.range(width)[None]
  cols = tf.where(params[:, 2:] > 0, cols[:, ::-1], cols)
  cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
  return tf.gather(cropped, cols, axis=2, batch_dims=1)


def _metadata_info(builder, num_train: int, num_eval: int) -> DatasetInfo:
  """What the builder's metadata says, pixel statistics left at 0 and 1."""
  features = builder.info.features
  channels = features['image'].shape[-1]
  return DatasetInfo(
      name=builder.name, image_shape=tuple(features['image'].shape),
      num_classes=features['label'].num_classes,
      class_names=tuple(features['label'].names),
      num_train=num_train, num_eval=num_eval,
      pixel_mean=(0.0,) * channels, pixel_std=(1.0,) * channels)


def shapes_info(config) -> DatasetInfo:
  """The dataset's shapes, classes and split sizes with no image decoded
  (pixel statistics 0 and 1): enough to build and time a train step. The
  benchmark times its steps on this, in a process no decoding has touched,
  so that their memory behaviour does not depend on what the pipeline read
  (docs/performance.md, "The benchmark without the dataset")."""
  builder = _builder(config)
  return _metadata_info(builder, *(
      _num_examples(_split(builder, split), builder, split)
      for split in (config.train_split, config.eval_split)))


class Pipeline:
  """Batches of one dataset for one run: `train(epoch)` and `eval()`.

  Batches are host-local numpy dicts: `image` float32 (N, H, W, C), `label`
  int32 (N,), and for eval `mask` float32 (N,), 0 on padding. The epoch's
  order and crops come from data_order.

  With one process the train split is decoded once and kept. With several,
  each host decodes, every epoch, only the examples of its own slices of
  that epoch's global batches (about 1/processes of the split), and the
  global batches stay those of one process.
  """

  def __init__(self, config, *, process_index: int = 0,
               process_count: int = 1):
    self._builder = builder = _builder(config)
    self._train_split = config.train_split
    self._eval_split = config.eval_split
    self._eval = _split(builder, config.eval_split).cache()
    # Images stay encoded until an epoch needs them.
    self._encoded = builder.as_dataset(
        split=config.train_split, shuffle_files=False,
        decoders={'image': tfds.decode.SkipDecoding()})
    features = builder.info.features
    self._image_feature = features['image']
    self._augment = config.augment
    self._seed = config.seed
    self._process_index = process_index
    self._process_count = process_count
    self.batch_size = config.batch_size
    self.eval_batch_size = config.eval_batch_size
    self.decoded = 0  # Train images decoded so far, by this host.
    self._all = None  # One process: the whole decoded train split.
    self._all_tensors = None  # The same, as tensors for tf.data.
    self._num_train = _num_examples(
        _split(builder, config.train_split), builder, config.train_split)
    info = _metadata_info(builder, self._num_train,
                          _num_examples(self._eval, builder, config.eval_split))
    mean, std = np.array(info.pixel_mean), np.array(info.pixel_std)
    if config.normalize == 'per_channel':
      # The whole split's statistics: each host decodes it once for them.
      mean, std = dataset_info.channel_stats(self.read_train()[0])
      info = dataclasses.replace(info,
                                 pixel_mean=tuple(float(m) for m in mean),
                                 pixel_std=tuple(float(s) for s in std))
    self.info = info
    self._table = tf.constant(dataset_info.pixel_table(mean, std))
    for field in ('batch_size', 'eval_batch_size'):
      if config[field] % process_count:  # Positive: training.validate.
        raise errors.UserError(
            f'{field}={config[field]} must be a multiple of the number of '
            f'processes ({process_count}).')
    self.steps_per_epoch = dataset_info.steps_per_epoch(
        self.info.num_train, config.batch_size, config.train_split)

  def read_train(self, keep=None) -> Tuple[np.ndarray, np.ndarray]:
    """uint8 images and int32 labels of the train examples whose indices
    `keep` (sorted) names, in that order; all of them if None. Only those
    are decoded."""
    if keep is None and self._all is not None:
      return self._all
    ds = self._encoded
    if keep is not None and len(keep) and keep[-1] - keep[0] + 1 == len(keep):
      # A contiguous range (a host's rows of the split on the devices).
      ds = ds.skip(int(keep[0])).take(len(keep)).batch(1024)
    elif keep is not None:
      wanted = np.zeros(self._num_train, bool)
      wanted[keep] = True
      wanted = tf.constant(wanted)
      ds = ds.enumerate().batch(1024).map(lambda i, ex: tf.nest.map_structure(
          lambda x: tf.boolean_mask(x, tf.gather(wanted, i)), ex))
    else:
      ds = ds.batch(1024)
    feature = self._image_feature
    label = lambda ex: tf.cast(ex['label'], tf.int32)
    if ds.element_spec['image'].dtype == tf.string:
      # Decoded a batch at a time (map_fn): twice as fast as one tf.data
      # element per image (MNIST's 60,000: 1.4 s against 2.6 s here).
      spec = tf.TensorSpec(feature.shape, tf.uint8)
      ds = ds.map(
          lambda ex: (tf.map_fn(feature.decode_example, ex['image'],
                                fn_output_signature=spec,
                                parallel_iterations=32), label(ex)),
          num_parallel_calls=tf.data.AUTOTUNE)
    else:  # Mock datasets come decoded.
      ds = ds.map(lambda ex: (ex['image'], label(ex)))
    images, labels = [], []
    for image, lab in tfds.as_numpy(ds):
      images.append(image)
      labels.append(lab)
    shape = (0, *self._image_feature.shape)
    out = (np.concatenate(images) if images else np.zeros(shape, np.uint8),
           np.concatenate(labels) if labels else np.zeros(0, np.int32))
    self.decoded += len(out[1])
    if keep is None and self._process_count == 1:
      self._all = out
    return out

  def epoch_seed(self, epoch: int) -> int:
    return data_order.epoch_seed(self._seed, epoch)

  def _to_float(self, image):
    return to_float(image, self._table)

  def _local(self, batch, global_size):
    """This host's contiguous slice of a global batch."""
    n = global_size // self._process_count
    start = self._process_index * n
    return tf.nest.map_structure(lambda x: x[start:start + n], batch)

  def train(self, epoch: int, start_step: int = 0) -> Iterator[dict]:
    """The batches of `epoch` from `start_step` on; drops the incomplete last."""
    n = self.info.num_train
    indices = data_order.host_slice(
        data_order.batches(data_order.permutation(self._seed, epoch, n),
                           self.batch_size),
        self._process_index, self._process_count)[start_step:]
    if self._process_count == 1:
      # The split as tensors once, not a copy per epoch (or per PreciseBN).
      if self._all_tensors is None:
        self._all_tensors = tuple(tf.constant(a) for a in self.read_train())
      images, labels = self._all_tensors
      rows = indices
    else:
      keep = np.unique(indices)
      images, labels = (tf.constant(a) for a in self.read_train(keep))
      rows = np.searchsorted(keep, indices).astype(np.int32)
    params = np.zeros((*indices.shape, 3), np.int32)
    augment = self._augment
    if augment != 'none':
      params = data_order.augment_params(augment, self._seed, epoch,
                                         n)[indices]

    def batch(rows, params):
      image = tf.gather(images, rows)
      if augment != 'none':
        image = crop_flip(image, params, augment)
      return {'image': self._to_float(image), 'label': tf.gather(labels, rows)}

    ds = tf.data.Dataset.from_tensor_slices((rows, params))
    ds = ds.map(batch, num_parallel_calls=tf.data.AUTOTUNE)
    return iter(tfds.as_numpy(ds.prefetch(tf.data.AUTOTUNE)))

  def read_eval(self) -> Tuple[np.ndarray, np.ndarray]:
    """The whole eval split, uint8 images and int32 labels."""
    images, labels = zip(*tfds.as_numpy(self._eval.batch(4096)))
    return np.concatenate(images), np.concatenate(labels)

  def probe(self, size: int) -> dict:
    """This host's slice of the eval split's first `size` images: a fixed
    batch, never trained on, for the act/ instrument."""
    check_probe(size, self.info.num_eval, self._process_count)
    (image, label), = tfds.as_numpy(self._eval.batch(size).take(1))
    return self._local({'image': self._to_float(image).numpy(),
                        'label': label}, size)

  def eval(self) -> Iterator[dict]:
    """Every eval example exactly once; the last batch padded, mask 0 there."""
    size = self.eval_batch_size

    def pad(image, label):
      n = tf.shape(label)[0]
      fill = size - n
      return self._local({
          'image': tf.pad(self._to_float(image),
                          [[0, fill], [0, 0], [0, 0], [0, 0]]),
          'label': tf.pad(label, [[0, fill]]),
          'mask': tf.pad(tf.ones([n], tf.float32), [[0, fill]]),
      }, size)

    ds = self._eval.batch(size).map(pad, num_parallel_calls=tf.data.AUTOTUNE)
    return iter(tfds.as_numpy(ds.prefetch(tf.data.AUTOTUNE)))


def check_probe(size: int, num_eval: int, process_count: int):
  if size > num_eval or size % process_count:
    raise errors.UserError(
        f'analysis.probe_size={size} must be at most the {num_eval} eval '
        'examples and a multiple of the number of processes '
        f'({process_count}).')


def load_image(path: str, image_shape) -> np.ndarray:
  """A PNG/JPEG file as float32 in [0, 1], resized to `image_shape` if needed."""
  height, width, channels = image_shape
  try:
    data = tf.io.read_file(path)
    image = tf.io.decode_image(data, channels=channels, expand_animations=False)
  except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as e:
    raise errors.UserError(
        f'--predict: {path!r} is not a readable PNG/JPEG image '
        f'({type(e).__name__}).') from e
  image = tf.cast(image, tf.float32) / 255.0
  if tuple(image.shape[:2]) != (height, width):
    image = tf.image.resize(image, (height, width), antialias=True)
  return np.clip(image.numpy(), 0.0, 1.0)
