"""DAT (Chen et al. 2023) state dicts: zhengchen1999/DAT's and spandrel's keys -> models.dat.DAT.

Sizes are read off the shapes as spandrel's DAT loader reads them: embed_dim from conv_first, the
groups and blocks counted, num_heads from a group's second block's `temperature` (or twice a spatial
branch's heads), expansion_factor from ffn.fc1, qkv_bias, the split from the last row of the
`rpe_biases` buffer, img_size from a stored shift mask (any block's; spandrel reads only
layers.0.blocks.2's), upsampler, resi_connection and scale from which keys exist. Every key maps to the
Flax path written with '_' before an index and '/' elsewhere (`layers_0/blocks_2/attn/attns_1/...`).
The index buffers are checked against the constants the model computes; the masks by shape.
"""

import math
import re
from collections.abc import Mapping

import numpy as np

from enhance_jax.io.weights import converter
from enhance_jax.io.weights.converter import Layout
from enhance_jax.models import dat

HINT = ('a DAT state_dict (zhengchen1999/DAT releases: DAT_x2.pth ... DAT_x4.pth, DAT_S_x4.pth, '
        'DAT_2_x4.pth, DAT_light_x4.pth)')
_FFN_GATE = re.compile(r'layers\.\d+\.blocks\.\d+\.ffn\.sg\.')
_MASK = re.compile(r'layers\.\d+\.blocks\.\d+\.attn\.attn_mask_0')


def detect(sd: Mapping) -> bool:
  """DAT's keys: `before_RG.1` and SGFN gates under `layers.i.blocks.j.ffn.sg` (RGT has `mlp.sg`)."""
  return 'before_RG.1.weight' in sd and any(_FFN_GATE.match(k) for k in sd)


def _path(key: str) -> str:
  """'layers.0.blocks.2.attn.attns.1.pos.pos3.2' -> 'layers_0/blocks_2/attn/attns_1/pos/pos3_2'."""
  return re.sub(r'\.(\d+)', r'_\1', key).replace('.', '/')


def _conv(table, key, c_in, c_out, k=3):
  converter.conv_rows(table, _path(key), key, c_in, c_out, k)


def _linear(table, key, c_in, c_out, bias=True):
  converter.linear_rows(table, _path(key), key, c_in, c_out, bias)


def _norm(table, key, c):
  converter.norm_rows(table, _path(key), key, c)


def _batch_norm(table, key, c):
  _norm(table, key, c)
  table['batch_stats', f'{_path(key)}/mean'] = (f'{key}.running_mean', (c,))
  table['batch_stats', f'{_path(key)}/var'] = (f'{key}.running_var', (c,))


