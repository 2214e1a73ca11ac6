"""The one exception type for a user's mistake.

`main.py` prints its message and exits non-zero without a traceback; anything
else that goes wrong is a bug and keeps its traceback.
"""


class UserError(Exception):
  """Bad input: the message names the field, the value and what is allowed."""


class TrainingDiverged(UserError):
  """A non-finite loss or gradient: the run stops, its checkpoints intact."""


def check_positive_int(field, value):
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise UserError(f'{field}={value!r} must be a positive integer.')


def check_number(field, value, low=None, high=None, low_open=False,
                 high_open=False):
  """`value` a real number within [low, high] (open ends where asked)."""
  ok = isinstance(value, (int, float)) and not isinstance(value, bool)
  ok = ok and value == value  # Not NaN.
  if ok and low is not None:
    ok = value > low if low_open else value >= low
  if ok and high is not None:
    ok = value < high if high_open else value <= high
  if not ok:
    lo = '' if low is None else f'{"(" if low_open else "["}{low}'
    hi = '' if high is None else f'{high}{")" if high_open else "]"}'
    where = (f'in {lo}, {hi}' if lo and hi else
             f'{">" if low_open else ">="} {low}' if lo else
             f'{"<" if high_open else "<="} {high}')
    raise UserError(f'{field}={value!r} must be a number {where}.')


def check_choice(field, value, allowed):
  if value not in allowed:
    raise UserError(
        f'{field}={value!r} is not supported; allowed: {", ".join(allowed)}.')


class Preempted(Exception):
  """SIGTERM or Ctrl-C: the run saved a checkpoint and stopped; relaunch the
  same command to resume. Not a mistake, but main.py reports it the same way."""

  EXIT_STATUS = 143  # 128 + SIGTERM: what schedulers see from a killed job.
