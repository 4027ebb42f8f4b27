"""Import pretrained weights (PyTorch `.pth`/`.pt`, `.safetensors`, `.npz`) into Flax params.

Layers: `load_state_dict(path)` reads any supported file into a flat `{key: np.ndarray}` (BasicSR's
`params_ema` preferred, then `params`, `state_dict`, `model`); one importer per architecture maps those
keys to the Flax module's nested params (torch conv weights [out, in, kh, kw] become kernels
[kh, kw, in, out]); `load_<model>` ties both together for a config key. Importers so far:
  - torchvision VGG19 `features` (`features.{i}`, also under `vgg.`/`vgg_net.`) -> `models.vgg.VGG19Features`.
  - BasicSR / Real-ESRGAN RRDBNet (`conv_first`, `body.{i}.rdb{j}.conv{k}`, `conv_body`, `conv_up1`,
    `conv_up2`, `conv_hr`, `conv_last`) and the ESRGAN release names (`RRDB_trunk.{i}.RDB{j}.conv{k}`,
    `trunk_conv`, `upconv1`, `upconv2`, `HRconv`) -> RRDBNet (`body_{i}/rdb{j}/conv{k}`).
  - torchvision ResNet18 and VGG16 (`conv1`, `layer{i}.{j}...`, `features.{i}`) -> the `backbone`
    submodule of report 000's CelebA generator and discriminator (`load_backbone`).
  - Released generators, whole (`import_weights`, used by `python -m enhance_jax.convert`): `ARCHS` maps
    each name (rrdbnet, srvgg_compact, msrresnet, edsr, nima, vgg19, resnet18, vgg16) to how its keys
    are recognised (`infer_arch`) and how its config `model` section (sizes read off the shapes) and a
    strict key table follow from them; every key must be used with its shape, and a mismatch is one
    UserError naming the first mismatched key.
To add one: write a layout function returning the model section and a `{(collection, Flax path):
(torch key, torch shape)}` table in module order (see `_msrresnet_layout`), and an `Arch` entry
(`finish` for what the table cannot say, e.g. NIMA's Linear weight transposed to a Dense kernel).
`save_params_npz`/`load_params_npz` round-trip any Flax params as flat 'a/b/c' keys; `write_model_dir`
and `read_model_dir` store a converted model (model.json + variables.npz) for other commands to load.
"""

import functools
import json
import logging
import os
import pickle
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from enhance_jax import models
from enhance_jax.errors import UserError
from enhance_jax.io import ncnn
from enhance_jax.models import backbones
from enhance_jax.models import edsr
from enhance_jax.models import nima as models_nima
from enhance_jax.models import vgg

_TORCH_EXTS = ('.pth', '.pt', '.bin')
_EXTS = ('.npz', '.safetensors') + _TORCH_EXTS
# Containers BasicSR/ESRGAN/Lightning checkpoints wrap a state_dict in, most preferred first.
_CONTAINER_KEYS = ('params_ema', 'params', 'state_dict', 'model')
_VGG_PREFIXES = ('', 'vgg.', 'vgg_net.', 'vgg.vgg_net.', 'params/')
_VGG_HINT = ("torchvision's vgg19 state_dict (e.g. vgg19-dcbb9e9d.pth), or an .npz/.safetensors "
             'with the same keys')


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
  reader = {'.npz': _read_npz, '.safetensors': _read_safetensors}.get(ext, _read_torch)
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


def _read_npz(path: str) -> Mapping:
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


# ---------------------------------------------------------------- shared conv conversion


def _torch_conv(sd: Mapping, key: str) -> dict[str, np.ndarray] | None:
  """The torch conv `key` ({key}.weight [out,in,kh,kw], {key}.bias) as a Flax kernel/bias, or None."""
  if f'{key}.weight' not in sd:
    return None
  w = np.asarray(sd[f'{key}.weight'], np.float32)
  kernel = w.transpose(2, 3, 1, 0) if w.ndim == 4 else w
  bias = sd.get(f'{key}.bias')
  return {'kernel': kernel, 'bias': None if bias is None else np.asarray(bias, np.float32)}


def _flax_conv(sd: Mapping, key: str) -> dict[str, np.ndarray] | None:
  """The Flax-style conv `key` ({key}/kernel, {key}/bias), or None."""
  if f'{key}/kernel' not in sd:
    return None
  bias = sd.get(f'{key}/bias')
  return {'kernel': np.asarray(sd[f'{key}/kernel'], np.float32),
          'bias': None if bias is None else np.asarray(bias, np.float32)}


def _check_convs(found: Mapping, shapes: Mapping, keys: Mapping, expected: str) -> None:
  """Raises one UserError naming every missing or mis-shaped conv by its file key."""
  missing = [n for n in shapes if found.get(n) is None or found[n]['bias'] is None]
  wrong = [n for n in shapes if n not in missing and (
      found[n]['kernel'].shape != shapes[n] or found[n]['bias'].shape != shapes[n][-1:])]
  parts = []
  if missing:
    parts.append('missing ' + _clip([f'{keys[n]}.weight/bias' for n in missing]))
  if wrong:
    parts.append('wrong shape ' + _clip(
        [f"{keys[n]} (kernel {found[n]['kernel'].shape}, want {shapes[n]})" for n in wrong]))
  if parts:
    raise UserError(f"Weights do not fit ({'; '.join(parts)}); give {expected}.")


def _clip(items: Sequence[str], n: int = 6) -> str:
  """Joins the first `n` items, noting how many more there are."""
  more = f' (+{len(items) - n} more)' if len(items) > n else ''
  return ', '.join(items[:n]) + more


# ---------------------------------------------------------------- strict key tables

# {(collection, Flax path 'a/b/kernel'): (torch key, torch shape)} in the module's order; collection
# None: a key that is checked but holds no Flax variable (EDSR-PyTorch's constant MeanShift convs).
Table = dict[tuple[str | None, str], tuple[str, tuple[int, ...]]]


class _Mismatch(Exception):
  """Problems with a state_dict ("missing 'k'", "'k' has shape ...", "unexpected 'k'"), first first."""

  def __init__(self, problems: Sequence[str]):
    super().__init__(problems[0])
    self.problems = list(problems)


def _mismatch_message(problems: Sequence[str], hint: str) -> str:
  """One sentence naming the first problem, the next two (a renamed key is a missing one and an
  unexpected one: seeing both says so), a count of the rest, and what to give instead."""
  more = f' (also {_clip(problems[1:], 2)})' if len(problems) > 1 else ''
  return f'the first mismatched key: {problems[0]}{more}; give {hint}.'


