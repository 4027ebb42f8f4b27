"""SPAN (Wan et al. 2024) state dicts: hongyuanyu/SPAN's keys, as spandrel reads them.

Each Conv3XC stores its training branches (`sk`, `conv.0`, `conv.1`, `conv.2`) and the fused
`eval_conv` PyTorch computes from them; the branches become the Flax parameters (models/span.py
fuses them again when evaluating, as PyTorch's eval mode recomputes `eval_conv` on every call) and
`eval_conv` is checked for its shape only. A `no_norm` buffer marks a model trained without the
mean shift (norm=False). The scale comes from the upsampler's out-channels (3 scale^2).
"""

import math
from collections.abc import Mapping

from enhance_jax.io.weights import converter
from enhance_jax.io.weights.converter import Layout
from enhance_jax.models import span

HINT = ("a SPAN state_dict (hongyuanyu/SPAN's released x2/x4 checkpoints of 48 or 52 features, or "
        'a traiNNer-redux / neosr SPAN model)')
_KEYS = ('conv_1.sk.weight', 'block_1.c1_r.sk.weight', 'conv_cat.weight', 'upsampler.0.weight')


def detect(sd: Mapping) -> bool:
  """Whether SD's keys are SPAN's: Conv3XC skips (`conv_1.sk`, `block_1.c1_r.sk`), conv_cat, upsampler."""
  return all(k in sd for k in _KEYS)


def _scale(up_channels: int) -> int:
  """The pixel shuffle's factor s with 3 s^2 = UP_CHANNELS (spandrel's first candidate, RGB out); 4
  when none fits (the table then names the mis-shaped upsampler)."""
  s = math.isqrt(up_channels // 3)
  return s if s >= 1 and 3 * s * s == up_channels else 4


def _conv3xc_rows(table: converter.Table, path: str, key: str, c_in: int, c_out: int) -> None:
  """A Conv3XC's branches (parameters) and its fused eval_conv (checked, not loaded)."""
  converter.conv_rows(table, f'{path}/sk', f'{key}.sk', c_in, c_out, k=1)
  converter.conv_rows(table, f'{path}/conv_0', f'{key}.conv.0', c_in, c_in * span.GAIN, k=1)
  converter.conv_rows(table, f'{path}/conv_1', f'{key}.conv.1', c_in * span.GAIN, c_out * span.GAIN)
  converter.conv_rows(table, f'{path}/conv_2', f'{key}.conv.2', c_out * span.GAIN, c_out, k=1)
  table[None, f'{path}/eval_conv/kernel'] = (f'{key}.eval_conv.weight', (c_out, c_in, 3, 3))
  table[None, f'{path}/eval_conv/bias'] = (f'{key}.eval_conv.bias', (c_out,))


def layout(sd: Mapping) -> Layout:
  """SPAN's sizes read off SD's shapes (as spandrel's SPAN loader reads them), and its key table."""
  nf = converter.out_channels(sd, ['conv_1.sk', 'conv_cat'], 48)
  scale = _scale(converter.dim(sd, 'upsampler.0.weight', 0, 48))
  norm = 'no_norm' not in sd
  table = {}
  _conv3xc_rows(table, 'conv_1', 'conv_1', 3, nf)
  for i in range(1, span.NUM_BLOCKS + 1):
    for j in (1, 2, 3):
      _conv3xc_rows(table, f'block_{i}/c{j}_r', f'block_{i}.c{j}_r', nf, nf)
  converter.conv_rows(table, 'conv_cat', 'conv_cat', 4 * nf, nf, k=1)
  _conv3xc_rows(table, 'conv_2', 'conv_2', nf, nf)
  converter.conv_rows(table, 'upsampler', 'upsampler.0', nf, 3 * scale * scale)
  if not norm:
    table[None, 'no_norm'] = ('no_norm', (1,))
  return Layout({'name': 'span', 'num_features': nf, 'norm': norm, 'scale': scale}, table)
