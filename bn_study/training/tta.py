"""Test-time augmentation: the logits averaged over views of each eval
image, as airbench's `infer` does (Jordan 2024). Level 1 averages the image
and its mirror; level 2 adds, at equal weight, the mirror-averages of the
image moved one pixel up-left and one down-right (reflect padding): 6
forward passes an image."""

import jax.numpy as jnp

LEVELS = (1, 2)


def logits(apply, images, level: int):
  """apply(images) -> logits, averaged over `level`'s views (NHWC)."""

  def mirrored(x):
    return 0.5 * apply(x) + 0.5 * apply(x[:, :, ::-1])

  out = mirrored(images)
  if level == 1:
    return out
  h, w = images.shape[1:3]
  padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode='reflect')
  moved = [mirrored(padded[:, :h, :w]), mirrored(padded[:, 2:, 2:])]
  return 0.5 * out + 0.5 * (moved[0] + moved[1]) / 2
