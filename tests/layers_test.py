"""The package's layers, read from the source: what each folder may import,
no import cycles, studies/ free of JAX at module level, and modules of at
most MAX_LINES lines. docs/architecture.md describes the layers."""

import ast
import pathlib

import pytest

from tests.helpers import ROOT

PACKAGE = pathlib.Path(ROOT) / 'bn_study'
MAX_LINES = 450

# Layer -> the layers its modules may import. `base` is errors.py and
# workdir.py; `entry` the thin modules behind `python -m bn_study.X` and
# sweep files' `from bn_study import sweep, claims`.
ALLOWED = {
    'base': {'base'},
    'runtime': {'base', 'runtime'},
    'data': {'base', 'runtime', 'data'},
    'models': {'base', 'runtime', 'models'},
    'training': {'base', 'runtime', 'data', 'models', 'training'},
    'studies': {'base', 'studies'},
    'tools': {'base', 'runtime', 'data', 'models', 'training', 'studies',
              'tools'},
    'entry': {'studies', 'tools'},
}
# What a sweep driver or a report on a laptop or a Ray head node must not
# pay for (or lack) at import.
HEAVY = ('jax', 'flax', 'tensorflow', 'tensorflow_datasets', 'ray', 'optax',
         'orbax', 'clu')


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def layer(name: str) -> str:
  parts = name.split('.')
  if len(parts) == 1 or parts[1] in ('errors', 'workdir'):
    return 'base'
  if len(parts) == 2 and (PACKAGE / f'{parts[1]}.py').exists():
    return 'entry'
  return parts[1]


def imports(path: pathlib.Path):
  """[(imported bn_study module or third-party top package, at module
  level)] of one source file."""
  tree = ast.parse(path.read_text(), str(path))
  module_level = set()

  def mark(node):  # Everything that runs on import: not inside a function.
    module_level.add(id(node))
    for child in ast.iter_child_nodes(node):
      if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                ast.Lambda)):
        mark(child)

  mark(tree)
  found = []
  for node in ast.walk(tree):
    top = id(node) in module_level
    if isinstance(node, ast.Import):
      found += [(a.name, top) for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      if node.module == 'bn_study' or node.module.startswith('bn_study.'):
        for a in node.names:
          candidate = f'{node.module}.{a.name}'
          is_module = (PACKAGE.parent / (candidate.replace('.', '/') + '.py')
                       ).exists() or (PACKAGE.parent / candidate.replace(
                           '.', '/')).is_dir()
          found.append((candidate if is_module else node.module, top))
      else:
        found.append((node.module, top))
  return found


def package_graph():
  """{module: [(imported module or package, at module level)]}."""
  return {module_name(p): imports(p) for p in sorted(PACKAGE.rglob('*.py'))}


def test_each_layer_imports_only_the_layers_below_it():
  bad = []
  for name, found in package_graph().items():
    for target, _ in found:
      if target.split('.')[0] != 'bn_study':
        continue
      if layer(target) not in ALLOWED[layer(name)]:
        bad.append(f'{name} ({layer(name)}) imports {target} '
                   f'({layer(target)})')
  assert not bad, '\n'.join(bad)


def test_studies_import_no_jax_tensorflow_or_ray_at_module_level():
  bad = [f'{name} imports {target}'
         for name, found in package_graph().items()
         if layer(name) in ('studies', 'base', 'entry')
         and not name.endswith('benchmark')
         for target, top in found
         if top and target.split('.')[0] in HEAVY]
  assert not bad, '\n'.join(bad)


def test_there_are_no_import_cycles():
  """Lazy imports inside functions count too: a cycle through one is still
  two modules that each need the other."""
  graph = {name: {t for t, _ in found if t in package_graph_names()}
           for name, found in package_graph().items()}
  cycles, state = [], {}

  def visit(node, path):
    state[node] = 'open'
    for nxt in sorted(graph[node]):
      if state.get(nxt) == 'open':
        cycles.append(' -> '.join(path[path.index(nxt):] + [nxt]))
      elif nxt not in state:
        visit(nxt, path + [nxt])
    state[node] = 'done'

  for node in sorted(graph):
    if node not in state:
      visit(node, [node])
  assert not cycles, '\n'.join(cycles)


def package_graph_names():
  return {module_name(p) for p in PACKAGE.rglob('*.py')}


@pytest.mark.parametrize('path', sorted(PACKAGE.rglob('*.py')),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_are_at_most_450_lines(path):
  assert len(path.read_text().splitlines()) <= MAX_LINES


def test_the_rules_can_fail():
  """The checks above see what they are meant to: a studies module that
  imported training, or JAX, would be caught."""
  assert layer('bn_study.training.loop') not in ALLOWED[
      layer('bn_study.studies.report')]
  assert layer('bn_study.sweep') == 'entry'
  assert layer('bn_study.workdir') == 'base'
  found = dict(imports(PACKAGE / 'training' / 'loop.py'))
  assert found['bn_study.training.steps'] is True
  assert found['jax'] is True
