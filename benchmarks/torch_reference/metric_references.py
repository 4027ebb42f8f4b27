"""The field's own metric code, the references enhance_jax's metrics agree with, importable beside the
CPU torch (no torchvision):

- BasicSR 1.4.2's NIQE, from its sdist without installing basicsr (whose dependencies pull
  torchvision and a CUDA torch): `sdist()` fetches `basicsr-1.4.2.tar.gz` once with `pip download
  --no-deps` into a cache folder; `niqe_module()` loads `basicsr/metrics/niqe.py` with the few package
  files it imports (color_util, matlab_functions, metric_util) and a stub registry.
- BasicSR 1.4.2's LDL artifact map (`ldl_artifact_map()`), from the same sdist.
- piq 0.8.0's MS-SSIM (`piq_ms_ssim()`), loaded without piq's package import, which builds
  torchvision's Inception classes.
- the `lpips` 0.1.4 package (`lpips_package(nets)`) and DISTS_pytorch 0.1 (`dists_module(vgg16)`),
  their backbones served from torch twins of torchvision's (backbones.stub_torchvision_models).
"""

import importlib.util
import os
import pathlib
import subprocess
import sys
import tarfile
import types

from benchmarks.torch_reference import backbones

VERSION = '1.4.2'
MEMBERS = ('basicsr/utils/color_util.py', 'basicsr/utils/matlab_functions.py',
           'basicsr/metrics/metric_util.py', 'basicsr/metrics/niqe.py',
           'basicsr/metrics/niqe_pris_params.npz', 'basicsr/losses/loss_util.py')


def cache_dir() -> pathlib.Path:
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return pathlib.Path(base) / 'enhance_jax' / 'references'


def sdist() -> pathlib.Path:
  """The folder holding basicsr 1.4.2's unpacked metric files (downloaded once from the registry)."""
  root = cache_dir() / f'basicsr-{VERSION}'
  if all((root / m).exists() for m in MEMBERS):
    return root
  cache_dir().mkdir(parents=True, exist_ok=True)
  archive = cache_dir() / f'basicsr-{VERSION}.tar.gz'
  if not archive.exists():
    done = subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps',
                           f'basicsr=={VERSION}', '-d', str(cache_dir())], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0 or not archive.exists():
      raise RuntimeError(f'pip download basicsr=={VERSION} failed: {done.stderr.strip()[-500:]}')
  with tarfile.open(archive) as tar:
    for member in MEMBERS:
      source = tar.extractfile(f'basicsr-{VERSION}/{member}')
      target = root / member
      target.parent.mkdir(parents=True, exist_ok=True)
      target.write_bytes(source.read())
  return root


def _load(name, path):
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


def niqe_module():
  """basicsr.metrics.niqe, loaded from the sdist (calculate_niqe, niqe, and the pristine file beside it)."""
  if 'basicsr.metrics.niqe' in sys.modules:
    return sys.modules['basicsr.metrics.niqe']
  root = sdist()
  for package in ('basicsr', 'basicsr.utils', 'basicsr.metrics'):
    module = types.ModuleType(package)
    module.__path__ = []
    sys.modules[package] = module
  registry = types.ModuleType('basicsr.utils.registry')

  class _Registry:
    def register(self):
      return lambda fn: fn

  registry.METRIC_REGISTRY = _Registry()
  sys.modules['basicsr.utils.registry'] = registry
  color = _load('basicsr.utils.color_util', root / 'basicsr/utils/color_util.py')
  sys.modules['basicsr.utils'].bgr2ycbcr = color.bgr2ycbcr
  _load('basicsr.utils.matlab_functions', root / 'basicsr/utils/matlab_functions.py')
  _load('basicsr.metrics.metric_util', root / 'basicsr/metrics/metric_util.py')
  return _load('basicsr.metrics.niqe', root / 'basicsr/metrics/niqe.py')


def ldl_artifact_map():
  """basicsr.losses.loss_util.get_refined_artifact_map (NCHW tensors: gt, output, ema output, ksize),
  the map of BasicSR's LDL loss; loss_util imports torch alone."""
  return _load('basicsr_loss_util', sdist() / 'basicsr/losses/loss_util.py').get_refined_artifact_map


def pristine_params_path() -> pathlib.Path:
  return sdist() / 'basicsr/metrics/niqe_pris_params.npz'


def _stub_package(name: str) -> None:
  """Puts package NAME in sys.modules without running its __init__ (its submodules import normally)."""
  if name in sys.modules:
    return
  spec = importlib.util.find_spec(name)
  if spec is None:
    raise ImportError(f'{name} is a test dependency: pip install --no-deps lpips==0.1.4 piq==0.8.0')
  package = types.ModuleType(name)
  package.__path__ = list(spec.submodule_search_locations)
  sys.modules[name] = package


def piq_ms_ssim():
  """piq.multi_scale_ssim (NCHW tensors in [0, data_range])."""
  _stub_package('piq')
  return importlib.import_module('piq.ms_ssim').multi_scale_ssim


def lpips_package(nets: dict):
  """The lpips package, its torchvision.models serving NETS (e.g. {'alexnet': module})."""
  backbones.stub_torchvision_models(nets)
  return importlib.import_module('lpips')


def dists_module(vgg16):
  """DISTS_pytorch.DISTS_pt, its torchvision.models.vgg16 serving VGG16 (a torch_vgg16 twin) even for
  the pretrained=True DISTS asks for: the tests load VGG16's weights into both implementations."""
  models = backbones.stub_torchvision_models({'vgg16': vgg16}, pretrained_ok=True)
  root = sys.modules['torchvision']
  if not hasattr(root, 'transforms'):  # DISTS_pt imports it (for its image helper only)
    root.transforms = types.ModuleType('torchvision.transforms')
    sys.modules['torchvision.transforms'] = root.transforms
  root.models = models
  return importlib.import_module('DISTS_pytorch.DISTS_pt')
