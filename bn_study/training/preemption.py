"""Preemption: SIGTERM (Cloud TPU, SLURM, Kubernetes) or Ctrl-C asks the run
to checkpoint where it is and exit; relaunching resumes exactly there.

Single process: a signal handler sets a flag the train loop reads between
steps (a Python bool: no device sync). Several processes must stop at the
same step, so there JAX's preemption sync point decides (jax.distributed
listens for SIGTERM on every host and agrees on a step).
"""

import os
import signal

import jax
from jax.experimental import multihost_utils

# Tests (and anyone checking their own setup) can have the run send itself a
# real signal after a given step: BN_STUDY_SELF_SIGNAL=11:SIGTERM.
SELF_SIGNAL_ENV = 'BN_STUDY_SELF_SIGNAL'


class Preemption:
  """`with Preemption() as p: ... if p.requested(step): save and stop`."""

  def __init__(self):
    self._flag = False
    self._previous = {}
    self._self_signal = _parse_self_signal(os.environ.get(SELF_SIGNAL_ENV))

  def __enter__(self):
    # With several processes JAX's own SIGTERM handler must stay in place.
    sigs = (signal.SIGTERM, signal.SIGINT) if jax.process_count() == 1 else ()
    for sig in sigs:
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def _handle(self, signum, frame):
    del frame
    if self._flag and signum == signal.SIGINT:
      raise KeyboardInterrupt  # A second Ctrl-C: stop now, no checkpoint.
    self._flag = True

  def after_steps(self, first: int, end: int):
    """After the train steps first..end-1 (one call)."""
    if self._self_signal and first < self._self_signal[0] <= end:
      os.kill(os.getpid(), self._self_signal[1])

  def requested(self, step: int) -> bool:
    """Whether to checkpoint at `step` and stop; the same on every process."""
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._flag


def _parse_self_signal(value):
  if not value:
    return None
  step, _, name = value.partition(':')
  return int(step), getattr(signal, name)
