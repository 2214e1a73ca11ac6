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
  """All devices, grouped by host, so that each host's devices hold one
  contiguous block of the global batch: the block its input pipeline reads."""
  devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  return Mesh(np.asarray(devices), ('data',))


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


def process_0s(value: float) -> float:
  """`value` as process 0 has it, on every process: for a choice that every
  process of a job must make alike, such as how many train steps a call
  runs (their collectives pair up call by call)."""
  if jax.process_count() == 1:
    return value
  # pylint: disable-next=g-import-not-at-top
  from jax.experimental import multihost_utils
  return float(multihost_utils.broadcast_one_to_all(np.float32(value)))


def initialize_distributed(coordinator_address=None, num_processes=None,
                           process_id=None, auto: bool = False):
  """Joins a multi-process JAX job (JAX's own multi-controller runtime).

  Pass all three arguments, or `auto` on a Cloud TPU slice or under SLURM,
  where JAX finds them itself; a single process needs neither. On CPU the
  processes exchange data through gloo.
  """
  given = [coordinator_address, num_processes, process_id]
  if all(v is None for v in given):
    if not auto:
      return
  elif any(v is None for v in given):
    raise errors.UserError(
        '--coordinator_address, --num_processes and --process_id go together '
        f'(got {coordinator_address!r}, {num_processes!r}, {process_id!r}); '
        'give all three, or --multihost alone on Cloud TPU and SLURM.')
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes,
                             process_id=process_id)
