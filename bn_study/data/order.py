"""What each epoch trains on: the order of the examples and their crops.

Both are pure numpy functions of (seed, epoch), so the tf.data pipeline on
the host (input_pipeline) and the split kept on the devices (device_data)
give the same batches, whatever the number of hosts and devices, and a
resumed run sees exactly what an uninterrupted one would. Nothing here
imports TensorFlow.
"""

import numpy as np

# augment: none | crop_flip (pad CROP_PAD pixels with zeros, a random crop
# back to the image's size, a random horizontal flip: He et al. 2016 on
# CIFAR) | airbench (pad 2 pixels by reflection, a random crop; each image
# flipped at random once, then every image mirrored in odd epochs: Jordan
# 2024's alternating flip).
AUGMENTS = ('none', 'crop_flip', 'airbench')
CROP_PAD = 4
# augment -> (pixels padded on each side, numpy/jnp.pad's mode).
PADDING = {'crop_flip': (CROP_PAD, 'constant'), 'airbench': (2, 'reflect')}


def epoch_seed(seed: int, epoch: int) -> int:
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """The epoch's order: int32 example indices, each once."""
  rng = np.random.default_rng(np.random.SeedSequence([seed, epoch, 0]))
  return rng.permutation(num_examples).astype(np.int32)


def crop_flip(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """Each example's crop and flip this epoch, by example index: int32
  (num_examples, 3) rows of (top, left, flip), the crop's offset in the
  image padded by CROP_PAD on every side (0 to 2 * CROP_PAD) and 1 to
  mirror it left to right."""
  rng = np.random.default_rng(np.random.SeedSequence([seed, epoch, 1]))
  offsets = rng.integers(0, 2 * CROP_PAD + 1, (num_examples, 2))
  flips = rng.integers(0, 2, (num_examples, 1))
  return np.concatenate([offsets, flips], axis=1).astype(np.int32)


def airbench(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """crop_flip's rows for augment=airbench: offsets 0 to 4 in the image
  padded by 2, drawn each epoch; the flip drawn once per example for the
  run, then inverted in odd epochs, so each image is seen both ways in
  turn."""
  rng = np.random.default_rng(np.random.SeedSequence([seed, epoch, 1]))
  pad = PADDING['airbench'][0]
  offsets = rng.integers(0, 2 * pad + 1, (num_examples, 2))
  once = np.random.default_rng(np.random.SeedSequence([seed, 2])).integers(
      0, 2, (num_examples, 1))
  return np.concatenate([offsets, once ^ (epoch % 2)], axis=1).astype(
      np.int32)


def augment_params(augment: str, seed: int, epoch: int,
                   num_examples: int) -> np.ndarray:
  """The epoch's (top, left, flip) rows of `augment` (not none)."""
  return {'crop_flip': crop_flip, 'airbench': airbench}[augment](
      seed, epoch, num_examples)


def batches(order: np.ndarray, batch_size: int) -> np.ndarray:
  """(steps, batch_size) example indices, the incomplete last batch dropped."""
  steps = len(order) // batch_size
  return order[:steps * batch_size].reshape(steps, batch_size)


def host_slice(batch_indices: np.ndarray, process_index: int,
               process_count: int) -> np.ndarray:
  """This host's contiguous columns of each global batch."""
  n = batch_indices.shape[1] // process_count
  return batch_indices[:, process_index * n:(process_index + 1) * n]
