"""Where a run's wall time goes: the train steps against everything else.

The loop never waits for the device between steps, so the steps' time is
only known where it waits anyway: before each eval, instrument measurement
and checkpoint (`excluded`), which waits for the steps dispatched so far and
then runs untimed. Log writes are not excluded: they overlap the next call. `timing.json` in the workdir then holds, for
this launch:

- `first_step_at`: the wall-clock time (epoch seconds) when the first call
  of train steps had finished (compilation, data loading and restore before
  it);
- `train_s`, `train_steps`: the wall time of the steps after that first
  call, with the host's loop and log writes between them, and how many
  there were.

`python -m bn_study.benchmark --loop=...` reads it (docs/performance.md).
"""

import contextlib
import json
import time

import jax

from bn_study import workdir as workdir_lib


class LoopTiming:

  def __init__(self):
    self.first_step_at = None
    self.train_s = 0.0
    self.train_steps = 0
    self._mark = None

  def after_call(self, state, num_steps: int):
    """After a call of `num_steps` train steps was dispatched."""
    if self.first_step_at is None:
      jax.block_until_ready(state)
      self.first_step_at = time.time()
      self._mark = time.perf_counter()
    else:
      self.train_steps += num_steps

  @contextlib.contextmanager
  def excluded(self, *pending):
    """Waits for `pending` (what depends on the steps so far), adds the time
    since the last mark to the steps', and leaves the block untimed."""
    if self._mark is not None:
      jax.block_until_ready(pending)
      self.train_s += time.perf_counter() - self._mark
    try:
      yield
    finally:
      if self._mark is not None:
        self._mark = time.perf_counter()

  def as_dict(self) -> dict:
    return {'first_step_at': self.first_step_at, 'train_s': self.train_s,
            'train_steps': self.train_steps}


def write(workdir, timing: LoopTiming):
  (workdir / workdir_lib.TIMING).write_text(json.dumps(timing.as_dict(), indent=2))
