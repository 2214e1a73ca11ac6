"""The training objective, shared by the train step and the instruments."""

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits, labels, label_smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross-entropy in float32; with label_smoothing the
  target puts 1 - a on the label and a / classes on every class (Szegedy et
  al. 2016)."""
  logits = logits.astype(jnp.float32)
  if not label_smoothing:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  targets = optax.smooth_labels(
      jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)