def _convert(sd: Mapping[str, np.ndarray], table: Table, namespace: tuple[str, ...] = ('',),
             problems: Sequence[str] = ()) -> dict:
  """{collection: nested Flax variables} (numpy float32) from `sd` by `table`; raises _Mismatch.

  Problems, in order: `problems` (the caller's value checks), then missing or mis-shaped keys in the
  table's order, then keys under `namespace` (prefixes; ('',) is every key) the table does not know.
  torch conv weights [out, in, kh, kw] become kernels [kh, kw, in, out]; `num_batches_tracked` is ignored.
  """
  problems, flat = list(problems), {}
  for (collection, path), (key, shape) in table.items():
    value = sd.get(key)
    if value is None:
      problems.append(f"missing '{key}'")
    elif tuple(value.shape) != shape:
      problems.append(f"'{key}' has shape {tuple(value.shape)}, want {shape}")
    elif collection is not None:
      value = np.asarray(value, np.float32)
      flat[f'{collection}/{path}'] = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value
  known = {key for key, _ in table.values()}
  problems += [f"unexpected '{k}'" for k in sd
               if k.startswith(namespace) and k not in known and not k.endswith('num_batches_tracked')]
  if problems:
    raise _Mismatch(problems)
  return unflatten_params(flat)


def _conv_rows(table: Table, path: str, key: str, c_in: int, c_out: int, k: int = 3) -> None:
  """Adds a biased conv: Flax `path/kernel`, `path/bias` from torch `key.weight`, `key.bias`."""
  table['params', f'{path}/kernel'] = (f'{key}.weight', (c_out, c_in, k, k))
  table['params', f'{path}/bias'] = (f'{key}.bias', (c_out,))


def _prefixed(table: Table, prefix: str) -> Table:
  return {name: (prefix + key, shape) for name, (key, shape) in table.items()}


def _first_prefix(sd: Mapping, prefixes: Sequence[str], key: str) -> str:
  """The first of `prefixes` under which `key` is in `sd` ('' if none)."""
  return next((p for p in prefixes if p + key in sd), '')


def _dim(sd: Mapping, key: str, axis: int, default: int, ndim: int = 4) -> int:
  """sd[key].shape[axis] when `key` is an `ndim`-D tensor, else `default` (the table reports it)."""
  value = sd.get(key)
  return int(value.shape[axis]) if value is not None and value.ndim == ndim else default


def _out_channels(sd: Mapping, convs: Sequence[str], default: int) -> int:
  """The output channels of the first of `convs` whose weight (or else bias) is stored."""
  for conv in convs:
    for key, ndim in ((f'{conv}.weight', 4), (f'{conv}.bias', 1)):
      if (value := sd.get(key)) is not None and value.ndim == ndim:
        return int(value.shape[0])
  return default


# ---------------------------------------------------------------- VGG19


def vgg19_params_from_state_dict(sd: Mapping[str, np.ndarray],
                                 convs: Sequence[str] = vgg.VGG19_LAYERS) -> dict:
  """Maps torchvision (`features.{i}`), BasicSR (`vgg_net.conv1_1`) or Flax keys to VGG19Features params.

  Only `convs` are required and returned; classifier and other keys are ignored.
  """
  found = {name: _find_vgg_conv(sd, name) for name in convs}
  shapes = {name: (3, 3, vgg.vgg19_in_channels(name), vgg.VGG19_CHANNELS[name]) for name in convs}
  keys = {name: f'features.{vgg.VGG19_TORCH_INDEX[name]}' for name in convs}
  _check_convs(found, shapes, keys, _VGG_HINT)
  return {name: dict(found[name]) for name in convs}


def _find_vgg_conv(sd: Mapping, name: str) -> dict | None:
  """Looks a VGG19 conv up under every supported prefix and naming."""
  index = vgg.VGG19_TORCH_INDEX[name]
  for prefix in _VGG_PREFIXES:
    conv = (_torch_conv(sd, f'{prefix}features.{index}') or _torch_conv(sd, f'{prefix}{name}')
            or _flax_conv(sd, f'{prefix}{name}'))
    if conv is not None:
      return conv
  return None


@functools.cache
def warn_random_vgg19() -> None:
  """Says once per process (loudly) that the perceptual loss runs on random VGG19 weights."""
  msg = ('WARNING: the perceptual loss uses RANDOM VGG19 weights, so it measures nothing useful; '
         'set loss.vgg_weights=/path/to/vgg19.pth (torchvision vgg19 state_dict, e.g. '
         'vgg19-dcbb9e9d.pth, or an .npz/.safetensors of it).')
  logging.warning(msg)
  print(msg, file=sys.stderr, flush=True)


def load_vgg19(path: str | os.PathLike | None,
               layers: Sequence[str] | str = ('conv5_4',)) -> dict:
  """VGG19Features params for `layers` (only convs up to the last one) from a file, or random if None.

  Use as `VGG19Features(layers=layers).apply({'params': params}, x)`.
  """
  convs = vgg.convs_needed(layers)
  if path is None:
    warn_random_vgg19()
    model = vgg.VGG19Features(layers=(convs[-1],))
    return model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3), jnp.float32))['params']
  sd = load_state_dict(path)
  try:
    params = vgg19_params_from_state_dict(sd, convs)
  except UserError as err:
    raise UserError(f"Cannot use '{path}' as VGG19 weights: {err}") from err
  return jax.tree.map(jnp.asarray, params)


# ---------------------------------------------------------------- RRDBNet (ESRGAN)


def rrdbnet_params_from_state_dict(sd: Mapping[str, np.ndarray], num_blocks: int) -> dict:
  """BasicSR (`body.{i}.rdb{j}...`) or ESRGAN (`RRDB_trunk.{i}.RDB{j}...`) keys -> RRDBNet params
  (numpy, nested as conv_first, body_{i}/rdb{j}/conv{k}, conv_body, conv_up1/2, conv_hr, conv_last),
  through the one RRDBNet layout `import_weights` uses, its block count checked against NUM_BLOCKS."""
  esrgan = any(k.startswith('RRDB_trunk.') for k in sd)
  stored = _count_blocks(sd, 'RRDB_trunk' if esrgan else 'body')
  if stored and stored != num_blocks:
    raise UserError(f'The RRDBNet weights have {stored} blocks but the model has {num_blocks}; '
                    f'set model.num_blocks={stored}.')
  return import_weights(sd, 'rrdbnet')[1]['params']


