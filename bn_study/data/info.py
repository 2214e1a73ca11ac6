"""What a run knows about its dataset, whichever source read it."""

import dataclasses
from typing import Tuple

import numpy as np

from bn_study import errors

# normalize: none (pixels in [0, 1], the seed's) | per_channel (zero mean,
# unit std per channel over the train split).
NORMALIZES = ('none', 'per_channel')


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


def steps_per_epoch(num_train: int, batch_size: int, split: str,
                    field: str = 'batch_size') -> int:
  """Full batches of `batch_size` in the `num_train` examples of `split`
  (the last partial one dropped); a UserError naming `field` where there is
  none."""
  if batch_size > num_train:
    raise errors.UserError(
        f'{field}={batch_size} is larger than the {num_train} examples of '
        f'split {split!r}.')
  return num_train // batch_size


def channel_stats(images: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std of every pixel of uint8 `images`, in [0, 1]
  units, accumulated in float64."""
  total = total_sq = 0.0
  for start in range(0, len(images), 10000):
    x = images[start:start + 10000].astype(np.float64) / 255.0
    total = total + x.sum(axis=(0, 1, 2))
    total_sq = total_sq + (x * x).sum(axis=(0, 1, 2))
  count = images.shape[0] * images.shape[1] * images.shape[2]
  mean = total / count
  return mean, np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))


def pixel_table(mean, std) -> np.ndarray:
  """float32 (channels * 256,): entry c * 256 + v is uint8 value v of
  channel c as the model sees it, (v / 255 - mean_c) / std_c. Both input
  paths look pixels up here (a gather copies exactly) rather than compute
  them: XLA:CPU's division and fused multiply-adds round differently from
  TensorFlow's, and the batches must be the same bit for bit."""
  values = np.arange(256, dtype=np.float64) / 255.0
  table = [(values - m) / s for m, s in zip(mean, std)]
  return np.concatenate(table).astype(np.float32)
