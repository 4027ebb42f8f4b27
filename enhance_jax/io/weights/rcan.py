"""RCAN (Zhang et al. 2018) state dicts: yulunzhang/RCAN's keys (EDSR-PyTorch's head/body/tail), as
spandrel reads them.

Told from EDSR-PyTorch's files (the same head/body/tail names) by the channel attention inside the
blocks: `body.{g}.body.{b}.body.3.conv_du.{0,2}`. Inferred as spandrel infers them: num_groups from
`body.*` (less the conv after the groups), num_blocks from `body.0.body.*` (less the group's conv),
num_features and scale from the upsampler `tail.0.{2j}`, reduction from the first attention's
down conv, kernel_size from the head, norm from `sub_mean`, and spandrel's unshuffle variant from a
head conv at `head.1` (x1/x2: scale = 4 / the unshuffle factor). The MeanShift convs are loaded.
"""

import math
import re
from collections.abc import Mapping

from enhance_jax.io.weights import converter
from enhance_jax.io.weights.converter import Layout

HINT = ("a RCAN state_dict (yulunzhang/RCAN's RCAN_BIX2.pt, RCAN_BIX3.pt, RCAN_BIX4.pt, "
        'RCAN_BIX8.pt, or a spandrel/traiNNer-redux RCAN)')
_ATTENTION = re.compile(r'body\.\d+\.body\.\d+\.body\.3\.conv_du\.0\.weight')


def detect(sd: Mapping) -> bool:
  """Whether SD's keys are RCAN's: a head conv, `tail.1` and channel attention in the blocks."""
  return (('head.0.weight' in sd or 'head.1.weight' in sd) and 'tail.1.weight' in sd
          and any(_ATTENTION.fullmatch(k) for k in sd))


def _upsampler_scale(sd: Mapping, nf: int) -> int:
  """The factor of the pixel-shuffle upsampler `tail.0.{0,2,...}` (each conv: nf -> nf f^2); 4 when
  its shapes make no sense (the table then names the mis-shaped conv)."""
  scale = 1
  for j in range(0, 10, 2):
    c_out = converter.dim(sd, f'tail.0.{j}.weight', 0, 0)
    if not c_out:
      break
    scale *= math.isqrt(c_out // nf)
  return scale if scale >= 1 else 4


def layout(sd: Mapping) -> Layout:
  """RCAN's sizes read off SD's shapes, and its key table."""
  unshuffle = 'head.1.weight' in sd
  head = 'head.1' if unshuffle else 'head.0'
  nf = converter.out_channels(sd, [head, 'tail.0.0'], 64)
  head_in = converter.dim(sd, f'{head}.weight', 1, 3)
  kernel_size = converter.dim(sd, f'{head}.weight', 3, 3)
  num_groups = max(0, converter.count_blocks(sd, 'body') - 1)
  num_blocks = max(0, converter.count_blocks(sd, 'body.0.body') - 1)
  down = converter.dim(sd, 'body.0.body.0.body.3.conv_du.0.weight', 0, max(1, nf // 16))
  reduction = max(1, nf // down)
  scale = _upsampler_scale(sd, nf)
  factor = 1
  if unshuffle:
    factor = max(1, math.isqrt(head_in // 3))
    scale = max(1, 4 // factor)
  norm = 'sub_mean.weight' in sd
  section = {'name': 'rcan', 'num_groups': num_groups, 'num_blocks': num_blocks, 'num_features': nf,
             'reduction': reduction, 'kernel_size': kernel_size, 'norm': norm,
             'unshuffle': unshuffle, 'scale': scale}

  table, k = {}, kernel_size
  if norm:
    for shift in ('sub_mean', 'add_mean'):
      converter.conv_rows(table, shift, shift, 3, 3, k=1)
  converter.conv_rows(table, 'head', head, 3 * factor * factor, nf, k)
  for g in range(num_groups):
    for b in range(num_blocks):
      path, key = f'rg_{g}/rcab_{b}', f'body.{g}.body.{b}.body'
      converter.conv_rows(table, f'{path}/conv1', f'{key}.0', nf, nf, k)
      converter.conv_rows(table, f'{path}/conv2', f'{key}.2', nf, nf, k)
      converter.conv_rows(table, f'{path}/ca/down', f'{key}.3.conv_du.0', nf, nf // reduction, 1)
      converter.conv_rows(table, f'{path}/ca/up', f'{key}.3.conv_du.2', nf // reduction, nf, 1)
    converter.conv_rows(table, f'rg_{g}/conv', f'body.{g}.body.{num_blocks}', nf, nf, k)
  converter.conv_rows(table, 'conv_after_body', f'body.{num_groups}', nf, nf, k)
  up = 4 if unshuffle else scale
  for j, f in enumerate((3,) if up == 3 else (2,) * (up.bit_length() - 1)):
    converter.conv_rows(table, f'upsample/conv_{j}', f'tail.0.{2 * j}', nf, nf * f * f)
  converter.conv_rows(table, 'conv_last', 'tail.1', nf, 3, k)
  return Layout(section, table)