def _rrdbnet_table(num_blocks: int, esrgan: bool) -> dict[str, str]:
  """{Flax path 'body_0/rdb1/conv1': torch key} for either naming."""
  names = ('conv_first', 'conv_body', 'conv_up1', 'conv_up2', 'conv_hr', 'conv_last')
  torch_names = (('conv_first', 'trunk_conv', 'upconv1', 'upconv2', 'HRconv', 'conv_last')
                 if esrgan else names)
  body = 'RRDB_trunk.{i}.RDB{j}.conv{k}' if esrgan else 'body.{i}.rdb{j}.conv{k}'
  return {**dict(zip(names, torch_names)),
          **{f'body_{i}/rdb{j}/conv{k}': body.format(i=i, j=j, k=k)
             for i in range(num_blocks) for j in (1, 2, 3) for k in range(1, 6)}}


def _count_blocks(sd: Mapping, prefix: str) -> int:
  """Number of RRDB blocks stored under `{prefix}.{i}.` (0 if none)."""
  pattern = re.compile(rf'{re.escape(prefix)}\.(\d+)\.')
  indices = {int(m.group(1)) for k in sd if (m := pattern.match(k))}
  return max(indices) + 1 if indices else 0


# ---------------------------------------------------------------- report 000 backbones (ResNet18, VGG16)

# Prefixes a backbone's torchvision keys may carry (a bare torchvision model, or a generator's submodule).
_BACKBONE_PREFIXES = ('', 'backbone.')
_BACKBONE_HINTS = {
    'resnet18': "torchvision's resnet18 state_dict (e.g. resnet18-f37072fd.pth), or an .npz/.safetensors "
                'with the same keys',
    'vgg16': "torchvision's vgg16 state_dict (e.g. vgg16-397923af.pth), or an .npz/.safetensors with "
             'the same keys',
    'mobilenet_v2': "torchvision's mobilenet_v2 state_dict (e.g. mobilenet_v2-b0353104.pth) as "
                    'model.backbone_weights',
    'mnasnet': "torchvision's mnasnet1_0 state_dict (e.g. mnasnet1.0_top1_73.512-f206786ef8.pth) as "
               'model.backbone_weights',
    'mobilenet': 'model.backbone=mnasnet or mobilenet_v2 with a torchvision ImageNet state_dict (MobileNet '
                 'v1 has no torchvision layout to import)',
}


def _resnet18_table() -> dict[tuple[str, str], tuple[str, tuple[int, ...]]]:
  """{(collection, Flax path): (torch key, torch shape)} for ResNet18Features, in module order."""
  table = {}

  def conv(path, key, c_in, c_out, k):
    table['params', f'{path}/kernel'] = (f'{key}.weight', (c_out, c_in, k, k))

  def bn(path, key, c):
    table['params', f'{path}/scale'] = (f'{key}.weight', (c,))
    table['params', f'{path}/bias'] = (f'{key}.bias', (c,))
    table['batch_stats', f'{path}/mean'] = (f'{key}.running_mean', (c,))
    table['batch_stats', f'{path}/var'] = (f'{key}.running_var', (c,))

  conv('conv1', 'conv1', 3, 64, 7)
  bn('bn1', 'bn1', 64)
  c_in = 64
  for layer, c_out, strides in backbones.RESNET18_LAYERS:
    for i in range(backbones.RESNET18_BLOCKS):
      path, key = f'{layer}_{i}', f'{layer}.{i}'
      conv(f'{path}/conv1', f'{key}.conv1', c_in, c_out, 3)
      bn(f'{path}/bn1', f'{key}.bn1', c_out)
      conv(f'{path}/conv2', f'{key}.conv2', c_out, c_out, 3)
      bn(f'{path}/bn2', f'{key}.bn2', c_out)
      if i == 0 and (strides != 1 or c_in != c_out):
        conv(f'{path}/downsample_0', f'{key}.downsample.0', c_in, c_out, 1)
        bn(f'{path}/downsample_1', f'{key}.downsample.1', c_out)
      c_in = c_out
  return table


def _vgg16_table() -> dict[tuple[str, str], tuple[str, tuple[int, ...]]]:
  """{('params', Flax path): (torch key, torch shape)} for VGG16Features, in module order."""
  table = {}
  for index, c_in, c_out in backbones.vgg16_conv_indices():
    table['params', f'features_{index}/kernel'] = (f'features.{index}.weight', (c_out, c_in, 3, 3))
    table['params', f'features_{index}/bias'] = (f'features.{index}.bias', (c_out,))
  return table


def _backbone_variables(sd: Mapping[str, np.ndarray], name: str, table: Table,
                        namespace: tuple[str, ...]) -> dict:
  """Converts `sd` by `table`; raises UserError naming the first missing, mis-shaped or unexpected key.

  Keys outside the backbone (`fc.*`, `classifier.*`) and `num_batches_tracked` are ignored; a key under
  the backbone's `namespace` that the table does not know (another depth's blocks, a BatchNorm VGG) is
  unexpected.
  """
  prefix = _first_prefix(sd, _BACKBONE_PREFIXES, next(iter(table.values()))[0])
  try:
    return _convert(sd, _prefixed(table, prefix), tuple(prefix + n for n in namespace))
  except _Mismatch as err:
    raise UserError(_mismatch_message(err.problems, _BACKBONE_HINTS[name])) from None


def resnet18_params_from_state_dict(sd: Mapping[str, np.ndarray]) -> dict:
  """torchvision resnet18 keys (`conv1`, `bn1`, `layer{1-4}.{0,1}.{conv,bn}{1,2}`, `.downsample.{0,1}`,
  bare or under `backbone.`) -> ResNet18Features variables {'params': ..., 'batch_stats': ...} (numpy).
  `fc.*` and `num_batches_tracked` are ignored."""
  return _backbone_variables(sd, 'resnet18', _resnet18_table(), ('conv1.', 'bn1.', 'layer'))


def vgg16_params_from_state_dict(sd: Mapping[str, np.ndarray]) -> dict:
  """torchvision vgg16 keys (`features.{i}` for the 13 convs, bare or under `backbone.`) ->
  VGG16Features variables {'params': ...} (numpy). `classifier.*` is ignored."""
  return _backbone_variables(sd, 'vgg16', _vgg16_table(), ('features.',))


def _nima_backbone(arch: str):
  """The importer of NIMA's torchvision ImageNet backbone ARCH (mobilenet_v2 or mnasnet)."""
  return lambda sd: nima_backbone_params_from_state_dict(sd, arch)


_BACKBONE_IMPORTERS = {'resnet18': resnet18_params_from_state_dict, 'vgg16': vgg16_params_from_state_dict,
                       'mobilenet_v2': _nima_backbone('mobilenet_v2'), 'mnasnet': _nima_backbone('mnasnet')}
# Backbones with no torchvision layout to import (NIMA's MobileNet v1): random, said once.
_RANDOM_ONLY_BACKBONES = ('mobilenet',)


