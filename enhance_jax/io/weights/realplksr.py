"""RealPLKSR (traiNNer-redux) state dicts, as spandrel's PLKSR architecture reads them: `feats.0` head
conv, `feats.{i}` PLK blocks (channel_mixer.0/2, lk.conv, attn.f.0, refine, norm or layer_norm),
`feats.{n+2}` tail conv (feats.{n+1} is a Dropout2d, keyless), and `to_img.*` for DySample.

Sizes as spandrel infers them: dim from feats.0, n_blocks = len(feats) - 3, scale from the tail's
3*scale^2 outputs, kernel_size and split_ratio from lk.conv, use_ea from attn.f.0, layer_norm from
feats.1.layer_norm, the DySample upsampler from to_img.init_pos. norm_groups is not stored (4, as
traiNNer-redux and spandrel build it). Plain PLKSR files (Lee et al.'s official PLKSR_X4_DIV2K.pth;
their blocks' mixer is `channe_mixer`) are detected here and refused in one sentence: that network
(CCM/ICCM mixers, sparse kernels) is not implemented.
"""

import math
from collections.abc import Mapping

import numpy as np

from enhance_jax.io.weights import converter
from enhance_jax.io.weights.converter import Layout
from enhance_jax.models import realplksr

HINT = ('a traiNNer-redux RealPLKSR state_dict (e.g. 4x_realplksr_mssim_pretrain.pth, '
        '2x_realplksr_mssim_pretrain.pth, or a traiNNer-redux realplksr / dysample / layer_norm '
        'training checkpoint)')
_LK_KEYS = ('feats.1.lk.conv.weight', 'feats.1.lk.convs.0.weight', 'feats.1.lk.mn_conv.weight')


def detect(sd: Mapping) -> bool:
  """Whether SD is of the PLKSR family (spandrel's condition): RealPLKSR, or plain PLKSR, which
  `layout` refuses by name."""
  return ('feats.0.weight' in sd and 'feats.1.refine.weight' in sd
          and any(k in sd for k in _LK_KEYS)
          and any(k in sd for k in ('feats.1.channel_mixer.0.weight', 'feats.1.channe_mixer.0.weight')))


def layout(sd: Mapping) -> Layout:
  """RealPLKSR's sizes read off SD's shapes, and its key table."""
  problems = []
  if 'feats.1.channe_mixer.0.weight' in sd:
    problems.append("'feats.1.channe_mixer.0.weight' is plain PLKSR's (Lee et al. 2024, e.g. "
                    'PLKSR_X4_DIV2K.pth), which enhance_jax does not implement; only traiNNer-redux '
                    "RealPLKSR ('feats.N.channel_mixer') is")
  dim = converter.out_channels(sd, ['feats.0'], 64)
  n_blocks = max(0, converter.count_blocks(sd, 'feats') - 3)
  tail = f'feats.{n_blocks + 2}'
  tail_out = converter.dim(sd, f'{tail}.weight', 0, 48)
  scale = math.isqrt(tail_out // 3) or 4
  kernel_size = converter.dim(sd, 'feats.1.lk.conv.weight', 2, 17)
  partial = converter.dim(sd, 'feats.1.lk.conv.weight', 0, dim // 4)
  split_ratio = partial / dim
  use_ea = 'feats.1.attn.f.0.weight' in sd
  layer_norm = 'feats.1.layer_norm.bias' in sd
  dysample = 'to_img.init_pos' in sd
  section = {'name': 'realplksr', 'dim': dim, 'n_blocks': n_blocks, 'kernel_size': kernel_size,
             'split_ratio': split_ratio, 'use_ea': use_ea,
             'upsampler': 'dysample' if dysample else 'pixelshuffle', 'layer_norm': layer_norm,
             'scale': scale}

  table = {}
  converter.conv_rows(table, 'feats_0', 'feats.0', 3, dim)
  for i in range(1, n_blocks + 1):
    path, key = f'feats_{i}', f'feats.{i}'
    if layer_norm:
      converter.norm_rows(table, f'{path}/layer_norm', f'{key}.layer_norm', dim)
    converter.conv_rows(table, f'{path}/channel_mixer_0', f'{key}.channel_mixer.0', dim, 2 * dim)
    converter.conv_rows(table, f'{path}/channel_mixer_2', f'{key}.channel_mixer.2', 2 * dim, dim)
    converter.conv_rows(table, f'{path}/lk/conv', f'{key}.lk.conv', partial, partial, kernel_size)
    if use_ea:
      converter.conv_rows(table, f'{path}/attn/f_0', f'{key}.attn.f.0', dim, dim)
    converter.conv_rows(table, f'{path}/refine', f'{key}.refine', dim, dim, 1)
    if not layer_norm:
      converter.norm_rows(table, f'{path}/norm', f'{key}.norm', dim)
  converter.conv_rows(table, f'feats_{n_blocks + 2}', tail, dim, 3 * scale * scale)
  if dysample:
    _dysample_rows(table, sd, scale, problems)
  return Layout(section, table, ('',), tuple(problems))


def _dysample_rows(table, sd, scale, problems):
  """DySample's offset, scope and end_conv 1x1s, and its init_pos buffer (checked: the sub-pixel
  centres for SCALE and its groups)."""
  groups, c_in = (3 if scale % 2 else 4), 3 * scale * scale
  c_off = 2 * groups * scale * scale
  converter.conv_rows(table, 'to_img/offset', 'to_img.offset', c_in, c_off, 1)
  table['params', 'to_img/scope/kernel'] = ('to_img.scope.weight', (c_off, c_in, 1, 1))
  if scale != 1:
    converter.conv_rows(table, 'to_img/end_conv', 'to_img.end_conv', c_in, 3, 1)
  table[None, 'to_img/init_pos'] = ('to_img.init_pos', (1, c_off, 1, 1))
  pos = sd.get('to_img.init_pos')
  want = realplksr.dysample_init_pos(scale, groups)
  if pos is not None and pos.size == want.size and not np.allclose(np.ravel(pos), want, atol=1e-6):
    problems.append(f"'to_img.init_pos' is not DySample's sub-pixel grid for x{scale} with {groups} "
                    'groups')
