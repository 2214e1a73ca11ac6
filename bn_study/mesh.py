"""Where arrays live: one `data` mesh axis over every device of every host.

The batch is split along `data`; parameters, optimizer state, BN running
averages and metrics are replicated. Under `jax.jit` a mean over the batch
axis is then a global mean, so BN statistics cover the whole global batch.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from bn_study import errors


def make_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), ('data',))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def check_batch_size(field: str, value: int, mesh: Mesh):
  if value % mesh.size:
    raise errors.UserError(
        f'{field}={value} is not divisible by the {mesh.size} devices; use a '
        f'multiple of {mesh.size}.')


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Host-local numpy arrays -> one global jax.Array per field, data-sharded."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x),
      local_batch)
