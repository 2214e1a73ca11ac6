"""Augmentation and per-channel normalization: He et al.'s crop and flip,
a pure function of (seed, epoch, example), and the train split's statistics."""

import numpy as np
import pytest
import tensorflow as tf

from bn_study.data import order as data_order
from bn_study.data import device_data
from bn_study import errors
from bn_study.data import input_pipeline
from bn_study.training import validate
from tests import helpers

NUM_TRAIN, NUM_EVAL = 64, 20


def _pipeline(**overrides):
  with helpers.mock_learnable(NUM_TRAIN, NUM_EVAL):
    return input_pipeline.Pipeline(helpers.tiny_config(**overrides))


def _images(batches):
  return np.concatenate([b['image'] for b in batches])


def _windows(image, pad=input_pipeline.CROP_PAD):
  """Every crop of the zero-padded image and of its mirror image."""
  h, w, _ = image.shape
  padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
  for flipped in (padded, padded[:, ::-1]):
    for i in range(2 * pad + 1):
      for j in range(2 * pad + 1):
        yield flipped[i:i + h, j:j + w]


def test_each_image_is_a_crop_of_the_padded_original_maybe_flipped():
  originals, _ = helpers.learnable_images(NUM_TRAIN, seed=1)
  pipeline = _pipeline(augment='crop_flip')
  images = np.round(_images(pipeline.train(0)) * 255).astype(np.uint8)
  unchanged = flipped = 0
  for image in images:
    matches = [k for k, original in enumerate(originals)
               if any(np.array_equal(image, w) for w in _windows(original))]
    assert matches, 'an augmented image is no crop of any training image'
    original = originals[matches[0]]
    unchanged += np.array_equal(image, original)
    flipped += np.array_equal(image, original[:, ::-1])
  # 81 offsets x 2 flips: most images move.
  assert unchanged < len(images) // 4
  assert 0 < len(images) - unchanged


def test_crops_are_a_function_of_seed_epoch_and_example():
  a = _images(_pipeline(augment='crop_flip').train(0))
  b = _images(_pipeline(augment='crop_flip').train(0))
  np.testing.assert_array_equal(a, b)
  # Another epoch shuffles and crops anew; another seed too.
  assert not np.array_equal(a, _images(_pipeline(augment='crop_flip').train(1)))
  assert not np.array_equal(
      a, _images(_pipeline(augment='crop_flip', seed=1).train(0)))
  # Same order as without augmentation: only the pixels change.
  plain = _pipeline().train(0)
  augmented = _pipeline(augment='crop_flip').train(0)
  for p, q in zip(plain, augmented):
    np.testing.assert_array_equal(p['label'], q['label'])


def test_resuming_mid_epoch_sees_the_same_augmented_images():
  pipeline = _pipeline(augment='crop_flip')
  full = list(pipeline.train(2))
  resumed = list(_pipeline(augment='crop_flip').train(2, start_step=3))
  assert len(resumed) == len(full) - 3
  for f, r in zip(full[3:], resumed):
    np.testing.assert_array_equal(f['image'], r['image'])
    np.testing.assert_array_equal(f['label'], r['label'])


def _crop_flip_reference(image, top, left, flip, pad=input_pipeline.CROP_PAD,
                         mode='constant'):
  h, w, _ = image.shape
  padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode=mode)
  crop = padded[top:top + h, left:left + w]
  return crop[:, ::-1] if flip else crop


def test_crop_flip_crops_the_padded_image_at_its_offset_and_mirrors():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (30, 8, 8, 3)).astype(np.uint8)
  params = data_order.crop_flip(seed=7, epoch=3, num_examples=30)
  assert params[:, :2].min() == 0 and params[:, :2].max() == 8
  assert set(params[:, 2]) == {0, 1}
  out = input_pipeline.crop_flip(tf.constant(images), tf.constant(params))
  device = device_data.crop_flip(images, params)
  for image, (top, left, flip), got, dev in zip(images, params, out.numpy(),
                                                np.asarray(device)):
    want = _crop_flip_reference(image, top, left, flip)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(dev, want)
  # A function of (seed, epoch): the same again, another epoch differs.
  np.testing.assert_array_equal(params, data_order.crop_flip(7, 3, 30))
  assert not np.array_equal(params, data_order.crop_flip(7, 4, 30))


def test_airbench_reflects_two_pixels_and_alternates_the_flip():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (40, 8, 8, 3)).astype(np.uint8)
  even, odd = (data_order.airbench(seed=7, epoch=e, num_examples=40)
               for e in (2, 3))
  assert even[:, :2].min() == 0 and even[:, :2].max() == 4
  # The flip is drawn once: odd epochs see every image the other way.
  np.testing.assert_array_equal(odd[:, 2], 1 - even[:, 2])
  np.testing.assert_array_equal(
      data_order.airbench(7, 0, 40)[:, 2], even[:, 2])
  assert set(even[:, 2]) == {0, 1}
  out = input_pipeline.crop_flip(tf.constant(images), tf.constant(odd),
                                 'airbench')
  device = device_data.crop_flip(images, odd, 'airbench')
  for image, (top, left, flip), got, dev in zip(images, odd, out.numpy(),
                                                np.asarray(device)):
    # PyTorch's reflect padding (F.pad(..., 'reflect')) is numpy's.
    want = _crop_flip_reference(image, top, left, flip, 2, 'reflect')
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(dev, want)


def test_per_channel_normalization_uses_the_train_split():
  originals, _ = helpers.learnable_images(NUM_TRAIN, seed=1)
  x = originals.astype(np.float64) / 255.0
  mean, std = x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))
  pipeline = _pipeline(normalize='per_channel')
  np.testing.assert_allclose(pipeline.info.pixel_mean, mean, rtol=1e-6)
  np.testing.assert_allclose(pipeline.info.pixel_std, std, rtol=1e-6)
  train_images = _images(pipeline.train(0))
  np.testing.assert_allclose(train_images.mean(axis=(0, 1, 2)), 0, atol=1e-4)
  np.testing.assert_allclose(train_images.std(axis=(0, 1, 2)), 1, atol=1e-4)
  # Eval and the probe use the train split's statistics too.
  plain = _pipeline()
  for n, p in zip(pipeline.eval(), plain.eval()):
    real = p['mask'] > 0  # Padding stays zero, and masked out.
    np.testing.assert_allclose(n['image'][real],
                               (p['image'][real] - mean) / std,
                               rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(pipeline.probe(4)['image'],
                             (plain.probe(4)['image'] - mean) / std,
                             rtol=1e-5, atol=1e-5)
  # Off: the seed's pixels in [0, 1], statistics 0 and 1.
  assert plain.info.pixel_mean == (0.0, 0.0, 0.0)
  assert plain.info.pixel_std == (1.0, 1.0, 1.0)


@pytest.mark.parametrize('field,value', [('augment', 'mixup'),
                                         ('normalize', 'imagenet')])
def test_unknown_augment_or_normalize_is_a_user_error(field, value):
  with pytest.raises(errors.UserError, match=f"{field}='{value}'.*allowed"):
    validate.validate(helpers.tiny_config(**{field: value}))
