"""The files the quality metrics read.

NIQE's pristine Gaussian (`niqe_pris_params.npz`, BasicSR's copy of the MATLAB release's parameters),
found as the model zoo finds a model, first found wins: a path the user gives; an installed basicsr;
the model cache (ENHANCE_JAX_MODELS or ~/.cache/enhance_jax/models); a download of the upstream file into
that cache, checked against its sha256.

DISTS: alpha and beta from a path or the installed `DISTS_pytorch` package (its wheel ships weights.pt),
VGG16 from a torchvision state_dict the user gives, else random, said once.

LPIPS: the linear heads from a path or the installed `lpips` package (its wheel ships them:
lpips/weights/v0.1/{alex,vgg,squeeze}.pth); the backbone from a torchvision state_dict the user gives,
else random, said once (torchvision's ImageNet files cannot be fetched here).
"""

import functools
import importlib.util
import logging
import pathlib

import numpy as np

from enhance_jax.errors import UserError
from enhance_jax.io import zoo
from enhance_jax.io.weights import backbones as backbone_weights
from enhance_jax.io.weights import files

NIQE_FILE = 'niqe_pris_params.npz'
NIQE = zoo.ZooModel(
    'niqe-pristine', 'none', 1, 'Apache-2.0 (BasicSR); parameters from the NIQE MATLAB release',
    "NIQE's pristine-image Gaussian (BasicSR 1.4.2)",
    url=f'https://raw.githubusercontent.com/XPixelGroup/BasicSR/v1.4.2/basicsr/metrics/{NIQE_FILE}',
    sha256='2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296',
    homepage='https://github.com/XPixelGroup/BasicSR')
NIQE_KEYS = {'mu_pris_param': (1, 36), 'cov_pris_param': (36, 36), 'gaussian_window': (7, 7)}


def _package_dir(package: str) -> pathlib.Path | None:
  """The folder of an installed PACKAGE, found without importing it, or None."""
  try:
    spec = importlib.util.find_spec(package)
  except (ImportError, ValueError):  # a module in sys.modules without a spec (a test's stub)
    return None
  if spec is None or not spec.submodule_search_locations:
    return None
  return pathlib.Path(list(spec.submodule_search_locations)[0])


def installed_basicsr_file(name: str) -> pathlib.Path | None:
  """basicsr/metrics/NAME of an installed basicsr (found without importing it), or None."""
  root = _package_dir('basicsr')
  if root is None:
    return None
  path = root / 'metrics' / name
  return path if path.exists() else None


def niqe_params_path(path=None, download: bool = True) -> pathlib.Path:
  """Where NIQE's pristine parameters are: PATH, an installed basicsr's, the cache's, or downloaded."""
  if path:
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
      raise UserError(f'NIQE parameters {path} do not exist; give the path of {NIQE_FILE} (BasicSR '
                      'ships it in basicsr/metrics/).')
    return path
  found = installed_basicsr_file(NIQE_FILE)
  if found:
    return found
  cached = zoo.cache_dir() / NIQE_FILE
  if cached.exists():
    return cached
  if not download:
    raise UserError(f'NIQE needs {NIQE_FILE}: put {NIQE.url} at {cached}, install basicsr, or allow '
                    'the download.')
  return zoo.download(NIQE, progress=False)


def load_niqe_params(path=None, download: bool = True) -> dict:
  """NIQE's pristine parameters as float64 arrays: mu_pris_param [36], cov_pris_param [36, 36],
  gaussian_window [7, 7]; a file without them (or of other shapes) is a UserError."""
  where = niqe_params_path(path, download)
  try:
    with np.load(where) as data:
      params = {k: np.asarray(data[k], np.float64) for k in NIQE_KEYS if k in data}
  except (OSError, ValueError) as err:
    raise UserError(f'{where} is not a readable .npz ({err}); give BasicSR\'s {NIQE_FILE}.') from err
  bad = [k for k, shape in NIQE_KEYS.items() if k not in params or params[k].shape != shape]
  if bad:
    raise UserError(f'{where} is not NIQE\'s pristine parameters: {", ".join(bad)} missing or of the '
                    f'wrong shape; give BasicSR\'s {NIQE_FILE}.')
  params['mu_pris_param'] = params['mu_pris_param'][0]
  return params


# ---------------------------------------------------------------- LPIPS

LPIPS_CHANNELS = {'alex': (64, 192, 384, 256, 256), 'vgg': (64, 128, 256, 512, 512),
                  'squeeze': (64, 128, 256, 384, 384, 512, 512)}
