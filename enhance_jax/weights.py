"""Import pretrained weights (PyTorch `.pth`/`.pt`, `.safetensors`, `.npz`) into Flax params.

Layers: `load_state_dict(path)` reads any supported file into a flat `{key: np.ndarray}`; one
`<model>_params_from_state_dict(sd, ...)` per architecture maps those keys to the Flax module's nested
params (torch conv weights [out, in, kh, kw] become kernels [kh, kw, in, out]); `load_<model>` ties both
together for a config key. Importers so far:
  - torchvision VGG19 `features` (`features.{i}`, also under `vgg.`/`vgg_net.`) -> `models.vgg.VGG19Features`.
  - BasicSR / Real-ESRGAN RRDBNet (`conv_first`, `body.{i}.rdb{j}.conv{k}`, `conv_body`, `conv_up1`,
    `conv_up2`, `conv_hr`, `conv_last`) and the ESRGAN release names (`RRDB_trunk.{i}.RDB{j}.conv{k}`,
    `trunk_conv`, `upconv1`, `upconv2`, `HRconv`) -> RRDBNet (`body_{i}/rdb{j}/conv{k}`).
  - torchvision ResNet18 and VGG16 (`conv1`, `layer{i}.{j}...`, `features.{i}`) -> the `backbone`
    submodule of report 000's CelebA generator and discriminator (`load_backbone`).
To add one (EDSR, MSRResNet, ...): write a `{flax path: torch key}` table and the expected kernel shapes,
convert each key with `_torch_conv`, and let `_check_convs` report missing or mis-shaped keys as one
UserError (see `rrdbnet_params_from_state_dict`).
`save_params_npz`/`load_params_npz` round-trip any Flax params as flat 'a/b/c' keys.
"""

import functools
import logging
import os
import pickle
import re
import sys
import zipfile
from collections.abc import Mapping, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from enhance_jax.errors import UserError
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
                   f'{str(err).splitlines()[0][:120]}); download or export it again.')


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
  """Maps BasicSR (`body.{i}.rdb{j}...`) or ESRGAN (`RRDB_trunk.{i}.RDB{j}...`) keys to RRDBNet params.

  Returns numpy arrays nested as conv_first, body_{i}/rdb{j}/conv{k}, conv_body, conv_up1/2, conv_hr,
  conv_last.
  """
  esrgan = any(k.startswith('RRDB_trunk.') for k in sd)
  table = _rrdbnet_table(num_blocks, esrgan)
  found = {name: _torch_conv(sd, key) for name, key in table.items()}
  stored = _count_blocks(sd, 'RRDB_trunk' if esrgan else 'body')
  if stored and stored != num_blocks:
    raise UserError(f'The RRDBNet weights have {stored} blocks but the model has {num_blocks}; '
                    f'set model.num_blocks={stored}.')
  _check_convs(found, _rrdbnet_shapes(found, num_blocks), table,
               'a BasicSR/ESRGAN RRDBNet state_dict (e.g. RRDB_ESRGAN_x4.pth, '
               f'RealESRGAN_x4plus.pth) with {num_blocks} blocks')
  path = {'conv_up1': 'conv_up1/conv', 'conv_up2': 'conv_up2/conv'}  # convs inside UpsampleBlock
  return unflatten_params({f'{path.get(name, name)}/{p}': v
                           for name, conv in found.items() for p, v in conv.items()})


def _rrdbnet_table(num_blocks: int, esrgan: bool) -> dict[str, str]:
  """{Flax path 'body_0/rdb1/conv1': torch key} for either naming."""
  names = ('conv_first', 'conv_body', 'conv_up1', 'conv_up2', 'conv_hr', 'conv_last')
  torch_names = (('conv_first', 'trunk_conv', 'upconv1', 'upconv2', 'HRconv', 'conv_last')
                 if esrgan else names)
  body = 'RRDB_trunk.{i}.RDB{j}.conv{k}' if esrgan else 'body.{i}.rdb{j}.conv{k}'
  return {**dict(zip(names, torch_names)),
          **{f'body_{i}/rdb{j}/conv{k}': body.format(i=i, j=j, k=k)
             for i in range(num_blocks) for j in (1, 2, 3) for k in range(1, 6)}}