def _residual_conv(table, key, kind, c):
  if kind == '1conv':
    _conv(table, key, c, c)
    return
  _conv(table, f'{key}.0', c, c // 4)
  _conv(table, f'{key}.2', c // 4, c // 4, k=1)
  _conv(table, f'{key}.4', c // 4, c)


def _sizes(sd: Mapping) -> dict:
  """The model section, as spandrel's DAT loader infers it (its defaults where a key is missing)."""
  embed = converter.out_channels(sd, ['conv_first'], 180)
  depths = [converter.count_blocks(sd, f'layers.{i}.blocks')
            for i in range(converter.count_blocks(sd, 'layers'))]
  heads = [converter.dim(sd, f'layers.{i}.blocks.1.attn.temperature', 0, 2, ndim=3) if d >= 2 else
           2 * converter.dim(sd, f'layers.{i}.blocks.0.attn.attns.0.pos.pos3.2.weight', 0, 1, ndim=2)
           for i, d in enumerate(depths)]
  upsampler = 'pixelshuffle' if 'conv_last.weight' in sd else 'pixelshuffledirect'
  scale = 1
  if upsampler == 'pixelshuffle':
    for i in range(0, 10, 2):
      if (weight := sd.get(f'upsample.{i}.weight')) is None or weight.ndim != 4:
        break
      scale *= math.isqrt(weight.shape[0] // weight.shape[1])
  else:
    scale = math.isqrt(converter.dim(sd, 'upsample.0.weight', 0, 12) // 3)
  hidden = converter.dim(sd, 'layers.0.blocks.0.ffn.fc1.weight', 0, 4 * embed, ndim=2)
  split = (2, 4)
  rpe = sd.get('layers.0.blocks.0.attn.attns.0.rpe_biases')
  if rpe is not None and rpe.ndim == 2 and rpe.shape[1] == 2 and len(rpe) and np.asarray(rpe)[-1].min() >= 0:
    split = tuple(int(v) + 1 for v in np.asarray(rpe)[-1])  # the last offset: (hs - 1, ws - 1)
  img_size = 64
  masks = [k for k in sd if _MASK.fullmatch(k)]
  mask = sd.get('layers.0.blocks.2.attn.attn_mask_0', sd[masks[0]] if masks else None)
  if mask is not None and mask.ndim == 3:
    img_size = math.isqrt(mask.shape[0] * mask.shape[1])
  return {'name': 'dat', 'embed_dim': embed, 'depths': tuple(depths), 'num_heads': tuple(heads),
          'split_size': split, 'expansion_factor': hidden / embed,
          'qkv_bias': 'layers.0.blocks.0.attn.qkv.bias' in sd,
          'resi_connection': '1conv' if 'conv_after_body.weight' in sd else '3conv',
          'upsampler': upsampler, 'img_size': img_size, 'scale': scale}


def _constant_rows(table, sd, problems, key, want):
  """A buffer the model computes as WANT: a row checking its shape, and a problem if its value differs."""
  table[None, _path(key)] = (key, want.shape)
  value = sd.get(key)
  if value is not None and value.shape == want.shape and not np.array_equal(np.asarray(value), want):
    problems.append(f"'{key}' is not the constant the reference computes for this window")


def _spatial_rows(table, sd, problems, key, c, heads, split, img_size, shifted):
  """The two window branches' dynamic position biases and index buffers, and the stored masks."""
  pos_dim = c // 2 // 4 // 4
  for j, (hs, ws) in enumerate((split, split[::-1])):
    branch = f'{key}.attns.{j}'
    _constant_rows(table, sd, problems, f'{branch}.rpe_biases', dat.relative_coordinates(hs, ws))
    _constant_rows(table, sd, problems, f'{branch}.relative_position_index',
                   dat.relative_position_index(hs, ws))
    _linear(table, f'{branch}.pos.pos_proj', 2, pos_dim)
    for i, width in ((1, pos_dim), (2, pos_dim), (3, heads // 2)):
      _norm(table, f'{branch}.pos.pos{i}.0', pos_dim)
      _linear(table, f'{branch}.pos.pos{i}.2', pos_dim, width)
  if shifted:  # [windows of an img_size square, N, N]
    n, windows = split[0] * split[1], (img_size // split[0]) * (img_size // split[1])
    for j in (0, 1):
      table[None, _path(f'{key}.attn_mask_{j}')] = (f'{key}.attn_mask_{j}', (windows, n, n))


def _block_rows(table, sd, problems, key, section, rg_idx, b_idx):
  """One DATB: norms, its attention (spatial for even b_idx, channel for odd), AIM and SGFN."""
  c, heads = section['embed_dim'], section['num_heads'][rg_idx]
  hidden = int(c * section['expansion_factor'])
  _norm(table, f'{key}.norm1', c)
  attn = f'{key}.attn'
  if b_idx % 2 == 1:
    table['params', _path(f'{attn}.temperature')] = (f'{attn}.temperature', (heads, 1, 1))
  _linear(table, f'{attn}.qkv', c, 3 * c, section['qkv_bias'])
  _linear(table, f'{attn}.proj', c, c)
  if b_idx % 2 == 0:
    _spatial_rows(table, sd, problems, attn, c, heads, section['split_size'], section['img_size'],
                  dat.is_shifted(rg_idx, b_idx))
  _conv(table, f'{attn}.dwconv.0', 1, c)
  _batch_norm(table, f'{attn}.dwconv.1', c)
  _conv(table, f'{attn}.channel_interaction.1', c, c // 8, k=1)
  _batch_norm(table, f'{attn}.channel_interaction.2', c // 8)
  _conv(table, f'{attn}.channel_interaction.4', c // 8, c, k=1)
  _conv(table, f'{attn}.spatial_interaction.0', c, c // 16, k=1)
  _batch_norm(table, f'{attn}.spatial_interaction.1', c // 16)
  _conv(table, f'{attn}.spatial_interaction.3', c // 16, 1, k=1)
  _norm(table, f'{key}.norm2', c)
  _linear(table, f'{key}.ffn.fc1', c, hidden)
  _norm(table, f'{key}.ffn.sg.norm', hidden // 2)
  _conv(table, f'{key}.ffn.sg.conv', 1, hidden // 2)
  _linear(table, f'{key}.ffn.fc2', hidden // 2, c)


def layout(sd: Mapping) -> Layout:
  """DAT's sizes read off SD's shapes, and its key table."""
  section = _sizes(sd)
  c, table, problems = section['embed_dim'], {}, []
  _conv(table, 'conv_first', 3, c)
  _norm(table, 'before_RG.1', c)
  for i, depth in enumerate(section['depths']):
    for b in range(depth):
      _block_rows(table, sd, problems, f'layers.{i}.blocks.{b}', section, i, b)
    _residual_conv(table, f'layers.{i}.conv', section['resi_connection'], c)
  _norm(table, 'norm', c)
  _residual_conv(table, 'conv_after_body', section['resi_connection'], c)
  scale = section['scale']
  if section['upsampler'] == 'pixelshuffledirect':
    _conv(table, 'upsample.0', c, 3 * scale ** 2)
  else:
    _conv(table, 'conv_before_upsample.0', c, dat.NUM_FEAT)
    factors = (3,) if scale == 3 else (2,) * (scale.bit_length() - 1)
    for j, f in enumerate(factors):
      _conv(table, f'upsample.{2 * j}', dat.NUM_FEAT, dat.NUM_FEAT * f * f)
    _conv(table, 'conv_last', dat.NUM_FEAT, 3)
  return Layout(section, table, ('',), tuple(problems))
