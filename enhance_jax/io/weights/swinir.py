"""SwinIR (Liang et al. 2021) state dicts: JingyunLiang/SwinIR's and KAIR's keys (spandrel's SwinIR).

Sizes are read off the shapes as spandrel 0.4.2 reads them: the upsampler from which head convs exist
(conv_before_upsample + conv_up1: 'nearest+conv'; conv_before_upsample: 'pixelshuffle'; upsample.0
alone: 'pixelshuffledirect'; none: '' at scale 1), the window from the relative position index, img_size
from the first shifted block's attn_mask, depths and heads per RSTB, '1conv'/'3conv' from
conv_after_body, img_range 255 for window 7 (the JPEG models). The relative_position_index and
attn_mask buffers are checked for shape only: the model computes both.
"""

import math
from collections.abc import Mapping

from enhance_jax.io.weights import converter
from enhance_jax.io.weights.converter import Layout
from enhance_jax.models.swinir import pixel_shuffle_factors

HINT = ('a SwinIR state_dict (JingyunLiang/SwinIR releases, e.g. 001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth, '
        '002_lightweightSR_DIV2K_s64w8_SwinIR-S_x4.pth, 003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN.pth, '
        '003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth)')

BLOCK = 'layers.0.residual_group.blocks.0.'
_REQUIRED = (BLOCK + 'norm1.weight', BLOCK + 'mlp.fc1.bias', BLOCK + 'attn.relative_position_index')
# Swin2SR (patch_embed.proj, scaled cosine attention), HAT and the like share SwinIR's block names.
_OTHERS = ('patch_embed.proj.weight', 'relative_position_index_SA', BLOCK + 'attn.logit_scale',
           BLOCK + 'attn.cpb_mlp.0.weight', BLOCK + 'conv_block.cab.0.weight')


def detect(sd: Mapping) -> bool:
  """Whether SD's keys are SwinIR's (classical, lightweight, real-world, denoising/JPEG)."""
  return (all(k in sd for k in _REQUIRED) and ('conv_first.weight' in sd or 'conv_first.1.weight' in sd)
          and not any(k in sd for k in _OTHERS))


def _upsampler(sd: Mapping) -> str:
  if 'conv_before_upsample.0.weight' in sd:
    return 'nearest+conv' if 'conv_up1.weight' in sd else 'pixelshuffle'
  return 'pixelshuffledirect' if 'upsample.0.weight' in sd else ''


