"""Test-time augmentation's views against airbench's infer, in numpy."""

import jax.numpy as jnp
import numpy as np
import pytest

from bn_study import errors
from bn_study.training import tta
from bn_study.training import validate
from tests import helpers


def _apply(x):
  # Position-dependent, so every view gives different logits.
  w = np.arange(np.prod(x.shape[1:]), dtype=np.float32).reshape(x.shape[1:])
  return jnp.stack([(x * w).sum(axis=(1, 2, 3)), (x * w**2).sum(axis=(1, 2, 3))],
                   axis=-1)


def _airbench(images, level):
  """airbench94's infer_mirror / infer_mirror_translate, NHWC."""
  def mirror(x):
    return 0.5 * np.asarray(_apply(x)) + 0.5 * np.asarray(_apply(x[:, :, ::-1]))
  if level == 1:
    return mirror(images)
  padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode='reflect')
  h, w = images.shape[1:3]
  translated = [padded[:, 0:h, 0:w], padded[:, 2:h + 2, 2:w + 2]]
  return 0.5 * mirror(images) + 0.5 * np.mean(
      [mirror(t) for t in translated], axis=0)


@pytest.mark.parametrize('level', tta.LEVELS)
def test_tta_views_are_airbenchs(level):
  images = np.random.default_rng(0).normal(size=(3, 6, 5, 2)).astype(
      np.float32)
  np.testing.assert_allclose(tta.logits(_apply, jnp.asarray(images), level),
                             _airbench(images, level), rtol=1e-5)
  assert not np.allclose(_airbench(images, level), np.asarray(_apply(images)))


def test_bad_tta_level_is_a_user_error():
  with pytest.raises(errors.UserError, match='tta_level=3.*allowed'):
    validate.validate(helpers.tiny_config(tta_level=3))
