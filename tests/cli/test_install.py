"""A regular (non-editable) install ships the experiments: `pip install .` into a fresh venv, then
`python -m enhance_jax.train --list` and load_experiment from another directory use the venv's copy.

The install builds from a copy of the checkout's package sources in tmp_path: an in-tree build would
write build/ into the checkout, and a stale build/lib there would ship files deleted since. The venv
is made `--without-pip`: its own bundled setuptools would shadow the running interpreter's (which
builds the wheel offline with --no-build-isolation), so pip and setuptools come from the interpreter's
site-packages, as do the dependencies.
"""

import importlib.metadata
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import TINY
from enhance_jax.training import config as config_lib

pytestmark = pytest.mark.slow  # pip installs and a wheel build

REPO = pathlib.Path(__file__).resolve().parents[2]
SOURCES = ('setup.cfg', 'setup.py', 'pyproject.toml', 'MANIFEST.in', 'README.md', 'enhance_jax',
           'experiments')
# a report's number, or 'new' for the architectures the field trains now (issue 23), not of a report
LINE = re.compile(r'^(\S+) +report (\d{3}|new)  ')

# Run by the venv's python: which enhance_jax imports, and which experiment files load_experiment runs.
PROBE = textwrap.dedent('''
    import importlib.util, json, sys
    loaded = []
    _spec = importlib.util.spec_from_file_location
    def _record(name, location, *args, **kwargs):
      loaded.append(str(location))
      return _spec(name, location, *args, **kwargs)
    importlib.util.spec_from_file_location = _record
    import enhance_jax
    from enhance_jax.training import config
    c = config.get_config('esrgan_cpu', ['train.num_steps=1'])  # loaded, overridden and validated
    print(json.dumps({'package': enhance_jax.__file__, 'dir': str(config.EXPERIMENTS_DIR),
                      'name': c.name, 'loaded': loaded}))
''')


def _run(args, cwd, env):
  out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, f'{args}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}'
  return out.stdout


def _version(dist):
  """(major, minor) of the installed distribution DIST, or None."""
  try:
    version = importlib.metadata.version(dist)
  except importlib.metadata.PackageNotFoundError:
    return None
  return tuple(int(re.match(r'\d*', part).group() or 0) for part in version.split('.')[:2])


def _under(path, root):
  return pathlib.Path(path).resolve().is_relative_to(pathlib.Path(root).resolve())


