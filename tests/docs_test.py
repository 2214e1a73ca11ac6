"""Every command the README and docs/ give still parses: main.py's flags and
config (validated as a run would be), the sweep's flags and sweep file (as
--dry_run loads it), the report's and the benchmark's flags."""

import ast
import json
import pathlib
import re
import shlex
import subprocess
import sys

from absl import flags

from bn_study import errors
from bn_study.training import validate
from tests import helpers
from tests.helpers import ROOT

DOCS = [pathlib.Path(ROOT) / 'README.md'] + sorted(
    (pathlib.Path(ROOT) / 'docs').rglob('*.md'))
PROGRAMS = ('main.py', '-m bn_study.sweep', '-m bn_study.report',
            '-m bn_study.benchmark')
# Commands whose words stand for the reader's own: elided or named later.
PLACEHOLDERS = ('...', 'NAME')


def commands():
  """[(doc, argv after the program, program)] of every command in the docs;
  shell loop variables take the loop's first value."""
  found = []
  for doc in DOCS:
    text = doc.read_text()
    text = re.sub(r'\\\n\s*', ' ', text)  # Continued lines.
    # Inline code that prose wraps over two lines.
    text = re.sub(r'`[^`]+`', lambda m: m.group(0).replace('\n', ' '), text)
    loops = {var: shlex.split(values)[0] for var, values in
             re.findall(r'for (\w+) in ([^;\n]+); do', text)}
    pattern = (r'python3? (main\.py|-m bn_study\.(?:sweep|report|benchmark))'
               r'((?: [^`|#\n]*)?)')
    for program, rest in re.findall(pattern, text):
      rest = re.sub(r'\$(\w+)', lambda m: loops.get(m.group(1), m.group(0)),
                    rest).strip()
      if not rest or any(p in rest for p in PLACEHOLDERS):
        continue
      # A command quoted inside another (gcloud's --command="...") ends
      # with that quote.
      found.append((doc.name, shlex.split(rest.rstrip('"')), program))
  return found


def test_the_docs_have_commands_of_every_program():
  programs = {program for _, _, program in commands()}
  assert programs == set(PROGRAMS)
  assert len(commands()) > 40


def _main_flags_error(argv):
  """None if main.py's flags parse and its config validates; else why."""
  with helpers.main_flags(argv) as full_argv:
    try:
      errors.parse_flags(full_argv)
      validate.validate(flags.FLAGS.config)
    except SystemExit:
      return 'flags did not parse'
    except errors.UserError as e:
      return str(e)
  return None


def test_main_commands_parse_and_validate(monkeypatch):
  monkeypatch.chdir(ROOT)
  bad = []
  for doc, argv, program in commands():
    if program == 'main.py':
      error = _main_flags_error(argv)
      if error:
        bad.append(f'{doc}: python main.py {shlex.join(argv)}: {error}')
  assert not bad, '\n'.join(bad)


# One process per program (each defines its own flags), looping over its
# commands: parse, then for a sweep load it as --dry_run does.
_CHECK = r'''
import json, sys
from absl import flags
from bn_study import errors
program, commands = sys.argv[1], json.loads(sys.argv[2])
if program == 'sweep':
  from bn_study.studies import cli as module
elif program == 'report':
  from bn_study.studies import report as module
else:
  from bn_study.tools import benchmark as module
module._define_flags()
bad = []
for argv in commands:
  flags.FLAGS.unparse_flags()
  sys.argv = ['x', *argv]
  try:
    rest = errors.parse_flags(sys.argv)
    if program == 'sweep':
      module.run(flags.FLAGS.sweep, '/nonexistent/dry_run', dry_run=True,
                 extra=flags.FLAGS.set)
  except SystemExit:
    bad.append(argv)
  except Exception as e:  # pylint: disable=broad-except
    bad.append(argv + [repr(e)])
print(json.dumps(bad))
'''


