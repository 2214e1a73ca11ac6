"""The flags of `--engine=ray`, checked before anything runs: the cluster's
address (one that does not answer fails in seconds, where Ray would wait),
what each run holds, and the scheduler. Imports no Ray."""

import dataclasses
import socket
from typing import Dict

from bn_study.studies import grid

SCHEDULERS = ('', 'asha')
# Eval scalars training writes: <eval_stats mode prefix>/<loss|accuracy>.
METRICS = tuple(f'{prefix}/{name}'
                for prefix in ('eval', 'eval_precise', 'eval_batch')
                for name in ('accuracy', 'loss'))


@dataclasses.dataclass
class Options:
  """How the sweep uses the cluster (the --engine=ray flags), validated."""
  address: str = ''
  resources: Dict[str, float] = dataclasses.field(
      default_factory=lambda: {'CPU': 1.0})
  max_concurrent: int = 0
  max_failures: int = 3
  scheduler: str = ''
  metric: str = 'eval/accuracy'
  mode: str = 'max'
  grace_epochs: int = 1
  reduction_factor: float = 3.0
  table_seconds: float = 60.0


def parse_resources(text: str) -> Dict[str, float]:
  """'cpu=2,gpu=1,TPU=4' -> {'CPU': 2.0, 'GPU': 1.0, 'TPU': 4.0}."""
  resources = {}
  for item in filter(None, text.split(',')):
    key, _, value = item.partition('=')
    try:
      amount = float(value)
    except ValueError:
      amount = -1.0
    if not key or amount < 0:
      raise grid.SweepError(
          f'--resources_per_run={text!r}: {item!r} is not NAME=AMOUNT with '
          'AMOUNT >= 0; e.g. cpu=2,gpu=1 or cpu=8,TPU=4.')
    # Ray's own names; any other is a custom resource, as the nodes name it.
    resources[key.upper() if key.lower() in ('cpu', 'gpu', 'tpu')
              else key] = amount
  if not any(resources.values()):
    raise grid.SweepError(f'--resources_per_run={text!r} asks for nothing; '
                           'give at least one, e.g. cpu=1.')
  return resources


def make_options(address: str, resources: str, max_concurrent: int,
                 max_failures: int, scheduler: str, metric: str, mode: str,
                 grace_epochs: int, reduction_factor: float) -> Options:
  """Options from the flags, or a SweepError saying which flag is wrong."""
  if max_failures < 0 or max_concurrent < 0:
    raise grid.SweepError(
        f'--max_failures={max_failures} and --max_concurrent_runs='
        f'{max_concurrent} must be >= 0.')
  if scheduler not in SCHEDULERS:
    raise grid.SweepError(f'--scheduler={scheduler!r}: choose from '
                           f'{", ".join(repr(s) for s in SCHEDULERS)}.')
  if metric not in METRICS:
    raise grid.SweepError(f'--metric={metric!r}: choose from '
                           f'{", ".join(METRICS)}.')
  if mode not in ('', 'max', 'min'):
    raise grid.SweepError(f'--mode={mode!r}: choose max, min, or leave it '
                           'empty (max for accuracy, min for loss).')
  if grace_epochs < 1 or reduction_factor <= 1:
    raise grid.SweepError(
        f'--grace_epochs={grace_epochs} must be >= 1 and --reduction_factor='
        f'{reduction_factor} > 1.')
  check_address(address)
  return Options(address=address, resources=parse_resources(resources),
                 max_concurrent=max_concurrent, max_failures=max_failures,
                 scheduler=scheduler, metric=metric,
                 mode=mode or ('min' if metric.endswith('loss') else 'max'),
                 grace_epochs=grace_epochs, reduction_factor=reduction_factor)


def check_address(address: str, timeout_s: float = 10.0):
  """A SweepError unless a HOST:PORT (or ray://HOST:PORT) address accepts a
  TCP connection: Ray itself waits minutes for a head that is not there."""
  if address in ('', 'auto', 'local'):
    return
  host, _, port = address.split('://')[-1].rpartition(':')
  if not host or not port.isdigit():
    raise grid.SweepError(f'--ray_address={address!r} is not HOST:PORT, '
                          'ray://HOST:PORT or auto.')
  try:
    socket.create_connection((host, int(port)), timeout=timeout_s).close()
  except OSError as e:
    raise grid.SweepError(
        f'--ray_address={address!r}: nothing answers there (a TCP '
        f'connection to {host} port {port}, tried for up to {timeout_s:g} s: '
        f'{e.strerror or e}). Start a cluster with `ray start --head '
        f'--port={port}` on {host}, give its head node\'s HOST:PORT (`ray '
        'status` shows it), or leave the flag empty for one on this '
        'machine.') from e