@functools.cache
def warn_random_backbone(name: str) -> None:
  """Says once per process and backbone that it starts from random, not ImageNet, weights."""
  msg = (f'WARNING: the {name} backbone uses RANDOM weights, not ImageNet-pretrained ones; give '
         f'{_BACKBONE_HINTS[name]} to start from them.')
  logging.warning(msg)
  print(msg, file=sys.stderr, flush=True)


def load_backbone(name: str, path: str | os.PathLike | None) -> dict | None:
  """Variables of the `backbone` submodule of report 000's CelebAGenerator/CelebADiscriminator, or of
  report 002's NIMA (mobilenet_v2, mnasnet: torchvision ImageNet weights; mobilenet: random only).

  name: 'resnet18' or 'vgg16' ('conv' has no pretrained weights: None, and a path is an error).
  path: a torchvision state_dict file (.pth/.pt/.bin/.safetensors/.npz); None or '' gives None after a
  one-time warning that the backbone is random. Returns {'params': ..., 'batch_stats': ...} (resnet18)
  or {'params': ...} (vgg16) of jnp arrays, to put under params['backbone'] (and batch_stats['backbone']).
  """
  if name == 'conv':
    if path:
      raise UserError(f"The 'conv' backbone has no pretrained weights, but a weights file '{path}' was "
                      'given; remove it or choose the resnet18 or vgg16 backbone.')
    return None
  if name in _RANDOM_ONLY_BACKBONES and path:
    raise UserError(f"The '{name}' backbone has no importable ImageNet layout, but a weights file "
                    f"'{path}' was given; use {_BACKBONE_HINTS[name]}.")
  if name not in _BACKBONE_IMPORTERS and name not in _RANDOM_ONLY_BACKBONES:
    raise UserError(f"Unknown backbone '{name}'; use one of conv, {', '.join(_BACKBONE_IMPORTERS)}.")
  if not path:
    warn_random_backbone(name)
    return None
  sd = load_state_dict(path)
  try:
    variables = _BACKBONE_IMPORTERS[name](sd)
  except UserError as err:
    raise UserError(f"Cannot use '{path}' as {name} weights: {err}") from err
  return jax.tree.map(jnp.asarray, variables)


def with_backbone_weights(state, config):
  """STATE with G's and D's 'backbone' submodules loaded from model/discriminator.backbone_weights
  (torchvision ResNet18/VGG16 state_dicts); a backbone without a file stays random, said once."""
  changes = {}
  for section, params, stats in ((config.model, 'g_params', 'g_stats'),
                                 (config.discriminator, 'd_params', 'd_stats')):
    name = section.get('backbone', 'conv')
    if name == 'conv' and not section.get('backbone_weights', ''):
      continue
    loaded = load_backbone(name, section.get('backbone_weights', '') or None)
    if loaded is None:
      continue
    place = lambda tree, like: jax.tree.map(lambda a, b: jax.device_put(jnp.asarray(a, b.dtype),
                                                                        b.sharding), tree, like)
    old = getattr(state, params)
    changes[params] = {**old, 'backbone': place(loaded['params'], old['backbone'])}
    if 'batch_stats' in loaded:
      old_stats = getattr(state, stats)
      changes[stats] = {**old_stats, 'backbone': place(loaded['batch_stats'], old_stats['backbone'])}
  if 'g_params' in changes and state.ema_params is not None:
    changes['ema_params'] = jax.tree.map(jnp.copy, changes['g_params'])
  return state.replace(**changes)


# ---------------------------------------------------------------- NIMA (torchvision mobilenet_v2 / mnasnet1_0)

_NIMA_BACKBONE_PREFIXES = ('', 'backbone.')
# A key only each torchvision layout has (its last conv), to tell the backbone from a state_dict.
NIMA_SIGNATURES = {'mobilenet_v2': 'features.18.0.weight', 'mnasnet': 'layers.14.weight'}
_NIMA_HINTS = {
    'mobilenet_v2': "torchvision's mobilenet_v2 state_dict (e.g. mobilenet_v2-b0353104.pth), or an "
                    '.npz/.safetensors with the same keys',
    'mnasnet': "torchvision's mnasnet1_0 state_dict (e.g. mnasnet1.0_top1_73.512-f206786ef8.pth), or "
               'an .npz/.safetensors with the same keys',
}


def infer_backbone(sd: Mapping) -> str:
  """'mobilenet_v2' or 'mnasnet' from the keys of SD; UserError when neither layout is there."""
  for name, key in NIMA_SIGNATURES.items():
    if any(p + key in sd for p in _NIMA_BACKBONE_PREFIXES):
      return name
  raise UserError(f'Cannot tell the NIMA backbone from the keys ({_clip(list(sd), 4)}); '
                  f'give --backbone {" or ".join(models_nima.IMPORTABLE)}, or '
                  f"{_NIMA_HINTS['mnasnet']}.")


def _check_importable(backbone: str) -> None:
  if backbone not in models_nima.IMPORTABLE:
    raise UserError(f"The NIMA backbone '{backbone}' has no torchvision layout to import; use one of "
                    f"{', '.join(models_nima.IMPORTABLE)}, or a model directory.")


def _nima_convert(sd: Mapping, backbone: str, table: dict, namespace: tuple[str, ...], what: str) -> dict:
  try:
    return _convert(sd, table, namespace)
  except _Mismatch as err:
    raise UserError(f'The weights do not fit {what}: '
                    + _mismatch_message(err.problems, _NIMA_HINTS[backbone])) from None


def nima_backbone_params_from_state_dict(sd: Mapping[str, np.ndarray], backbone: str) -> dict:
  """torchvision mobilenet_v2 (`features.{i}...`) or mnasnet1_0 (`layers.{i}...`) keys, bare or under
  `backbone.` -> `models.nima.Backbone(arch=backbone)` variables {'params', 'batch_stats'} (numpy).

  Every key under the backbone's prefix must be used with its shape (`num_batches_tracked` and
  `classifier.*` are ignored); UserError naming the first mismatched key otherwise.
  """
  _check_importable(backbone)
  spec = models_nima.layer_specs(backbone)
  first = next(iter(models_nima.torch_table(backbone).values()))[0]
  prefix = _first_prefix(sd, _NIMA_BACKBONE_PREFIXES, first)
  table = models_nima.torch_table(backbone, prefix=prefix)
  return _nima_convert(sd, backbone, table, tuple(prefix + n for n in spec.namespace),
                  f'the {backbone} backbone')


