"""HAT (Chen et al. 2023) state dicts: XPixelGroup/HAT's keys (spandrel's HAT).

Sizes are read off the shapes as spandrel 0.4.2 reads them: the window from relative_position_index_SA,
overlap_ratio from relative_position_index_OCA's side (the first 'nice' ratio giving it), depths per
RHAG, heads from the OCAB bias tables, compress_ratio and squeeze_factor from the CAB convs' widths,
mlp_ratio from fc1, num_feat from conv_last, the scale from the pixel-shuffle convs, resi_connection
'1conv' when conv_after_body is stored, else 'identity'. conv_scale (0.01) and img_range (1) are not
stored. The two index buffers are checked for shape only: the model computes both.
"""

import math
from collections.abc import Mapping

from enhance_jax.io.weights import converter
from enhance_jax.io.weights import swinir
from enhance_jax.io.weights.converter import Layout
from enhance_jax.models.swinir import pixel_shuffle_factors

HINT = ('a HAT state_dict (XPixelGroup/HAT releases, e.g. HAT_SRx4_ImageNet-pretrain.pth, HAT-S_SRx4.pth, '
        'HAT-L_SRx4_ImageNet-pretrain.pth, Real_HAT_GAN_SRx4.pth)')

GROUP = 'layers.0.residual_group.'
_REQUIRED = ('relative_position_index_SA', 'conv_first.weight', GROUP + 'blocks.0.norm1.weight',
             GROUP + 'blocks.0.conv_block.cab.0.weight', GROUP + 'overlap_attn.qkv.weight',
             GROUP + 'overlap_attn.relative_position_bias_table', 'conv_last.weight')
_NICE_RATIOS = (0, 1, 0.5, 0.25, 0.75, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9)


def detect(sd: Mapping) -> bool:
  """Whether SD's keys are HAT's (a CAB in the blocks, an OCAB per group; not ATD's or DRCT's)."""
  return all(k in sd for k in _REQUIRED)


def overlap_ratio(window: int, overlap: int) -> float:
  """A ratio r with int(window + window * r) == overlap: a round one if any does, as spandrel picks."""
  for ratio in _NICE_RATIOS:
    if int(window + window * ratio) == overlap:
      return ratio
  return (overlap - window) / window + 0.01


def ratio_of(a: int, c: int) -> float:
  """A divisor b with a // b == c (CAB's compress_ratio, squeeze_factor): a / c when exact, else the
  nearest integer that gives c, else a / c itself (spandrel's _inv_int_div)."""
  if c <= 0:
    return 1
  b = a / c
  if b.is_integer():
    return int(b)
  for candidate in (math.ceil(b), math.floor(b)):
    if candidate and a // candidate == c:
      return candidate
  return b


