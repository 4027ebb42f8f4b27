"""The package's imports flow one way: no circle between its modules, and no import of its own
modules hidden inside a function (the usual way a circle is kept from failing at import time).
import-linter holds the layer order (.importlinter, run by .ci/run); these tests hold the graph."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = 'enhance_jax'


def modules(root: pathlib.Path) -> dict[str, pathlib.Path]:
  """{dotted module name: file} of the package under ROOT."""
  out = {}
  for path in sorted((root / PACKAGE).rglob('*.py')):
    name = '.'.join(path.relative_to(root).with_suffix('').parts)
    out[name.removesuffix('.__init__')] = path
  return out


def _resolve(name: str, known) -> str | None:
  """The package module NAME refers to (a module, or the module holding the imported name)."""
  while name and name not in known:
    name = name.rpartition('.')[0]
  return name or None


def imports(root: pathlib.Path) -> tuple[dict[str, set], dict[str, set]]:
  """({module: package modules it imports at module level}, {module: those it imports inside a
  function or method})."""
  known = modules(root)
  top, local = {m: set() for m in known}, {m: set() for m in known}

  def visit(node, module, in_function):
    for child in ast.iter_child_nodes(node):
      inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
      targets = []
      if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
        targets = [_resolve(f'{child.module}.{a.name}', known) for a in child.names]
      elif isinstance(child, ast.Import):
        targets = [_resolve(a.name, known) for a in child.names]
      for target in targets:
        if target and target != module and target.startswith(PACKAGE):
          (local if inside else top)[module].add(target)
      visit(child, module, inside)

  for module, path in known.items():
    visit(ast.parse(path.read_text(encoding='utf-8')), module, False)
  return top, local


def cycles(graph: dict[str, set]) -> list[list[str]]:
  """The strongly connected components of more than one module (Tarjan), each sorted."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def connect(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph.get(v, ()):
      if w not in index:
        connect(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      connect(v)
  return found


def test_the_cycle_finder_finds_a_circle_and_only_a_circle():
  assert cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c']]
  assert not cycles({'a': {'b'}, 'b': {'c'}, 'c': set()})


def test_the_finder_sees_local_imports_and_circles_in_a_package(tmp_path):
  pkg = tmp_path / PACKAGE
  pkg.mkdir()
  (pkg / '__init__.py').write_text('')
  (pkg / 'low.py').write_text('def f():\n  from enhance_jax import high\n  return high\n')
  (pkg / 'high.py').write_text('from enhance_jax import low\n')
  top, local = imports(tmp_path)
  assert top['enhance_jax.high'] == {'enhance_jax.low'}
  assert local['enhance_jax.low'] == {'enhance_jax.high'}
  merged = {m: top[m] | local[m] for m in top}
  assert cycles(merged) == [['enhance_jax.high', 'enhance_jax.low']]


def test_no_import_circle_between_the_package_modules():
  top, local = imports(ROOT)
  assert len(top) > 40  # the whole package was read
  merged = {m: top[m] | local[m] for m in top}
  assert cycles(merged) == []


def test_no_module_imports_the_package_inside_a_function():
  _, local = imports(ROOT)
  assert {m: sorted(t) for m, t in local.items() if t} == {}


def test_the_tests_mirror_the_package():
  """tests/LAYER/ for each subpackage (plus cli/ for the commands and benchmarks/), no flat test file
  but this package-wide one: a newcomer finds a module's tests where the module is."""
  tests = ROOT / 'tests'
  layers = {p.name for p in (ROOT / 'enhance_jax').iterdir() if (p / '__init__.py').is_file()}
  folders = {p.name for p in tests.iterdir() if p.is_dir() and any(p.glob('test_*.py'))}
  assert folders <= layers | {'cli', 'benchmarks'}, folders - layers
  assert {'ops', 'models', 'io', 'data', 'eval', 'training', 'infer'} <= folders
  assert [p.name for p in tests.glob('test_*.py')] == ['test_layers.py']
