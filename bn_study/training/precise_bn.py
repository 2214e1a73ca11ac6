"""PreciseBN (Wu & Johnson 2021): population statistics with frozen weights.

Running averages mix statistics from many past weights and, with few large
steps, still hold much of their initial values. PreciseBN instead runs K
training batches through the final weights in train mode and sets

  mu_pop = mean_k(mu_k),  var_pop = mean_k(var_k + mu_k^2) - mu_pop^2,

the mean and variance of all K*N examples together. (The mean of the per-batch
variances alone misses the spread of the batch means and underestimates the
population variance.)
"""

import itertools

import jax
import jax.numpy as jnp
from flax import traverse_util

from bn_study.runtime import mesh as mesh_lib


def _stats_model(model):
  """The same model with momentum 0: its 'running averages' after a train-mode
  call are exactly that batch's statistics."""
  cfg = model.model_config.copy_and_resolve_references()
  cfg.bn_momentum = 0.0
  cfg.renorm_momentum = 0.0
  return model.clone(model_config=cfg)


def _moments(stats, epsilon):
  """{layer path: (mean, var)} from a batch_stats tree; renorm stores a std
  (sqrt(var + eps)) in place of a variance."""
  by_layer = {}
  for path, value in traverse_util.flatten_dict(stats).items():
    by_layer.setdefault(path[:-1], {})[path[-1]] = value
  out = {}
  for layer, s in by_layer.items():
    var = s['var'] if 'var' in s else s['std'] ** 2 - epsilon
    out[layer] = (s['mean'], var)
  return out


class PreciseBN:
  """PreciseBN for one model on one mesh; compiles its train-mode pass once,
  so re-estimating after every epoch costs no recompilation."""

  def __init__(self, model, mesh):
    stats_model = _stats_model(model)
    self._epsilon = epsilon = model.model_config.bn_epsilon
    self._mesh = mesh

    def accumulate(acc, params, batch_stats, image):
      _, new = stats_model.apply(
          {'params': params, 'batch_stats': batch_stats}, image, train=True,
          mutable=['batch_stats'])
      moments = _moments(new['batch_stats'], epsilon)
      return {k: (acc[k][0] + m, acc[k][1] + v + m * m)
              for k, (m, v) in moments.items()}

    self._accumulate = jax.jit(accumulate, donate_argnums=(0,))

  def __call__(self, state, batches, num_batches: int):
    """New batch_stats from the first `num_batches` of `batches`.

    The weights, the running averages in `state` and everything else are
    left as they are; the caller decides whether to use or keep the result.
    """
    epsilon, mesh = self._epsilon, self._mesh
    current = _moments(state.batch_stats, epsilon)
    acc = {k: (jnp.zeros_like(m), jnp.zeros_like(v))
           for k, (m, v) in current.items()}
    count = 0
    for batch in itertools.islice(batches, num_batches):
      image = batch['image']
      if not isinstance(image, jax.Array):  # A host's numpy batch.
        image = mesh_lib.global_batch({'image': image}, mesh)['image']
      acc = self._accumulate(acc, state.params, state.batch_stats, image)
      count += 1
    if not count:
      raise ValueError('PreciseBN got no batches.')

    flat = dict(traverse_util.flatten_dict(jax.device_get(state.batch_stats)))
    for layer, (sum_mean, sum_sq) in acc.items():
      mean = sum_mean / count
      var = jnp.maximum(sum_sq / count - mean * mean, 0.0)
      flat[layer + ('mean',)] = mean
      if layer + ('var',) in flat:
        flat[layer + ('var',)] = var
      else:
        flat[layer + ('std',)] = jnp.sqrt(var + epsilon)
    return jax.device_put(traverse_util.unflatten_dict(flat),
                          mesh_lib.replicated(mesh))


def recompute(model, state, batches, mesh, num_batches: int):
  """One-off PreciseBN: new batch_stats over the first `num_batches`."""
  return PreciseBN(model, mesh)(state, batches, num_batches)