@pytest.mark.parametrize('how', ['directory', 'wheel'])
def test_regular_install_and_wheel_ship_the_experiments_and_run_the_quickstart(tmp_path, how):
  """`pip install .` (HOW=directory) or a wheel built from the tree (HOW=wheel), into a fresh venv;
  from another directory: the experiments load from the installed copy, and the quickstart (train
  then evaluate, at test size) runs."""
  # Versions from the metadata: importing setuptools here would upset its distutils shim.
  # .ci/run's `pip install -e .` brings both; without them the test could not build, so it fails.
  assert _version('pip') and _version('setuptools'), 'needs pip and setuptools in this interpreter'
  assert _version('setuptools') >= (70, 1) or _version('wheel'), (
      'an offline wheel build needs setuptools>=70.1 or the wheel package')
  src = tmp_path / 'src'
  src.mkdir()
  ignore = shutil.ignore_patterns('__pycache__', '*.egg-info', 'build', 'dist', '*.so')
  for name in SOURCES:
    if (REPO / name).is_dir():
      shutil.copytree(REPO / name, src / name, ignore=ignore)
    elif (REPO / name).is_file():
      shutil.copy2(REPO / name, src / name)

  venv = tmp_path / 'venv'
  subprocess.run([sys.executable, '-m', 'venv', '--system-site-packages', '--without-pip', str(venv)],
                 check=True, timeout=120)
  python = str(venv / ('Scripts/python.exe' if os.name == 'nt' else 'bin/python'))
  env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME')}
  env['PIP_DISABLE_PIP_VERSION_CHECK'] = '1'
  purelib = pathlib.Path(_run([python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                              tmp_path, env).strip())
  if sys.prefix != sys.base_prefix:
    # Run from a venv: --system-site-packages reaches the base interpreter's packages, not this
    # venv's, which hold the dependencies; add them (and their .pth files) after the new venv's own.
    import site  # pylint: disable=g-import-not-at-top
    dirs = [d for d in site.getsitepackages() if pathlib.Path(d).resolve() != purelib.resolve()]
    (purelib / '_outer_site.pth').write_text(
        ''.join(f'import site; site.addsitedir({d!r})\n' for d in dirs))

  target = src
  if how == 'wheel':
    _run([python, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '--no-index', '-w',
          str(tmp_path / 'dist'), str(src)], tmp_path, env)
    (target,) = (tmp_path / 'dist').glob('enhance_jax-*.whl')
  _run([python, '-m', 'pip', 'install', '--no-deps', '--no-build-isolation', '--no-index',
        str(target)], tmp_path, env)

  installed = purelib / 'enhance_jax'
  packages = [p.parent.relative_to(REPO) for p in (REPO / 'enhance_jax').rglob('__init__.py')
              if '__pycache__' not in p.parts]
  for package in packages:  # setup.cfg lists the subpackages by hand: a new one must be added there
    assert (purelib / package / '__init__.py').is_file(), f'{package} is not in setup.cfg [options] packages'
  assert sorted(p.name for p in (installed / 'experiments').glob('*.py')) == sorted(
      p.name for p in (REPO / 'experiments').glob('*.py'))
  assert sorted(p.name for p in (installed / 'csrc').glob('*.cc')) == sorted(
      p.name for p in (REPO / 'enhance_jax' / 'csrc').glob('*.cc'))

  cwd = tmp_path / 'elsewhere'
  cwd.mkdir()
  probe = json.loads(_run([python, '-c', PROBE], cwd, env).strip().splitlines()[-1])
  assert _under(probe['package'], purelib), probe  # not the checkout's (editable) copy
  assert _under(probe['dir'], installed / 'experiments'), probe
  assert probe['name'] == 'esrgan_cpu'
  assert probe['loaded'] and all(_under(p, purelib) and not _under(p, REPO) for p in probe['loaded'])
  assert any(pathlib.Path(p).name == 'esrgan_cpu.py' for p in probe['loaded']), probe

  listed = {}
  for line in _run([python, '-m', 'enhance_jax.train', '--list'], cwd, env).splitlines():
    m = LINE.match(line)
    assert m, f'not NAME  report NNN|new  ...: {line!r}'
    listed[m.group(1)] = m.group(2)
  assert listed['esrgan_cpu'] == '004' and listed['srgan'] == '003', listed
  assert sorted(listed) == config_lib.list_experiments()

  # the quickstart, at test size: train, then evaluate the run (the venv's package, its cwd elsewhere)
  quick = [a for t in (*TINY, 'train.num_steps=2', 'train.pretrain_steps=2') for a in ('--set', t)]
  import jax  # pylint: disable=g-import-not-at-top
  env.update(JAX_PLATFORMS='cpu', JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')  # the two installs compile once
  _run([python, '-m', 'enhance_jax.train', '--exp', 'esrgan_cpu', '--workdir', 'runs/quick', *quick],
       cwd, env)
  out = _run([python, '-m', 'enhance_jax.evaluate', '--workdir', 'runs/quick'], cwd, env)
  assert 'psnr' in out.lower(), out
  result = json.loads((cwd / 'runs' / 'quick' / 'eval' / 'metrics.json').read_text())
  assert result['mean']['model']['psnr'] > 0 and (cwd / 'runs' / 'quick' / 'samples.png').is_file()


def test_describe_experiments_lists_every_experiment_with_its_report():
  names = config_lib.list_experiments()
  assert names == sorted(names) and 'esrgan' in names
  lines = config_lib.describe_experiments()
  matches = [LINE.match(line) for line in lines]
  assert all(matches), lines
  assert [m.group(1) for m in matches] == names
  for line in lines:
    assert line.split('  report ')[1][5:].strip(), f'no docstring line: {line!r}'
  new = [m.group(1) for m in matches if m.group(2) == 'new']
  assert 'swinir_classical_x4' in new and 'esrgan' not in new
