"""The one exception type for a user's mistake, and the checks that raise it.

`main.py` prints its message and exits non-zero without a traceback; anything
else that goes wrong is a bug and keeps its traceback.
"""

import os
import re
import sys
import traceback
from typing import Optional, Sequence

from absl import flags


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
        f'{field}={value!r} is not supported; allowed: '
        f'{", ".join(map(str, allowed))}.')


class Preempted(Exception):
  """SIGTERM or Ctrl-C: the run saved a checkpoint and stopped; relaunch the
  same command to resume. Not a mistake, but main.py reports it the same way."""

  EXIT_STATUS = 143  # 128 + SIGTERM: what schedulers see from a killed job.


def _flag_value(argv: Sequence[str], name: str) -> Optional[str]:
  """The last value given for --name in argv (absl's rule), or None."""
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith(f'--{name}='):
      value = arg.split('=', 1)[1]
    elif arg == f'--{name}' and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def _chain(error: BaseException):
  """error, then what it was raised from or during, outermost first."""
  seen = []
  while error is not None and error not in seen:
    seen.append(error)
    error = error.__cause__ or error.__context__
  return seen


def _library(filename: str) -> bool:
  """Whether a traceback frame's file belongs to Python or an installed
  package rather than to the user (their config and what it imports)."""
  roots = {sys.prefix, sys.base_prefix, sys.exec_prefix}
  return (filename.startswith('<') or 'site-packages' in filename
          or any(filename.startswith(os.path.join(root, 'lib'))
                 for root in roots))


def _user_frame(error: BaseException, config_file: str):
  """The frame of the user's code that raised: the deepest in the config
  file itself, else the deepest outside Python, the libraries, bn_study and
  the entry point."""
  ours = (os.path.dirname(os.path.abspath(__file__)),
          os.path.abspath(sys.argv[0]))
  frames = traceback.extract_tb(error.__traceback__)
  own = [f for f in frames if os.path.abspath(f.filename) == config_file]
  return (own or [f for f in frames if not _library(f.filename) and
                  not os.path.abspath(f.filename).startswith(ours)]
          or [None])[-1]


def _config_file_error(error: BaseException, config: str) -> Optional[str]:
  """What went wrong loading the --config file, where the user can fix it;
  None if it was not the config file."""
  config_file = os.path.abspath(config.split(':')[0])
  chain = _chain(error)
  for e in chain:
    if isinstance(e, SyntaxError) and e.filename and not _library(e.filename):
      return (f'--config={config}: {type(e).__name__}: {e.msg} ({e.filename}, '
              f'line {e.lineno}).')
    frame = _user_frame(e, config_file)
    if frame is not None:
      return (f'--config={config} raised {type(e).__name__}: {e} '
              f'({frame.filename}, line {frame.lineno}: {frame.line}).')
  text = '\n'.join(str(e) for e in chain)
  if 'Failed loading config file' in text:
    return (f'--config={config}: no such config file (relative paths are '
            f'from {os.getcwd()}); the configs are in configs/, e.g. '
            '--config=configs/wbn.py.')
  if "has no attribute 'get_config'" in text:
    return (f'--config={config} has no get_config(): a config file defines '
            'get_config() returning an ml_collections.ConfigDict, as '
            'configs/wbn.py does (sweep files go to python -m bn_study.sweep '
            '--sweep=FILE).')
  if 'must have a value other than None' in text:
    return (f'--config={config}: get_config() returned None; it must return '
            'an ml_collections.ConfigDict.')
  if 'Error whilst parsing config file' in text:
    # ml_collections' own call of get_config(ARG) failed, e.g. an argument
    # after ':' that get_config does not take: its last line says why.
    last = [line for line in text.splitlines() if line.strip()][-1]
    return f'--config={config}: {last.strip()}'
  return None


def flags_error(error: BaseException, argv: Sequence[str]) -> Optional[str]:
  """One line for a user's mistake found parsing `argv`: a bad flag, a config
  file that is missing or raises, an unknown --config.FIELD. None for
  anything else: a bug, which keeps its traceback."""
  config = _flag_value(argv, 'config')
  message = config and _config_file_error(error, config)
  if message:
    return message
  if isinstance(error, flags.Error):
    return str(error)
  if isinstance(error, (AttributeError, KeyError)):
    # ml_collections' word for an unknown --config.FIELD.
    text = str(error).replace("\\'", "'")
    names = re.findall(r"'([^'\\]+)", text)
    hint = re.findall(r'Did you mean "([^"]+)"', str(error))
    bad = [a.split('=', 1)[0] for a in argv if a.startswith('--config.')
           and names and names[0] in a.split('=', 1)[0].split('.')]
    if bad:
      return (f'{bad[0]} is not a config field' +
              (f' (did you mean {hint[0]!r}?)' if hint else '') +
              '. Every field, with what it means, is in configs/default.py.')
  return None


def parse_flags(argv):
  """absl's parsing for an entry point: a bad flag or --config file is one
  line and exit status 2, not absl's FATAL or a traceback."""
  try:
    rest = flags.FLAGS(argv)
    if 'config' in flags.FLAGS:
      # ml_collections raises a config file's load error only on first use.
      flags.FLAGS.config.keys()
    return rest
  except Exception as e:  # pylint: disable=broad-except
    message = flags_error(e, argv)
    if message is None:
      raise  # Not the user's mistake: a bug keeps its traceback.
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)


def run_program(main, module_name: str, doc: str):
  """app.run(main) for a program whose flags and docstring live in
  `module_name` while `python -m bn_study.X` runs a thin module: absl's
  --help prints __main__'s docstring and key flags, so give it these."""
  # pylint: disable-next=g-import-not-at-top
  from absl import app
  sys.modules['__main__'].__doc__ = doc
  for flag in flags.FLAGS.get_key_flags_for_module(module_name):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  app.run(main, flags_parser=parse_flags)
