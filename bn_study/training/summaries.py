"""Where scalars go: TensorBoard event files (and the log), through clu.

clu's writer writes through TensorFlow. Where TensorFlow is not installed
(a GPU machine set up for JAX alone, scripts/device_check.sh), the same
scalars go to event files through the `tensorboard` package's own writer,
and progress is logged without clu's ReportProgress, which needs the same
import.
"""

import contextlib
import time

from absl import logging

from bn_study.runtime import process


def create_writer(workdir: str, just_logging: bool):
  if process.tensorflow_available():
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
    return metric_writers.create_default_writer(
        workdir, just_logging=just_logging, asynchronous=True)
  return EventWriter(None if just_logging else workdir)


def progress(num_train_steps: int, writer):
  if process.tensorflow_available():
    from clu import periodic_actions  # pylint: disable=g-import-not-at-top
    return periodic_actions.ReportProgress(num_train_steps=num_train_steps,
                                           writer=writer)
  return Progress(num_train_steps)


class EventWriter:
  """write_scalars / flush / close, as clu's writers, without TensorFlow."""

  def __init__(self, logdir):
    self._writer = None
    if logdir is not None:
      # pylint: disable=g-import-not-at-top
      from tensorboard.summary.writer import event_file_writer
      self._writer = event_file_writer.EventFileWriter(logdir)

  def write_scalars(self, step: int, scalars):
    logging.info('[%d] %s', step, ', '.join(
        f'{k}={float(v):.6g}' for k, v in scalars.items()))
    if self._writer is None:
      return
    # pylint: disable=g-import-not-at-top
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.proto import summary_pb2
    values = [summary_pb2.Summary.Value(tag=k, simple_value=float(v))
              for k, v in scalars.items()]
    self._writer.add_event(event_pb2.Event(
        wall_time=time.time(), step=int(step),
        summary=summary_pb2.Summary(value=values)))

  def flush(self):
    if self._writer is not None:
      self._writer.flush()

  def close(self):
    if self._writer is not None:
      self._writer.close()


class Progress:
  """Logs steps/s once a minute; `timed(name)` blocks are left out."""

  def __init__(self, num_train_steps: int, every_secs: float = 60.0):
    self._total = num_train_steps
    self._every = every_secs
    self._last = None
    self._excluded = 0.0

  def __call__(self, step: int):
    now = time.time()
    if self._last is None:
      self._last = (step, now)
      self._excluded = 0.0
      return
    last_step, last_time = self._last
    if now - last_time >= self._every:
      rate = (step - last_step) / max(now - last_time - self._excluded, 1e-9)
      logging.info('step %d of %d: %.1f steps/s', step, self._total, rate)
      self._last, self._excluded = (step, now), 0.0

  @contextlib.contextmanager
  def timed(self, name: str):
    del name
    start = time.time()
    try:
      yield
    finally:
      self._excluded += time.time() - start
