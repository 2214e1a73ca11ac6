"""The one exception type for a user's mistake.

`main.py` prints its message and exits non-zero without a traceback; anything
else that goes wrong is a bug and keeps its traceback.
"""


class UserError(Exception):
  """Bad input: the message names the field, the value and what is allowed."""


class TrainingDiverged(UserError):
  """A non-finite loss or gradient: the run stops, its checkpoints intact."""


def check_choice(field, value, allowed):
  if value not in allowed:
    raise UserError(
        f'{field}={value!r} is not supported; allowed: {", ".join(allowed)}.')