LPIPS_BACKBONES = {'alex': 'alexnet', 'vgg': 'vgg16', 'squeeze': 'squeezenet1_1'}
_BACKBONE_IMPORTERS = {'alexnet': backbone_weights.alexnet_params_from_state_dict,
                       'vgg16': backbone_weights.vgg16_params_from_state_dict,
                       'squeezenet1_1': backbone_weights.squeezenet1_1_params_from_state_dict}


def installed_lpips_heads(net: str) -> pathlib.Path | None:
  """lpips/weights/v0.1/NET.pth of an installed lpips package (found without importing it), or None."""
  root = _package_dir('lpips')
  if root is None:
    return None
  path = root / 'weights' / 'v0.1' / f'{net}.pth'
  return path if path.exists() else None


def load_lpips_heads(net: str, path=None) -> list:
  """LPIPS's per-layer channel weights for NET ([C] float32 arrays), from PATH or the lpips package."""
  if net not in LPIPS_CHANNELS:
    raise UserError(f"Unknown LPIPS net {net!r}; use one of {', '.join(LPIPS_CHANNELS)}.")
  where = path or installed_lpips_heads(net)
  if where is None:
    raise UserError(f'LPIPS needs its linear heads: `pip install lpips==0.1.4` (its wheel ships '
                    f'weights/v0.1/{net}.pth) or give the file.')
  sd = files.load_state_dict(where)
  heads = []
  for k, c in enumerate(LPIPS_CHANNELS[net]):
    w = sd.get(f'lin{k}.model.1.weight')
    if w is None or np.asarray(w).shape != (1, c, 1, 1):
      raise UserError(f"{where} is not LPIPS v0.1's {net} heads: lin{k}.model.1.weight of shape "
                      f'(1, {c}, 1, 1) is {"missing" if w is None else np.asarray(w).shape}.')
    heads.append(np.asarray(w, np.float32).reshape(c))
  return heads


@functools.lru_cache(maxsize=None)
def warn_random_lpips_backbone(net: str) -> None:
  logging.warning('LPIPS (%s) runs on a random %s: give its torchvision ImageNet weights (e.g. %s) for '
                  'scores comparable with the lpips package.', net, LPIPS_BACKBONES[net],
                  backbone_weights.BACKBONE_HINTS[LPIPS_BACKBONES[net]])


def load_lpips_backbone(net: str, path=None) -> dict | None:
  """The LPIPS backbone's variables from a torchvision state_dict at PATH; None (random, warned once)
  without one."""
  if net not in LPIPS_BACKBONES:
    raise UserError(f"Unknown LPIPS net {net!r}; use one of {', '.join(LPIPS_BACKBONES)}.")
  if not path:
    warn_random_lpips_backbone(net)
    return None
  name = LPIPS_BACKBONES[net]
  try:
    return _BACKBONE_IMPORTERS[name](files.load_state_dict(path))
  except UserError as err:
    raise UserError(f"Cannot use '{path}' as LPIPS's {name}: {err}") from err


# ---------------------------------------------------------------- DISTS

DISTS_SIZE = 1475  # 3 + 64 + 128 + 256 + 512 + 512 channels


def load_dists_weights(path=None) -> tuple:
  """DISTS's (alpha, beta) [1475] float32 arrays from PATH or the DISTS_pytorch package's weights.pt."""
  root = _package_dir('DISTS_pytorch')
  where = path or (root / 'weights.pt' if root and (root / 'weights.pt').exists() else None)
  if where is None:
    raise UserError('DISTS needs its alpha and beta: `pip install --no-deps DISTS_pytorch==0.1` (its '
                    'wheel ships weights.pt) or give the file.')
  sd = files.load_state_dict(where)
  out = []
  for key in ('alpha', 'beta'):
    w = sd.get(key)
    if w is None or np.asarray(w).size != DISTS_SIZE:
      raise UserError(f"{where} is not DISTS's weights: {key} of {DISTS_SIZE} values is "
                      f'{"missing" if w is None else np.asarray(w).shape}.')
    out.append(np.asarray(w, np.float32).reshape(-1))
  return tuple(out)


@functools.lru_cache(maxsize=None)
def warn_random_dists_backbone() -> None:
  logging.warning('DISTS runs on a random VGG16: give its torchvision ImageNet weights (%s) for scores '
                  'comparable with DISTS_pytorch.', backbone_weights.BACKBONE_HINTS['vgg16'])


def load_dists_backbone(path=None) -> dict | None:
  """DISTS's VGG16 variables from a torchvision vgg16 state_dict at PATH; None (random, warned once)
  without one."""
  if not path:
    warn_random_dists_backbone()
    return None
  try:
    return backbone_weights.vgg16_params_from_state_dict(files.load_state_dict(path))
  except UserError as err:
    raise UserError(f"Cannot use '{path}' as DISTS's vgg16: {err}") from err
