"""Weight files -> flat arrays: `load_state_dict(path)` reads a `.npz`, `.safetensors` or PyTorch
`.pth`/`.pt`/`.bin` into `{key: np.ndarray}` (BasicSR's `params_ema` preferred, then `params`,
`state_dict`, `model`; `module.` stripped); flat 'a/b/c' keys <-> nested Flax params, and
`save_params_npz`/`load_params_npz` round-trip any params through an .npz of such keys.
"""

import os
import pickle
import zipfile
from collections.abc import Mapping

import flax
import numpy as np
from flax import traverse_util

from enhance_jax.errors import UserError

_TORCH_EXTS = ('.pth', '.pt', '.bin')
_EXTS = ('.npz', '.safetensors') + _TORCH_EXTS
# Containers BasicSR/ESRGAN/Lightning checkpoints wrap a state_dict in, most preferred first.
_CONTAINER_KEYS = ('params_ema', 'params', 'state_dict', 'model')


# ---------------------------------------------------------------- files -> flat arrays


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a `.npz`, `.safetensors` or PyTorch `.pth`/`.pt`/`.bin` file into `{key: np.ndarray}`."""
  path = os.fspath(path)
  ext = os.path.splitext(path)[1].lower()
  if os.path.exists(path) and not os.path.isfile(path):
    raise UserError(f"Weights file '{path}' is not a regular file (a folder, FIFO or device); give "
                    'a .pth/.safetensors/.npz file.')
  if not os.path.isfile(path):
    raise UserError(f"Weights file '{path}' does not exist; check the path in your config.")
  if ext not in _EXTS:
    raise UserError(f"Weights file '{path}' has an unknown extension '{ext}'; "
                    f"give a {', '.join(_EXTS)} file.")
  reader = {'.npz': read_npz, '.safetensors': _read_safetensors}.get(ext, _read_torch)
  sd = reader(path)
  sd = {k.removeprefix('module.'): _to_numpy(v) for k, v in sd.items() if _is_array(v)}
  if not sd:
    raise UserError(f"Weights file '{path}' holds no tensors; give a file saved from a "
                    'state_dict (torch.save(model.state_dict(), ...)).')
  return sd


def _corrupt(path: str, err: Exception) -> UserError:
  """The error for a file that exists but cannot be parsed."""
  return UserError(f"Weights file '{path}' is corrupt or truncated ({type(err).__name__}: "
                   f'{(str(err).splitlines() or ["no detail"])[0][:120]}); download or export '
                   'it again.')


def read_npz(path: str) -> Mapping:
  """Reads every array of an .npz (no pickles)."""
  try:
    with np.load(path, allow_pickle=False) as f:
      return {k: f[k] for k in f.files}
  except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as err:
    raise _corrupt(path, err) from err


def _read_safetensors(path: str) -> Mapping:
  """Reads a .safetensors file; bfloat16 tensors go through the jax reader numpy lacks."""
  import safetensors  # pylint: disable=g-import-not-at-top
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  try:
    try:
      return safetensors.numpy.load_file(path)
    except TypeError:  # numpy has no bfloat16.
      import safetensors.flax  # pylint: disable=g-import-not-at-top
      return safetensors.flax.load_file(path)
  except (safetensors.SafetensorError, OSError, ValueError) as err:
    raise _corrupt(path, err) from err


def _read_torch(path: str) -> Mapping:
  """Reads a torch.save file (weights only) and unwraps BasicSR/ESRGAN containers."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as err:
    raise UserError(f"Reading '{path}' needs PyTorch; run `pip install torch==2.13.0` (or install "
                    "the '[torch]' extra), or convert the file to .safetensors/.npz.") from err
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
    if 'Unsupported global' in str(err):
      raise UserError(f"'{path}' pickles Python objects, not just tensors; re-save it with "
                      'torch.save(model.state_dict(), path).') from err
    raise _corrupt(path, err) from err
  return _unwrap(obj, path)


def _unwrap(obj, path: str) -> Mapping:
  """Descends into {'params_ema'|'params'|'state_dict'|'model': {...}} wrappers."""
  while isinstance(obj, Mapping):
    inner = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
    if inner is None:
      return obj
    obj = inner
  raise UserError(f"'{path}' holds a {type(obj).__name__}, not a state_dict; re-save it with "
                  'torch.save(model.state_dict(), path).')


def _is_array(v) -> bool:
  """True for numpy/jax arrays and torch tensors (anything with a shape and dtype)."""
  return hasattr(v, 'shape') and hasattr(v, 'dtype')


def _to_numpy(v) -> np.ndarray:
  """Converts a tensor/array to numpy; bfloat16 and float16 become float32."""
  if hasattr(v, 'detach'):  # torch.Tensor
    v = v.detach().cpu()
    if v.is_floating_point() and v.dtype.itemsize < 4:
      v = v.float()
    return v.numpy()
  v = np.asarray(v)
  return v.astype(np.float32) if v.dtype.kind in 'fV' and v.dtype.itemsize < 4 else v


# ---------------------------------------------------------------- flat <-> nested params


def flatten_params(params: Mapping) -> dict[str, np.ndarray]:
  """Nested params -> `{'a/b/c': np.ndarray}`."""
  flat = traverse_util.flatten_dict(flax.core.unfreeze(params), sep='/')
  return {k: np.asarray(v) for k, v in flat.items()}


def unflatten_params(flat: Mapping[str, np.ndarray]) -> dict:
  """`{'a/b/c': array}` -> nested params."""
  return traverse_util.unflatten_dict(dict(flat), sep='/')


def save_params_npz(params: Mapping, path: str | os.PathLike) -> None:
  """Writes params as an .npz of flat 'a/b/c' keys, atomically (temp file + rename)."""
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp'
  with open(tmp, 'wb') as f:
    np.savez(f, **flatten_params(params))
  os.replace(tmp, path)


def load_params_npz(path: str | os.PathLike) -> dict:
  """Reads an .npz written by `save_params_npz` back into nested params."""
  if not os.fspath(path).endswith('.npz'):
    raise UserError(f"'{path}' is not an .npz; give a file written by save_params_npz.")
  return unflatten_params(load_state_dict(path))