def nima_params_from_state_dict(sd: Mapping[str, np.ndarray], backbone: str | None = None) -> dict:
  """A whole NIMA in torchvision layout (backbone keys + `classifier.1.weight` [10, C], `.bias`) ->
  `models.nima.NIMA(backbone)` variables (numpy; the head's weight transposed to a kernel [C, 10]).

  backbone: None infers it from the keys. Every key must be used; UserError naming the first
  mismatched one otherwise.
  """
  backbone = backbone or infer_backbone(sd)
  _check_importable(backbone)
  variables = _nima_convert(sd, backbone, models_nima.torch_table(backbone, head=True), ('',),
                       f'NIMA ({backbone})')
  head = variables['params']['head']
  head['kernel'] = np.ascontiguousarray(head['kernel'].T)
  return variables


# ---------------------------------------------------------------- released generators: layouts from keys


class Layout(NamedTuple):
  """What a state_dict's keys and shapes say: the config `model` section, the key table for it, the
  key prefixes the architecture owns (('',): every key) and value problems found on the way."""
  section: dict
  table: Table
  namespace: tuple[str, ...] = ('',)
  problems: tuple[str, ...] = ()


_RRDBNET_SCALES = {3: 4, 12: 2, 48: 1}  # conv_first in-channels -> scale (x2/x1 pixel-unshuffle first)