def _scale(sd: Mapping, upsampler: str) -> int:
  if upsampler == 'nearest+conv':
    return 2 ** sum(1 for k in sd if k.startswith('conv_up') and k.endswith('.weight'))
  if upsampler == 'pixelshuffle':
    scale = 1
    for j in range(0, 10, 2):
      weight = sd.get(f'upsample.{j}.weight')
      if weight is None or weight.ndim != 4:
        break
      scale *= math.isqrt(weight.shape[0] // weight.shape[1])
    return scale
  if upsampler == 'pixelshuffledirect':
    return math.isqrt(converter.dim(sd, 'upsample.0.bias', 0, 48, ndim=1) // 3)
  return 1


def _residual_rows(table, path: str, key: str, resi_connection: str, dim: int) -> None:
  """The conv before a residual: one 3x3 ('1conv') or 3x3/1x1/3x3 through dim/4 ('3conv')."""
  if resi_connection == '1conv':
    converter.conv_rows(table, path, key, dim, dim)
    return
  converter.conv_rows(table, f'{path}/conv_0', f'{key}.0', dim, dim // 4)
  converter.conv_rows(table, f'{path}/conv_2', f'{key}.2', dim // 4, dim // 4, k=1)
  converter.conv_rows(table, f'{path}/conv_4', f'{key}.4', dim // 4, dim)


def block_rows(table, path: str, key: str, dim: int, heads: int, window: int, hidden: int) -> None:
  """A Swin Transformer block's norms, window attention (bias table, qkv, proj) and Mlp."""
  converter.norm_rows(table, f'{path}/norm1', f'{key}.norm1', dim)
  table['params', f'{path}/attn/relative_position_bias_table'] = (
      f'{key}.attn.relative_position_bias_table', ((2 * window - 1) ** 2, heads))
  converter.linear_rows(table, f'{path}/attn/qkv', f'{key}.attn.qkv', dim, 3 * dim)
  converter.linear_rows(table, f'{path}/attn/proj', f'{key}.attn.proj', dim, dim)
  converter.norm_rows(table, f'{path}/norm2', f'{key}.norm2', dim)
  converter.linear_rows(table, f'{path}/mlp/fc1', f'{key}.mlp.fc1', dim, hidden)
  converter.linear_rows(table, f'{path}/mlp/fc2', f'{key}.mlp.fc2', hidden, dim)


def layout(sd: Mapping) -> Layout:
  """SwinIR's sizes read off SD's shapes, and its key table."""
  upsampler = _upsampler(sd)
  scale = _scale(sd, upsampler)
  dim = converter.out_channels(sd, ['conv_first'], 180)
  hidden = converter.dim(sd, BLOCK + 'mlp.fc1.bias', 0, 2 * dim, ndim=1)
  window = math.isqrt(converter.dim(sd, BLOCK + 'attn.relative_position_index', 0, 64, ndim=2))
  mask = sd.get('layers.0.residual_group.blocks.1.attn_mask')
  img_size = int(math.sqrt(mask.shape[0]) * window) if getattr(mask, 'ndim', 0) == 3 else 64
  num_layers = converter.count_blocks(sd, 'layers')
  depths = tuple(converter.count_blocks(sd, f'layers.{i}.residual_group.blocks') for i in range(num_layers))
  heads = tuple(converter.dim(sd, f'layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table',
                              1, 6, ndim=2) for i in range(num_layers))
  resi_connection = '1conv' if 'conv_after_body.weight' in sd else '3conv'
  section = {'name': 'swinir', 'embed_dim': dim, 'depths': depths, 'num_heads': heads,
             'window_size': window, 'mlp_ratio': hidden / dim, 'upsampler': upsampler,
             'resi_connection': resi_connection, 'img_range': 255.0 if window == 7 else 1.0,
             'img_size': img_size, 'scale': scale}
  hidden = int(dim * section['mlp_ratio'])
  table, t = {}, window * window
  converter.conv_rows(table, 'conv_first', 'conv_first', 3, dim)
  converter.norm_rows(table, 'patch_embed/norm', 'patch_embed.norm', dim)
  for i, (depth, n) in enumerate(zip(depths, heads)):
    for j in range(depth):
      key = f'layers.{i}.residual_group.blocks.{j}'
      block_rows(table, f'layers_{i}/residual_group/blocks_{j}', key, dim, n, window, hidden)
      table[None, f'{key}.attn.relative_position_index'] = (f'{key}.attn.relative_position_index', (t, t))
      if j % 2 and img_size > window:  # shifted blocks store their mask at img_size
        table[None, f'{key}.attn_mask'] = (f'{key}.attn_mask', ((img_size // window) ** 2, t, t))
    _residual_rows(table, f'layers_{i}/conv', f'layers.{i}.conv', resi_connection, dim)
  converter.norm_rows(table, 'norm', 'norm', dim)
  _residual_rows(table, 'conv_after_body', 'conv_after_body', resi_connection, dim)
  if upsampler in ('pixelshuffle', 'nearest+conv'):
    converter.conv_rows(table, 'conv_before_upsample', 'conv_before_upsample.0', dim, 64)
  if upsampler == 'pixelshuffle':
    for j, f in enumerate(pixel_shuffle_factors(scale)):
      converter.conv_rows(table, f'upsample/conv_{j}', f'upsample.{2 * j}', 64, f * f * 64)
  elif upsampler == 'pixelshuffledirect':
    converter.conv_rows(table, 'upsample/conv_0', 'upsample.0', dim, scale * scale * 3)
  elif upsampler == 'nearest+conv':
    for k in range(1, int(math.log2(max(scale, 1))) + 1):
      converter.conv_rows(table, f'conv_up{k}', f'conv_up{k}', 64, 64)
    converter.conv_rows(table, 'conv_hr', 'conv_hr', 64, 64)
  if upsampler != 'pixelshuffledirect':
    converter.conv_rows(table, 'conv_last', 'conv_last', dim if upsampler == '' else 64, 3)
  problems = (("'conv_first.1' is a pixel-unshuffled input (start_unshuffle), which enhance_jax's SwinIR "
               'does not have',) if 'conv_first.1.weight' in sd else ())
  return Layout(section, table, problems=problems)
