"""Omni-SR state dicts (the official Francis0625/Omni-SR and traiNNer-redux/neosr keys, as spandrel's
OmniSR reads them): `input`, `residual_layer.{i}` OSAGs (`residual_layer.{j}.layer.{k}` OSA blocks,
the 1x1 `residual_layer.{block_num}`, `esa`), `output`, `up.0`.

Sizes as spandrel infers them: num_feat from input, bias from input.bias, scale from up.0's
3*scale^2 outputs, res_num and block_num counted, pe and window_size from the first attention's
(2w-1)^2-row relative position table (window 8 when there is none). thop's profiling counters
(`*total_ops`, `*total_params`), which some checkpoints carry, are accepted and ignored.
"""

import math
from collections.abc import Mapping

from enhance_jax.io.weights import converter
from enhance_jax.io.weights.converter import Layout

HINT = ('an Omni-SR state_dict (e.g. the official OmniSR_X4_DIV2K / OmniSR_X2_DF2K checkpoints, or '
        'community ones such as 2xHFA2kAVCOmniSR.pth, 4x-ardo.pth)')
_FIRST_BLOCK = 'residual_layer.0.residual_layer.0.layer.'
_JUNK = ('total_ops', 'total_params')


def detect(sd: Mapping) -> bool:
  """Whether SD's keys are Omni-SR's (spandrel's condition)."""
  return all(k in sd for k in (_FIRST_BLOCK + '0.fn.0.weight', 'input.weight', 'up.0.weight'))


def _osa_block_rows(table, path, key, c, window, pe):
  """One OSA block's layer_0 .. layer_12 (MBConv, two rounds of attention, FFN, channel attention,
  FFN)."""
  converter.conv_rows(table, f'{path}/layer_0/fn_0', f'{key}.layer.0.fn.0', c, c, 1)
  converter.conv_rows(table, f'{path}/layer_0/fn_2', f'{key}.layer.0.fn.2', 1, c)
  converter.linear_rows(table, f'{path}/layer_0/fn_4/gate_1', f'{key}.layer.0.fn.4.gate.1', c,
                        int(c * 0.25), bias=False)
  converter.linear_rows(table, f'{path}/layer_0/fn_4/gate_3', f'{key}.layer.0.fn.4.gate.3',
                        int(c * 0.25), c, bias=False)
  converter.conv_rows(table, f'{path}/layer_0/fn_5', f'{key}.layer.0.fn.5', c, c, 1)
  for first in (2, 8):
    p, k = f'{path}/layer_{first}', f'{key}.layer.{first}'
    converter.norm_rows(table, f'{p}/norm', f'{k}.norm', c)
    converter.linear_rows(table, f'{p}/fn/to_qkv', f'{k}.fn.to_qkv', c, 3 * c, bias=False)
    converter.linear_rows(table, f'{p}/fn/to_out_0', f'{k}.fn.to_out.0', c, c, bias=False)
    if pe:
      table['params', f'{p}/fn/rel_pos_bias'] = (f'{k}.fn.rel_pos_bias.weight', ((2 * window - 1) ** 2, 4))
    for ffn in (first + 2, first + 4):
      p, k = f'{path}/layer_{ffn}', f'{key}.layer.{ffn}'
      converter.norm_rows(table, f'{p}/norm', f'{k}.norm', c)
      table['params', f'{p}/fn/project_in/kernel'] = (f'{k}.fn.project_in.weight', (2 * c, c, 1, 1))
      table['params', f'{p}/fn/dwconv/kernel'] = (f'{k}.fn.dwconv.weight', (2 * c, 1, 3, 3))
      table['params', f'{p}/fn/project_out/kernel'] = (f'{k}.fn.project_out.weight', (c, c, 1, 1))
    p, k = f'{path}/layer_{first + 3}', f'{key}.layer.{first + 3}'
    converter.norm_rows(table, f'{p}/norm', f'{k}.norm', c)
    table['params', f'{p}/fn/temperature'] = (f'{k}.fn.temperature', (4, 1, 1), lambda t: t.reshape(-1))
    table['params', f'{p}/fn/qkv/kernel'] = (f'{k}.fn.qkv.weight', (3 * c, c, 1, 1))
    table['params', f'{p}/fn/qkv_dwconv/kernel'] = (f'{k}.fn.qkv_dwconv.weight', (3 * c, 1, 3, 3))
    table['params', f'{p}/fn/project_out/kernel'] = (f'{k}.fn.project_out.weight', (c, c, 1, 1))


def _biased_conv_rows(table, path, key, c_in, c_out, k, bias):
  if bias:
    converter.conv_rows(table, path, key, c_in, c_out, k)
  else:
    table['params', f'{path}/kernel'] = (f'{key}.weight', (c_out, c_in, k, k))


def layout(sd: Mapping) -> Layout:
  """Omni-SR's sizes read off SD's shapes, and its key table."""
  c = converter.out_channels(sd, ['input'], 64)
  bias = 'input.bias' in sd
  up = converter.out_channels(sd, ['up.0'], 48)
  scale = math.isqrt(up // 3) if up % 3 == 0 and math.isqrt(up // 3) ** 2 == up // 3 else 4
  res_num = converter.count_blocks(sd, 'residual_layer')
  block_num = max(0, converter.count_blocks(sd, 'residual_layer.0.residual_layer') - 1)
  rel = sd.get(_FIRST_BLOCK + '2.fn.rel_pos_bias.weight')
  pe = rel is not None
  window = int((math.sqrt(rel.shape[0]) + 1) / 2) if pe else 8
  section = {'name': 'omnisr', 'num_feat': c, 'res_num': res_num, 'block_num': block_num,
             'window_size': window, 'pe': pe, 'bias': bias, 'scale': scale}

  table = {}
  _biased_conv_rows(table, 'input', 'input', 3, c, 3, bias)
  f = max(c // 4, 16)
  for i in range(res_num):
    path, key = f'residual_layer_{i}', f'residual_layer.{i}'
    for j in range(block_num):
      _osa_block_rows(table, f'{path}/residual_layer_{j}', f'{key}.residual_layer.{j}', c, window, pe)
    _biased_conv_rows(table, f'{path}/residual_layer_{block_num}', f'{key}.residual_layer.{block_num}',
                      c, c, 1, bias)
    for name, c_in, c_out, k in (('conv1', c, f, 1), ('conv_f', f, f, 1), ('conv2', f, f, 3),
                                 ('conv3', f, f, 3), ('conv4', f, c, 1)):
      converter.conv_rows(table, f'{path}/esa/{name}', f'{key}.esa.{name}', c_in, c_out, k)
  _biased_conv_rows(table, 'output', 'output', c, c, 3, bias)
  _biased_conv_rows(table, 'up_0', 'up.0', c, 3 * scale * scale, 3, bias)
  for k, value in sd.items():  # thop's counters: checked, not used
    if k.endswith(_JUNK):
      table[None, f'thop/{k}'] = (k, tuple(value.shape))
  return Layout(section, table)