def _rrdbnet_layout(sd: Mapping) -> Layout:
  """BasicSR/Real-ESRGAN or ESRGAN-release RRDBNet: blocks counted, nf/gc/scale read off the shapes."""
  esrgan = any(k.startswith('RRDB_trunk.') for k in sd)
  num_blocks = _count_blocks(sd, 'RRDB_trunk' if esrgan else 'body')
  names = _rrdbnet_table(num_blocks, esrgan)
  nf = _out_channels(sd, [names[n] for n in ('conv_first', 'conv_body', 'conv_hr')], 64)
  c_in = _dim(sd, f"{names['conv_first']}.weight", 1, 3)
  gc = _out_channels(sd, [names['body_0/rdb1/conv1']], 32) if num_blocks else 32
  scale = _RRDBNET_SCALES.get(c_in, 4)
  table = {}
  _conv_rows(table, 'conv_first', names['conv_first'], 3 * (4 // scale) ** 2, nf)
  for i in range(num_blocks):
    for j in (1, 2, 3):
      for k in range(1, 6):
        path = f'body_{i}/rdb{j}/conv{k}'
        _conv_rows(table, path, names[path], nf + (k - 1) * gc, nf if k == 5 else gc)
  for name in ('conv_body', 'conv_up1', 'conv_up2', 'conv_hr'):
    _conv_rows(table, f'{name}/conv' if name.startswith('conv_up') else name, names[name], nf, nf)
  _conv_rows(table, 'conv_last', names['conv_last'], nf, 3)
  return Layout({'name': 'rrdbnet', 'num_blocks': num_blocks, 'num_features': nf,
                 'growth_channels': gc, 'scale': scale}, table)


def _srvgg_layout(sd: Mapping) -> Layout:
  """Real-ESRGAN SRVGGNetCompact with PReLU: `body.{i}`, convs at even i, PReLU slopes at odd i."""
  convs = [int(m.group(1)) for k in sd if (m := re.fullmatch(r'body\.(\d+)\.weight', k))]
  num_convs = max(0, (max(convs, default=34) - 2) // 2)
  last = 2 * num_convs + 2
  nf = _out_channels(sd, ['body.0', 'body.2'], 64)
  c_out = _dim(sd, f'body.{last}.weight', 0, 48)
  scale = round((c_out / 3) ** 0.5)
  scale = scale if 3 * scale * scale == c_out and scale >= 1 else 4
  table = {}
  for i in range(num_convs + 1):
    _conv_rows(table, f'body_{2 * i}', f'body.{2 * i}', 3 if i == 0 else nf, nf)
    table['params', f'body_{2 * i + 1}/negative_slope'] = (f'body.{2 * i + 1}.weight', (nf,))
  _conv_rows(table, f'body_{last}', f'body.{last}', nf, 3 * scale * scale)
  return Layout({'name': 'srvgg_compact', 'num_features': nf, 'num_convs': num_convs,
                 'scale': scale}, table)


def _msrresnet_layout(sd: Mapping) -> Layout:
  """BasicSR MSRResNet: x4 has upconv1 and upconv2 (4*nf each), x2/x3 one upconv1 of scale^2*nf."""
  nf = _out_channels(sd, ['conv_first', 'conv_hr'], 64)
  num_blocks = _count_blocks(sd, 'body')
  up = _dim(sd, 'upconv1.weight', 0, 0)
  scale = 4 if 'upconv2.weight' in sd else {4 * nf: 2, 9 * nf: 3}.get(up, 4)
  table = {}
  _conv_rows(table, 'conv_first', 'conv_first', 3, nf)
  for i in range(num_blocks):
    for k in (1, 2):
      _conv_rows(table, f'body_{i}/conv{k}', f'body.{i}.conv{k}', nf, nf)
  for j, factor in enumerate((2, 2) if scale == 4 else (scale,), 1):
    _conv_rows(table, f'upconv{j}', f'upconv{j}', nf, nf * factor * factor)
  _conv_rows(table, 'conv_hr', 'conv_hr', nf, nf)
  _conv_rows(table, 'conv_last', 'conv_last', nf, 3)
  return Layout({'name': 'msrresnet', 'num_blocks': num_blocks, 'num_features': nf, 'scale': scale},
                table)


# EDSR's two namings: BasicSR edsr_arch, and EDSR-PyTorch (head/body/tail Sequentials, MeanShift convs).
_EDSR_KEYS = {
    'basicsr': {'conv_first': 'conv_first', 'conv1': 'body.{i}.conv1', 'conv2': 'body.{i}.conv2',
                'conv_after_body': 'conv_after_body', 'upsample': 'upsample.{j}',
                'conv_last': 'conv_last'},
    'edsr_pytorch': {'conv_first': 'head.0', 'conv1': 'body.{i}.body.0', 'conv2': 'body.{i}.body.2',
                     'conv_after_body': 'body.{n}', 'upsample': 'tail.0.{j}', 'conv_last': 'tail.1'},
}
EDSR_LARGE_FEATURES = 256  # EDSR (large): 256 features, res_scale 0.1 in both repositories' configs


def _edsr_layout(sd: Mapping) -> Layout:
  """BasicSR or EDSR-PyTorch EDSR. res_scale is not stored: 0.1 for 256 features, else 1.0."""
  pt = 'head.0.weight' in sd or 'sub_mean.weight' in sd
  names = _EDSR_KEYS['edsr_pytorch' if pt else 'basicsr']
  num_blocks = max(0, _count_blocks(sd, 'body') - (1 if pt else 0))
  nf = _out_channels(sd, [names['conv_first'], names['conv_after_body'].format(n=num_blocks)], 64)
  up_re = re.escape(names['upsample']).replace(r'\{j\}', r'(\d+)') + r'\.weight'
  ups = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(up_re, k)))
  first_up = _dim(sd, names['upsample'].format(j=ups[0]) + '.weight', 0, 4 * nf) if ups else 4 * nf
  scale = 3 if first_up == 9 * nf else 2 ** len(ups) if ups else 4
  section = {'name': 'edsr', 'num_blocks': num_blocks, 'num_features': nf, 'scale': scale,
             'res_scale': 0.1 if nf == EDSR_LARGE_FEATURES else 1.0}
  table, problems = {}, ()
  if pt:
    for shift in ('sub_mean', 'add_mean'):
      table[None, f'{shift}/weight'] = (f'{shift}.weight', (3, 3, 1, 1))
      table[None, f'{shift}/bias'] = (f'{shift}.bias', (3,))
    img_range, problems = _edsr_mean_shift(sd)
    if img_range != 255.0:
      section['img_range'] = img_range
  _conv_rows(table, 'conv_first', names['conv_first'], 3, nf)
  for i in range(num_blocks):
    for k in (1, 2):
      _conv_rows(table, f'body_{i}/conv{k}', names[f'conv{k}'].format(i=i), nf, nf)
  _conv_rows(table, 'conv_after_body', names['conv_after_body'].format(n=num_blocks), nf, nf)
  for j, factor in enumerate((3,) if scale == 3 else (2,) * (scale.bit_length() - 1)):
    _conv_rows(table, f'upsample/conv_{j}', names['upsample'].format(j=2 * j), nf, nf * factor ** 2)
  _conv_rows(table, 'conv_last', names['conv_last'], nf, 3)
  return Layout(section, table, ('',), problems)


def _edsr_mean_shift(sd: Mapping) -> tuple[float, tuple[str, ...]]:
  """EDSR-PyTorch's rgb_range (255 or 1) from its constant MeanShift convs, and value problems.

  sub_mean must be `x - rgb_range * DIV2K mean` (identity weight, rgb_std 1) and add_mean its inverse.
  """
  mean = np.asarray(edsr.DIV2K_RGB_MEAN, np.float32)
  bias = sd.get('sub_mean.bias')
  img_range = 1.0 if bias is not None and bias.shape == (3,) and np.abs(bias).max() < 2 else 255.0
  problems = []
  for shift, sign in (('sub_mean', -1), ('add_mean', 1)):
    weight, bias = sd.get(f'{shift}.weight'), sd.get(f'{shift}.bias')
    if weight is None or bias is None or weight.shape != (3, 3, 1, 1) or bias.shape != (3,):
      continue  # the table reports it
    want = sign * img_range * mean
    if not np.allclose(np.asarray(weight).reshape(3, 3), np.eye(3), atol=1e-5):
      problems.append(f"'{shift}.weight' is not the identity (only rgb_std 1 is supported)")
    elif not np.allclose(bias, want, atol=1e-3 * img_range):
      problems.append(f"'{shift}.bias' is {np.round(bias, 3).tolist()}, want "
                      f'{np.round(want, 3).tolist()} (the DIV2K mean at rgb_range {img_range:g})')
  return img_range, tuple(problems)


def _vgg19_layout(sd: Mapping) -> Layout:
  """torchvision vgg19 `features.{i}` (bare or under vgg./vgg_net.): the 16 convs; classifier ignored."""
  prefix = _first_prefix(sd, _VGG_PREFIXES, 'features.0.weight')
  table = {}
  for name in vgg.VGG19_LAYERS:
    _conv_rows(table, name, f'{prefix}features.{vgg.VGG19_TORCH_INDEX[name]}',
               vgg.vgg19_in_channels(name), vgg.VGG19_CHANNELS[name])
  return Layout({'name': 'vgg19'}, table, (prefix + 'features.',))


def _backbone_layout(name: str, table_fn, namespace: tuple[str, ...]):
  def layout(sd: Mapping) -> Layout:
    table = table_fn()
    prefix = _first_prefix(sd, _BACKBONE_PREFIXES, next(iter(table.values()))[0])
    return Layout({'name': name}, _prefixed(table, prefix), tuple(prefix + n for n in namespace))
  return layout


def _generator(section: Mapping):
  """The generator `section` describes, built as training builds it (float32)."""
  return models.build_generator(ml_collections.ConfigDict(
      {'model': dict(section), 'train': {'precision': 'fp32'}}))


def _vgg19_module(section: Mapping):
  del section
  return vgg.VGG19Features(layers=(vgg.VGG19_LAYERS[-1],))


def _backbone_module(section: Mapping):
  return backbones.BACKBONES[section['name']]()


# Prefixes a whole NIMA's backbone keys may carry (bare torchvision, or a wrapper's submodule).
_NIMA_PREFIXES = ('', 'backbone.', 'base_model.')
_NIMA_HINT = ("a whole NIMA in torchvision layout: mobilenet_v2 (`features.*`) or mnasnet1_0 "
              "(`layers.*`) keys with the classifier replaced by Dropout + Linear(1280, 10) "
              "(`classifier.1.weight` [10, 1280], `classifier.1.bias`)")


def _nima_found(sd: Mapping) -> tuple[str | None, str]:
  """(backbone, key prefix) of the torchvision NIMA backbone in `sd`, or (None, '') if none is."""
  for backbone, key in NIMA_SIGNATURES.items():
    for prefix in _NIMA_PREFIXES:
      if prefix + key in sd:
        return backbone, prefix
  return None, ''


def _nima_head_key(sd: Mapping, prefix: str) -> str:
  """The head's weight key: `classifier.1.weight` under the backbone's prefix, else bare."""
  key = prefix + 'classifier.1.weight'
  return key if key in sd else 'classifier.1.weight'


def _nima_layout(sd: Mapping) -> Layout:
  """A whole NIMA (torchvision mobilenet_v2/mnasnet1_0 + 10-way `classifier.1`), bare or under a prefix;
  a backbone with an ImageNet (1000-way) or no classifier is a UserError saying how to use it."""
  backbone, prefix = _nima_found(sd)
  head = _nima_head_key(sd, prefix)
  rows = getattr(sd.get(head), 'shape', (0,))[0]
  if backbone is not None and (rows == 1000 or head not in sd):
    what = 'a 1000-way ImageNet classifier' if rows == 1000 else 'no classifier.1'
    raise UserError(f'these are torchvision {backbone} ImageNet backbone weights ({what}), not a '
                    f'trained NIMA; use them as the backbone of the nima experiment (--set '
                    f'model.backbone={backbone} --set model.backbone_weights=FILE), or convert a '
                    f'trained NIMA ({_NIMA_HINT}).')
  backbone = backbone or 'mnasnet'  # nothing NIMA-like (--arch nima): the table names the missing keys
  table = models_nima.torch_table(backbone, head=True, prefix=prefix)
  for leaf, key in (('kernel', head), ('bias', head.removesuffix('weight') + 'bias')):
    table['params', f'head/{leaf}'] = (key, table['params', f'head/{leaf}'][1])
  return Layout({'name': 'nima', 'backbone': backbone, 'dropout': models_nima.NIMA_DROPOUT}, table)


def _nima_finish(variables: dict) -> dict:
  """torch Linear weight [10, C] -> Dense kernel [C, 10] (`_convert` transposes only convs)."""
  head = variables['params']['head']
  head['kernel'] = np.ascontiguousarray(head['kernel'].T)
  return variables


def _nima_module(section: Mapping):
  return models_nima.NIMA(backbone=section['backbone'],
                          dropout=float(section.get('dropout', models_nima.NIMA_DROPOUT)))


def _has_any(*keys: str):
  return lambda sd: any(k in sd for k in keys)


class Arch(NamedTuple):
  """One importable architecture: whether a state_dict looks like it (`detect`), its layout inferred
  from keys and shapes, the Flax module a config section builds, and what file to give instead."""
  detect: Callable[[Mapping], bool]
  layout: Callable[[Mapping], Layout]
  module: Callable[[Mapping], Any]
  hint: str
  generator: bool = True
  finish: Callable[[dict], dict] | None = None  # a last step on the converted variables


# Detection runs in this order; the first match wins.
ARCHS = {
    'rrdbnet': Arch(
        lambda sd: any(k.startswith('RRDB_trunk.') or re.match(r'body\.\d+\.rdb\d\.', k) for k in sd),
        _rrdbnet_layout, _generator,
        'a BasicSR/Real-ESRGAN/ESRGAN RRDBNet state_dict (e.g. RealESRGAN_x4plus.pth, '
        'RealESRGAN_x2plus.pth, RRDB_ESRGAN_x4.pth)'),
    'srvgg_compact': Arch(
        lambda sd: 'body.0.weight' in sd and getattr(sd.get('body.1.weight'), 'ndim', 0) == 1,
        _srvgg_layout, _generator,
        'a Real-ESRGAN SRVGGNetCompact state_dict with PReLU (e.g. realesr-general-x4v3.pth, '
        'realesr-animevideov3.pth)'),
    'msrresnet': Arch(
        lambda sd: 'upconv1.weight' in sd and 'conv_hr.weight' in sd, _msrresnet_layout, _generator,
        'a BasicSR MSRResNet state_dict (e.g. 001_MSRResNet_x4_f64b16_DIV2K_1000k_B16G1_wandb.pth)'),
    'edsr': Arch(
        _has_any('conv_after_body.weight', 'head.0.weight', 'sub_mean.weight'), _edsr_layout,
        _generator, 'a BasicSR or EDSR-PyTorch EDSR state_dict (e.g. '
        'EDSR_Lx4_f256b32_DIV2K_official-76ee1c8f.pth, edsr_baseline_x2-1bc95232.pt)'),
    'nima': Arch(
        lambda sd: _nima_found(sd)[0] is not None, _nima_layout, _nima_module, _NIMA_HINT,
        generator=False, finish=_nima_finish),
    'vgg19': Arch(
        _has_any(*(p + 'features.34.weight' for p in _VGG_PREFIXES)), _vgg19_layout,
        _vgg19_module, _VGG_HINT, generator=False),
    'resnet18': Arch(
        _has_any(*(p + 'layer1.0.conv1.weight' for p in _BACKBONE_PREFIXES)),
        _backbone_layout('resnet18', _resnet18_table, ('conv1.', 'bn1.', 'layer')),
        _backbone_module, _BACKBONE_HINTS['resnet18'], generator=False),
    'vgg16': Arch(
        _has_any(*(p + 'features.28.weight' for p in _BACKBONE_PREFIXES)),
        _backbone_layout('vgg16', _vgg16_table, ('features.',)),
        _backbone_module, _BACKBONE_HINTS['vgg16'], generator=False),
}


def describe(section: Mapping) -> str:
  """'rrdbnet (num_blocks=23, num_features=64, growth_channels=32, scale=4)' for a model section."""
  sizes = ', '.join(f'{k}={v}' for k, v in section.items() if k != 'name')
  return f"{section['name']} ({sizes})" if sizes else section['name']


def infer_arch(sd: Mapping[str, np.ndarray]) -> str:
  """The ARCHS name whose key names `sd` has (the first that matches); UserError if none does."""
  for name, arch in ARCHS.items():
    if arch.detect(sd):
      return name
  raise UserError(f'Cannot tell the architecture from the keys ({_clip(list(sd), 4)}); name it '
                  f"(convert --arch NAME) as one of {', '.join(ARCHS)}.")


def import_weights(sd: Mapping[str, np.ndarray], arch: str | None = None) -> tuple[dict, dict]:
  """(model section, variables) for a released PyTorch state_dict, sizes inferred from its shapes.

  arch: an ARCHS name, or None to infer it from the key names (`infer_arch`). The model section is
  the config `model` section that builds the generator through `models.build_generator` (for
  vgg19/resnet18/vgg16 just {'name': ...}); variables are {'params': ...} (plus 'batch_stats' for
  resnet18 and nima) of numpy float32, nested as the Flax module's. Inferred:
    - rrdbnet: num_blocks, num_features, growth_channels, and scale from conv_first's in-channels
      (3: x4, 12: x2 and 48: x1, whose input is pixel-unshuffled); BasicSR and ESRGAN-release names.
    - srvgg_compact: num_features, num_convs, scale (PReLU activations).
    - msrresnet: num_blocks, num_features, scale (2, 3, 4).
    - edsr: num_blocks, num_features, scale (2, 3, 4, 8); BasicSR and EDSR-PyTorch names. res_scale is
      not in the weights: 0.1 when num_features is 256 (EDSR large, as both repositories configure it),
      else 1.0. EDSR-PyTorch's MeanShift convs must hold the DIV2K mean (img_range 1 if rgb_range was 1).
    - nima: backbone (mobilenet_v2 or mnasnet, keys bare or under backbone./base_model.), dropout 0.75
      (not stored): {'name': 'nima', 'backbone': B, 'dropout': 0.75}, as `nima.restore` reads it. A
      torchvision backbone with its 1000-way ImageNet classifier (or none) is a UserError saying to
      use it as the nima experiment's model.backbone_weights.
  Every key of a generator's file (for vgg19/resnet18/vgg16 every key under theirs, not classifier/fc)
  must be used with the right shape; `num_batches_tracked` is ignored. UserError otherwise, in one
  sentence naming the first mismatched key.
  """
  inferred = None
  if arch is None:
    arch = inferred = infer_arch(sd)
  if arch not in ARCHS:
    raise UserError(f"Unknown architecture '{arch}'; use one of {', '.join(ARCHS)}.")
  layout = ARCHS[arch].layout(sd)
  try:
    variables = _convert(sd, layout.table, layout.namespace, layout.problems)
  except _Mismatch as err:
    hint = ARCHS[arch].hint
    if inferred is None:
      looks_like = next((n for n, a in ARCHS.items() if n != arch and a.detect(sd)), None)
      hint += f'; these keys look like {looks_like} weights' if looks_like else ''
    raise UserError(f'The weights do not fit {describe(layout.section)}: '
                    + _mismatch_message(err.problems, hint)) from None
  if ARCHS[arch].finish is not None:
    variables = ARCHS[arch].finish(variables)
  return layout.section, variables


def load_weights(path: str | os.PathLike, arch: str | None = None) -> tuple[dict, dict, int]:
  """(model section, variables, number of tensors read) of a released weights file: a state_dict
  (.pth/.safetensors/.npz, `import_weights`) or an ncnn model (NAME.param + NAME.bin, its graph
  checked against the architecture layer by layer, then imported through the same key tables)."""
  if not ncnn.is_ncnn(path):
    sd = load_state_dict(path)
    return (*import_weights(sd, arch), len(sd))
  section, sd = ncnn.read(path, arch)
  try:
    imported, variables = import_weights(sd, section['name'])
  except UserError as err:
    raise UserError(f"'{path}': {err}") from None
  return {**imported, **section}, variables, len(sd)


# ---------------------------------------------------------------- model directories

MODEL_JSON = 'model.json'
VARIABLES_NPZ = 'variables.npz'
MODEL_DIR_FORMAT = 1
MODEL_DIR_KIND = 'enhance_jax.model'


def is_model_dir(path: str | os.PathLike) -> bool:
  """True for a directory holding a model.json (read it with `read_model_dir`)."""
  return os.path.isfile(os.path.join(os.fspath(path), MODEL_JSON))


def check_out_dir(out: str | os.PathLike, overwrite: bool = False) -> str:
  """OUT as an absolute path if a model directory may be written there, else UserError: OUT is a
  file, or a non-empty directory (allowed with `overwrite` only if it is a model directory)."""
  out = os.path.abspath(os.fspath(out))
  if os.path.exists(out) and not os.path.isdir(out):
    raise UserError(f"'{out}' exists and is not a directory; give a directory path for the model.")
  if os.path.isdir(out) and os.listdir(out):
    if not overwrite:
      raise UserError(f"'{out}' exists and is not empty; give another directory or allow "
                      'overwriting it (convert --overwrite).')
    if not is_model_dir(out):
      raise UserError(f"'{out}' is not empty and not a model directory, so it is not replaced even "
                      'when overwriting; give another directory.')
  return out


def write_model_dir(out: str | os.PathLike, model_section: Mapping, variables: Mapping,
                    meta: Mapping, overwrite: bool = False) -> None:
  """Writes OUT/model.json ({'format': 1, 'kind': 'enhance_jax.model', 'model': model_section,
  'meta': meta}) and OUT/variables.npz (flat 'params/a/b' keys), atomically.

  Both are written into a temporary sibling directory that then replaces OUT, so OUT is either the
  old content or the whole new model; missing parent folders are created (and removed again on
  failure). An existing non-empty OUT is refused (UserError) unless `overwrite`.
  """
  out = check_out_dir(out, overwrite)
  parent, created = os.path.dirname(out), None
  missing = parent
  while not os.path.exists(missing):  # the top-most folder this call creates, removed on failure
    created, missing = missing, os.path.dirname(missing)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(out)}.tmp-', dir=parent)
  trash = old = None
  try:
    doc = {'format': MODEL_DIR_FORMAT, 'kind': MODEL_DIR_KIND, 'model': dict(model_section),
           'meta': dict(meta)}
    with open(os.path.join(tmp, MODEL_JSON), 'w', encoding='utf-8') as f:
      json.dump(doc, f, indent=2)
      f.write('\n')
    with open(os.path.join(tmp, VARIABLES_NPZ), 'wb') as f:
      np.savez(f, **flatten_params(variables))
    if os.path.exists(out):  # moved aside, not deleted, until the new directory is in place
      trash = tempfile.mkdtemp(prefix=f'.{os.path.basename(out)}.old-', dir=parent)
      old = os.path.join(trash, 'model')
      os.replace(out, old)
    os.replace(tmp, out)
  except BaseException:
    if old is not None and os.path.exists(old) and not os.path.exists(out):
      os.replace(old, out)  # the old model back
      os.rmdir(trash)
    shutil.rmtree(tmp, ignore_errors=True)
    if created:
      shutil.rmtree(created, ignore_errors=True)
    raise
  if trash is not None:
    shutil.rmtree(trash, ignore_errors=True)


