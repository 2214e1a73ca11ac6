"""TFDS + tf.data: seeded, resumable training batches and exact eval batches.

The order of training batches is a pure function of (seed, epoch), and each
example's augmentation a pure function of (seed, epoch, example): a resumed
run sees exactly the images an uninterrupted one would, whatever the number
of hosts. Each host keeps only its slice of every global batch.

Images reach the model as float32: pixels / 255, then with
normalize=per_channel minus the train split's per-channel mean, over its std.
"""

import contextlib
import dataclasses
import errno
from typing import Iterator, Optional, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from urllib3.exceptions import MaxRetryError
from urllib3.exceptions import NameResolutionError
from urllib3.exceptions import NewConnectionError
from urllib3.exceptions import ProxyError
from urllib3.util import retry
from urllib3.util.retry import Retry

from bn_study import errors

# augment: none | crop_flip (pad 4 pixels with zeros, a random crop back to
# the image's size, a random horizontal flip: He et al. 2016 on CIFAR).
AUGMENTS = ('none', 'crop_flip')
CROP_PAD = 4
# normalize: none (pixels in [0, 1], the seed's) | per_channel (zero mean,
# unit std per channel over the train split).
NORMALIZES = ('none', 'per_channel')


def validate(config):
  """The pipeline's own fields, before any work (train.validate calls it)."""
  errors.check_choice('augment', config.augment, AUGMENTS)
  errors.check_choice('normalize', config.normalize, NORMALIZES)


def hide_accelerators_from_tf():
  """TF only feeds data here; left alone it would grab GPU/TPU memory from
  JAX. Entry points call this first thing, before TF initializes."""
  for kind in ('GPU', 'TPU'):
    try:
      tf.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):  # Already initialized, or no such kind.
      pass


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  name: str
  image_shape: Tuple[int, int, int]
  num_classes: int
  class_names: Tuple[str, ...]
  num_train: int
  num_eval: int
  # What normalize subtracts and divides by, per channel, in [0, 1] units
  # (0 and 1 with normalize=none); predict applies the same.
  pixel_mean: Tuple[float, ...]
  pixel_std: Tuple[float, ...]


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


def channel_stats(ds: tf.data.Dataset) -> Tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std of every pixel of `ds`'s images, in [0, 1]
  units, accumulated in float64."""
  total = total_sq = 0.0
  count = 0
  for image, _ in tfds.as_numpy(ds.batch(10000)):
    x = image.astype(np.float64) / 255.0
    total = total + x.sum(axis=(0, 1, 2))
    total_sq = total_sq + (x * x).sum(axis=(0, 1, 2))
    count += x.shape[0] * x.shape[1] * x.shape[2]
  mean = total / count
  return mean, np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))


def to_float(image, mean, std):
  """uint8 images -> float32, normalized (tf or numpy)."""
  x = tf.cast(image, tf.float32) / 255.0
  return (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def crop_flip(image, seed):
  """He et al.'s augmentation of one image, a pure function of `seed`
  (shape [2]): zero-pad CROP_PAD pixels, crop back, flip half the time."""
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  shape = tf.shape(image)
  padded = tf.pad(image, [[CROP_PAD, CROP_PAD], [CROP_PAD, CROP_PAD], [0, 0]])
  image = tf.image.stateless_random_crop(padded, shape, crop_seed)
  return tf.image.stateless_random_flip_left_right(image, flip_seed)


class Pipeline:
  """Batches of one dataset for one run: `train(epoch)` and `eval()`.

  Batches are host-local numpy dicts: `image` float32 in [0, 1] (N, H, W, C),
  `label` int32 (N,), and for eval `mask` float32 (N,), 0 on padding.
  """

  def __init__(self, config, *, process_index: int = 0,
               process_count: int = 1):
    builder = _builder(config)
    self._train = _split(builder, config.train_split).cache()
    self._eval = _split(builder, config.eval_split).cache()
    features = builder.info.features
    channels = features['image'].shape[-1]
    mean, std = np.zeros(channels), np.ones(channels)
    if config.normalize == 'per_channel':
      mean, std = channel_stats(self._train)
    self.info = DatasetInfo(
        name=builder.name,
        image_shape=tuple(features['image'].shape),
        num_classes=features['label'].num_classes,
        class_names=tuple(features['label'].names),
        num_train=_num_examples(self._train, builder, config.train_split),
        num_eval=_num_examples(self._eval, builder, config.eval_split),
        pixel_mean=tuple(float(m) for m in mean),
        pixel_std=tuple(float(s) for s in std))
    self._augment = config.augment
    self._seed = config.seed
    self._process_index = process_index
    self._process_count = process_count
    self.batch_size = config.batch_size
    self.eval_batch_size = config.eval_batch_size
    for field in ('batch_size', 'eval_batch_size'):
      if config[field] % process_count:  # Positive: train.validate.
        raise errors.UserError(
            f'{field}={config[field]} must be a multiple of the number of '
            f'processes ({process_count}).')
    if config.batch_size > self.info.num_train:
      raise errors.UserError(
          f'batch_size={config.batch_size} is larger than the '
          f'{self.info.num_train} examples of split {config.train_split!r}.')
    self.steps_per_epoch = self.info.num_train // config.batch_size

  def _local(self, batch, global_size):
    """This host's contiguous slice of a global batch."""
    n = global_size // self._process_count
    start = self._process_index * n
    return tf.nest.map_structure(lambda x: x[start:start + n], batch)

  def epoch_seed(self, epoch: int) -> int:
    return int(np.random.SeedSequence([self._seed, epoch]).generate_state(1)[0])

  def _to_float(self, image):
    return to_float(image, self.info.pixel_mean, self.info.pixel_std)

  def train(self, epoch: int, start_step: int = 0) -> Iterator[dict]:
    """The batches of `epoch` from `start_step` on; drops the incomplete last."""
    epoch_seed = self.epoch_seed(epoch)
    # The example's index in the split names it, whatever the shuffle.
    ds = self._train.enumerate().shuffle(
        self.info.num_train, seed=epoch_seed, reshuffle_each_iteration=False)
    ds = ds.skip(start_step * self.batch_size)
    if self._augment == 'crop_flip':
      ds = ds.map(lambda index, example: (index, (crop_flip(
          example[0], tf.stack([tf.constant(epoch_seed, tf.int64), index])),
                                                  example[1])),
                  num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(self.batch_size, drop_remainder=True)
    ds = ds.map(lambda index, example: self._local(
        {'image': self._to_float(example[0]), 'label': example[1]},
        self.batch_size), num_parallel_calls=tf.data.AUTOTUNE)
    return iter(tfds.as_numpy(ds.prefetch(tf.data.AUTOTUNE)))

  def probe(self, size: int) -> dict:
    """This host's slice of the eval split's first `size` images: a fixed
    batch, never trained on, for the act/ instrument."""
    if size > self.info.num_eval or size % self._process_count:
      raise errors.UserError(
          f'analysis.probe_size={size} must be at most the '
          f'{self.info.num_eval} eval examples and a multiple of the number '
          f'of processes ({self._process_count}).')
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