def _rrdbnet_shapes(found: Mapping, num_blocks: int) -> dict[str, tuple[int, ...]]:
  """Expected Flax kernel shapes, with nf/gc/in/out channels read off conv_first, rdb conv1, conv_last."""
  def dims(name, default):
    conv = found.get(name)
    return conv['kernel'].shape if conv is not None and conv['kernel'].ndim == 4 else default
  _, _, c_in, nf = dims('conv_first', (3, 3, 3, 64))
  gc = dims('body_0/rdb1/conv1', (3, 3, nf, 32))[-1]
  c_out = dims('conv_last', (3, 3, nf, 3))[-1]
  shapes = {'conv_first': (3, 3, c_in, nf)}
  for i in range(num_blocks):
    for j in (1, 2, 3):
      for k in range(1, 6):
        shapes[f'body_{i}/rdb{j}/conv{k}'] = (3, 3, nf + (k - 1) * gc, nf if k == 5 else gc)
  shapes.update({n: (3, 3, nf, nf) for n in ('conv_body', 'conv_up1', 'conv_up2', 'conv_hr')})
  shapes['conv_last'] = (3, 3, nf, c_out)
  return shapes


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
}


def _resnet18_table() -> dict[tuple[str, str], tuple[str, tuple[int, ...]]]:
  """{(collection, Flax path): (torch key, torch shape)} for ResNet18Features, in module order."""
  from enhance_jax.models import backbones  # pylint: disable=g-import-not-at-top
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
  from enhance_jax.models import backbones  # pylint: disable=g-import-not-at-top
  table = {}
  for index, c_in, c_out in backbones.vgg16_conv_indices():
    table['params', f'features_{index}/kernel'] = (f'features.{index}.weight', (c_out, c_in, 3, 3))
    table['params', f'features_{index}/bias'] = (f'features.{index}.bias', (c_out,))
  return table


def _backbone_variables(sd: Mapping[str, np.ndarray], name: str, table: Mapping,
                        namespace: tuple[str, ...]) -> dict:
  """Converts `sd` by `table`; raises UserError naming the first missing, mis-shaped or unexpected key.

  Keys outside the backbone (`fc.*`, `classifier.*`) and `num_batches_tracked` are ignored; a key under
  the backbone's `namespace` that the table does not know (another depth's blocks, a BatchNorm VGG) is
  unexpected.
  """
  first = next(iter(table.values()))[0]
  prefix = next((p for p in _BACKBONE_PREFIXES if p + first in sd), '')
  problems, flat = [], {}
  for (collection, path), (key, shape) in table.items():
    value = sd.get(prefix + key)
    if value is None:
      problems.append(f"missing '{prefix + key}'")
    elif tuple(value.shape) != shape:
      problems.append(f"'{prefix + key}' has shape {tuple(value.shape)}, want {shape}")
    else:
      value = np.asarray(value, np.float32)
      flat[f'{collection}/{path}'] = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value
  known = {prefix + key for key, _ in table.values()}
  problems += [f"unexpected '{k}'" for k in sd
               if k.startswith(tuple(prefix + n for n in namespace)) and k not in known
               and not k.endswith('num_batches_tracked')]
  if problems:
    raise UserError(f'the first mismatched key: {problems[0]}'
                    + (f" (also {_clip(problems[1:], 4)})" if len(problems) > 1 else '')
                    + f'; give {_BACKBONE_HINTS[name]}.')
  return unflatten_params(flat)


def resnet18_params_from_state_dict(sd: Mapping[str, np.ndarray]) -> dict:
  """torchvision resnet18 keys (`conv1`, `bn1`, `layer{1-4}.{0,1}.{conv,bn}{1,2}`, `.downsample.{0,1}`,
  bare or under `backbone.`) -> ResNet18Features variables {'params': ..., 'batch_stats': ...} (numpy).
  `fc.*` and `num_batches_tracked` are ignored."""
  return _backbone_variables(sd, 'resnet18', _resnet18_table(), ('conv1.', 'bn1.', 'layer'))


def vgg16_params_from_state_dict(sd: Mapping[str, np.ndarray]) -> dict:
  """torchvision vgg16 keys (`features.{i}` for the 13 convs, bare or under `backbone.`) ->
  VGG16Features variables {'params': ...} (numpy). `classifier.*` is ignored."""
  return _backbone_variables(sd, 'vgg16', _vgg16_table(), ('features.',))


_BACKBONE_IMPORTERS = {'resnet18': resnet18_params_from_state_dict, 'vgg16': vgg16_params_from_state_dict}


@functools.cache
def warn_random_backbone(name: str) -> None:
  """Says once per process and backbone that it starts from random, not ImageNet, weights."""
  msg = (f'WARNING: the {name} backbone uses RANDOM weights, not ImageNet-pretrained ones; give '
         f'{_BACKBONE_HINTS[name]} to start from them.')
  logging.warning(msg)
  print(msg, file=sys.stderr, flush=True)


def load_backbone(name: str, path: str | os.PathLike | None) -> dict | None:
  """Variables of the `backbone` submodule of report 000's CelebAGenerator/CelebADiscriminator.

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
  if name not in _BACKBONE_IMPORTERS:
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