def layout(sd: Mapping) -> Layout:
  """HAT's sizes read off SD's shapes, and its key table."""
  dim = converter.out_channels(sd, ['conv_first'], 180)
  num_feat = converter.dim(sd, 'conv_last.weight', 1, 64)
  scale = 1
  for j in range(0, 10, 2):
    weight = sd.get(f'upsample.{j}.weight')
    if weight is None or weight.ndim != 4:
      break
    scale *= math.isqrt(weight.shape[0] // weight.shape[1])
  window = math.isqrt(converter.dim(sd, 'relative_position_index_SA', 0, 256, ndim=2))
  size = math.isqrt(converter.dim(sd, 'relative_position_index_OCA', 1, (window * 3 // 2) ** 2, ndim=2))
  num_layers = converter.count_blocks(sd, 'layers')
  depths = tuple(converter.count_blocks(sd, f'layers.{i}.residual_group.blocks') for i in range(num_layers))
  tables = [f'layers.{i}.residual_group.overlap_attn.relative_position_bias_table' for i in range(num_layers)]
  heads = tuple(converter.dim(sd, key, 1, 6, ndim=2) for key in tables)
  compress = converter.out_channels(sd, [GROUP + 'blocks.0.conv_block.cab.0'], dim // 3)
  squeeze = converter.out_channels(sd, [GROUP + 'blocks.0.conv_block.cab.3.attention.1'], dim // 30)
  hidden = converter.dim(sd, GROUP + 'blocks.0.mlp.fc1.weight', 0, 2 * dim, ndim=2)
  resi_connection = '1conv' if 'conv_after_body.weight' in sd else 'identity'
  section = {'name': 'hat', 'embed_dim': dim, 'depths': depths, 'num_heads': heads, 'window_size': window,
             'compress_ratio': ratio_of(dim, compress), 'squeeze_factor': ratio_of(dim, squeeze),
             'overlap_ratio': overlap_ratio(window, size), 'mlp_ratio': hidden / dim,
             'resi_connection': resi_connection, 'num_feat': num_feat, 'scale': scale}
  hidden = int(dim * section['mlp_ratio'])
  compress, squeeze = int(dim // section['compress_ratio']), int(dim // section['squeeze_factor'])
  size = int(window * section['overlap_ratio']) + window
  table = {}
  converter.conv_rows(table, 'conv_first', 'conv_first', 3, dim)
  table[None, 'relative_position_index_SA'] = ('relative_position_index_SA', (window ** 2, window ** 2))
  table[None, 'relative_position_index_OCA'] = ('relative_position_index_OCA', (window ** 2, size ** 2))
  converter.norm_rows(table, 'patch_embed/norm', 'patch_embed.norm', dim)
  for i, (depth, n) in enumerate(zip(depths, heads)):
    path, key = f'layers_{i}/residual_group', f'layers.{i}.residual_group'
    for j in range(depth):
      swinir.block_rows(table, f'{path}/blocks_{j}', f'{key}.blocks.{j}', dim, n, window, hidden)
      cab, cab_key = f'{path}/blocks_{j}/conv_block', f'{key}.blocks.{j}.conv_block.cab'
      converter.conv_rows(table, f'{cab}/cab_0', f'{cab_key}.0', dim, compress)
      converter.conv_rows(table, f'{cab}/cab_2', f'{cab_key}.2', compress, dim)
      converter.conv_rows(table, f'{cab}/cab_3/attention_1', f'{cab_key}.3.attention.1', dim, squeeze, k=1)
      converter.conv_rows(table, f'{cab}/cab_3/attention_3', f'{cab_key}.3.attention.3', squeeze, dim, k=1)
    ocab, ocab_key = f'{path}/overlap_attn', f'{key}.overlap_attn'
    converter.norm_rows(table, f'{ocab}/norm1', f'{ocab_key}.norm1', dim)
    converter.linear_rows(table, f'{ocab}/qkv', f'{ocab_key}.qkv', dim, 3 * dim)
    table['params', f'{ocab}/relative_position_bias_table'] = (
        f'{ocab_key}.relative_position_bias_table', ((window + size - 1) ** 2, n))
    converter.linear_rows(table, f'{ocab}/proj', f'{ocab_key}.proj', dim, dim)
    converter.norm_rows(table, f'{ocab}/norm2', f'{ocab_key}.norm2', dim)
    converter.linear_rows(table, f'{ocab}/mlp/fc1', f'{ocab_key}.mlp.fc1', dim, hidden)
    converter.linear_rows(table, f'{ocab}/mlp/fc2', f'{ocab_key}.mlp.fc2', hidden, dim)
    if resi_connection == '1conv':
      converter.conv_rows(table, f'layers_{i}/conv', f'layers.{i}.conv', dim, dim)
  converter.norm_rows(table, 'norm', 'norm', dim)
  if resi_connection == '1conv':
    converter.conv_rows(table, 'conv_after_body', 'conv_after_body', dim, dim)
  converter.conv_rows(table, 'conv_before_upsample', 'conv_before_upsample.0', dim, num_feat)
  for j, f in enumerate(pixel_shuffle_factors(scale)):
    converter.conv_rows(table, f'upsample/conv_{j}', f'upsample.{2 * j}', num_feat, f * f * num_feat)
  converter.conv_rows(table, 'conv_last', 'conv_last', num_feat, 3)
  return Layout(section, table)