def test_sweep_report_and_benchmark_commands_parse():
  bad = []
  for program in ('sweep', 'report', 'benchmark'):
    argvs = [argv for _, argv, p in commands()
             if p == f'-m bn_study.{program}']
    proc = subprocess.run(
        [sys.executable, '-c', _CHECK, program, json.dumps(argvs)], cwd=ROOT,
        capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    bad += [f'python -m bn_study.{program} {shlex.join(a)}'
            for a in json.loads(proc.stdout.strip().splitlines()[-1])]
  assert not bad, '\n'.join(bad)


def test_a_broken_command_is_caught():
  """The check can fail: a field that does not exist, a bad value."""
  assert _main_flags_error(['--config=configs/wbn.py', '--workdir=w',
                            '--config.model.nrom=batch'])
  assert 'model.norm' in _main_flags_error(
      ['--config=configs/wbn.py', '--workdir=w',
       '--config.model.norm=instance'])
  assert _main_flags_error(['--config=configs/wbn.py', '--workdir=w']) is None


def _slug(heading: str) -> str:
  """GitHub's anchor for a heading."""
  text = re.sub(r'[^\w\- ]', '', heading.strip().lower())
  return text.replace(' ', '-')


def _anchors(path: pathlib.Path):
  return {_slug(h) for h in re.findall(r'^#+ (.+)$', path.read_text(), re.M)}


def test_every_relative_link_resolves():
  bad = []
  for doc in DOCS:
    for target in re.findall(r'\]\(([^)\s]+)\)', doc.read_text()):
      if re.match(r'[a-z]+://', target) or target.startswith('mailto:'):
        continue
      path, _, anchor = target.partition('#')
      file = (doc.parent / path).resolve() if path else doc
      if not file.exists():
        bad.append(f'{doc.relative_to(ROOT)}: {target} (no such file)')
      elif anchor and file.suffix == '.md' and anchor not in _anchors(file):
        bad.append(f'{doc.relative_to(ROOT)}: {target} (no such heading)')
    # The repository's files named in inline code, from its root.
    for path in re.findall(r'`((?:bn_study|tests|configs|scripts|notebooks)'
                           r'/[\w./-]*\w)[`:]', doc.read_text()):
      if not re.search(r'\*|NAME|\bX\b', path) and not (
          pathlib.Path(ROOT) / path).exists():
        bad.append(f'{doc.relative_to(ROOT)}: `{path}` (no such file)')
  assert not bad, '\n'.join(bad)


def _config_fields():
  from configs import default  # pylint: disable=g-import-not-at-top
  flat = {}

  def walk(node, prefix):
    for key, value in node.items():
      if hasattr(value, 'items'):
        walk(value, f'{prefix}{key}.')
      flat[f'{prefix}{key}'] = value
  walk(default.get_config(), '')
  return flat


def test_every_config_field_the_docs_name_exists():
  # Dotted fields anywhere (`model.norm`, --config.analysis.every_steps) and
  # any FIELD=VALUE in inline code whose FIELD is dotted.
  fields = _config_fields()
  bad = []
  for doc in DOCS + sorted((pathlib.Path(ROOT) / 'configs').rglob('*.py')):
    text = doc.read_text()
    named = re.findall(r'--config\.([\w.]+)', text) + re.findall(
        r'`((?:model|analysis)\.\w+)', text)
    bad += [f'{doc.relative_to(ROOT)}: {name}' for name in named
            if name not in fields and not name.endswith('.')]  # A shell $var.
  assert not bad, '\n'.join(sorted(set(bad)))


def test_every_config_docstrings_pointer_resolves():
  # configs/*.py say where their numbers are: a file, or a README section.
  readme = _anchors(pathlib.Path(ROOT) / 'README.md')
  bad = []
  for file in sorted((pathlib.Path(ROOT) / 'configs').rglob('*.py')):
    doc = ast.get_docstring(ast.parse(file.read_text())) or ''
    doc = re.sub(r'\s+', ' ', doc)
    for path in re.findall(r'((?:docs|configs|bn_study|tests|notebooks)/'
                           r'[\w./-]+\w)', doc):
      if not (pathlib.Path(ROOT) / path).exists():
        bad.append(f'{file.relative_to(ROOT)}: {path}')
    for section in re.findall(r'README,? "([^"]+)"', doc):
      if _slug(section) not in readme:
        bad.append(f'{file.relative_to(ROOT)}: README "{section}"')
  assert not bad, '\n'.join(bad)


def test_the_docs_describe_the_present_without_private_paths():
  # No diary, no machine nicknames, no path to data users do not have.
  pattern = re.compile(r'\.\./shared|VM [ABC]\b|this session')
  bad = [f'{doc.relative_to(ROOT)}: {m.group(0)}'
         for doc in DOCS + sorted((pathlib.Path(ROOT) / 'configs').rglob(
             '*.py')) for m in pattern.finditer(doc.read_text())]
  assert not bad, '\n'.join(bad)