def read_model_dir(path: str | os.PathLike) -> tuple[dict, dict, dict]:
  """(model section, variables (nested numpy), meta) of a directory written by `write_model_dir`."""
  path = os.fspath(path)
  hint = 'give a directory written by python -m enhance_jax.convert'
  if not is_model_dir(path):
    raise UserError(f"'{path}' is not a model directory (no {MODEL_JSON}); {hint}.")
  try:
    with open(os.path.join(path, MODEL_JSON), encoding='utf-8') as f:
      doc = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as err:
    raise UserError(f"'{os.path.join(path, MODEL_JSON)}' is corrupt ({err}); convert the weights "
                    'again.') from err
  if (not isinstance(doc, dict) or doc.get('kind') != MODEL_DIR_KIND
      or not isinstance(doc.get('model'), dict) or 'name' not in doc['model']):
    raise UserError(f"'{os.path.join(path, MODEL_JSON)}' is not an enhance_jax model description; "
                    f'{hint}.')
  if doc.get('format') != MODEL_DIR_FORMAT:
    raise UserError(f"'{path}' has model format {doc.get('format')!r}, this version reads "
                    f'{MODEL_DIR_FORMAT}; convert the weights again with this version.')
  npz = os.path.join(path, VARIABLES_NPZ)
  if not os.path.isfile(npz):
    raise UserError(f"'{path}' has no {VARIABLES_NPZ}; convert the weights again.")
  return doc['model'], unflatten_params(_read_npz(npz)), doc.get('meta', {})
