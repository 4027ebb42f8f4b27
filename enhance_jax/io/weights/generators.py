"""Layouts of released super-resolution generators: sizes read off a state_dict's shapes, and the
strict key table for them (`converter.Layout`).

  - BasicSR / Real-ESRGAN RRDBNet (`conv_first`, `body.{i}.rdb{j}.conv{k}`, `conv_body`, `conv_up1`,
    `conv_up2`, `conv_hr`, `conv_last`) and the ESRGAN release names (`RRDB_trunk.{i}.RDB{j}.conv{k}`,
    `trunk_conv`, `upconv1`, `upconv2`, `HRconv`) -> RRDBNet (`body_{i}/rdb{j}/conv{k}`).
  - Real-ESRGAN SRVGGNetCompact with PReLU, BasicSR MSRResNet, BasicSR and EDSR-PyTorch EDSR.
"""

import re
from collections.abc import Mapping

import numpy as np

from enhance_jax.io.weights import converter
from enhance_jax.io.weights.converter import Layout
from enhance_jax.models import edsr

# ---------------------------------------------------------------- RRDBNet (ESRGAN)

_RRDBNET_SCALES = {3: 4, 12: 2, 48: 1}  # conv_first in-channels -> scale (x2/x1 pixel-unshuffle first)


def _rrdbnet_keys(num_blocks: int, esrgan: bool) -> dict[str, str]:
  """{Flax path 'body_0/rdb1/conv1': torch key} for either naming."""
  names = ('conv_first', 'conv_body', 'conv_up1', 'conv_up2', 'conv_hr', 'conv_last')
  torch_names = (('conv_first', 'trunk_conv', 'upconv1', 'upconv2', 'HRconv', 'conv_last')
                 if esrgan else names)
  body = 'RRDB_trunk.{i}.RDB{j}.conv{k}' if esrgan else 'body.{i}.rdb{j}.conv{k}'
  return {**dict(zip(names, torch_names)),
          **{f'body_{i}/rdb{j}/conv{k}': body.format(i=i, j=j, k=k)
             for i in range(num_blocks) for j in (1, 2, 3) for k in range(1, 6)}}


def rrdbnet_blocks(sd: Mapping) -> int:
  """Number of RRDB blocks stored under either naming (0 if none)."""
  esrgan = any(k.startswith('RRDB_trunk.') for k in sd)
  return converter.count_blocks(sd, 'RRDB_trunk' if esrgan else 'body')


def rrdbnet_layout(sd: Mapping) -> Layout:
  """BasicSR/Real-ESRGAN or ESRGAN-release RRDBNet: blocks counted, nf/gc/scale read off the shapes."""
  esrgan = any(k.startswith('RRDB_trunk.') for k in sd)
  num_blocks = rrdbnet_blocks(sd)
  names = _rrdbnet_keys(num_blocks, esrgan)
  nf = converter.out_channels(sd, [names[n] for n in ('conv_first', 'conv_body', 'conv_hr')], 64)
  c_in = converter.dim(sd, f"{names['conv_first']}.weight", 1, 3)
  gc = converter.out_channels(sd, [names['body_0/rdb1/conv1']], 32) if num_blocks else 32
  scale = _RRDBNET_SCALES.get(c_in, 4)
  table = {}
  converter.conv_rows(table, 'conv_first', names['conv_first'], 3 * (4 // scale) ** 2, nf)
  for i in range(num_blocks):
    for j in (1, 2, 3):
      for k in range(1, 6):
        path = f'body_{i}/rdb{j}/conv{k}'
        converter.conv_rows(table, path, names[path], nf + (k - 1) * gc, nf if k == 5 else gc)
  for name in ('conv_body', 'conv_up1', 'conv_up2', 'conv_hr'):
    converter.conv_rows(table, f'{name}/conv' if name.startswith('conv_up') else name, names[name],
                        nf, nf)
  converter.conv_rows(table, 'conv_last', names['conv_last'], nf, 3)
  return Layout({'name': 'rrdbnet', 'num_blocks': num_blocks, 'num_features': nf,
                 'growth_channels': gc, 'scale': scale}, table)


# ---------------------------------------------------------------- SRVGGNetCompact, MSRResNet


def srvgg_layout(sd: Mapping) -> Layout:
  """Real-ESRGAN SRVGGNetCompact with PReLU: `body.{i}`, convs at even i, PReLU slopes at odd i."""
  convs = [int(m.group(1)) for k in sd if (m := re.fullmatch(r'body\.(\d+)\.weight', k))]
  num_convs = max(0, (max(convs, default=34) - 2) // 2)
  last = 2 * num_convs + 2
  nf = converter.out_channels(sd, ['body.0', 'body.2'], 64)
  c_out = converter.dim(sd, f'body.{last}.weight', 0, 48)
  scale = round((c_out / 3) ** 0.5)
  scale = scale if 3 * scale * scale == c_out and scale >= 1 else 4
  table = {}
  for i in range(num_convs + 1):
    converter.conv_rows(table, f'body_{2 * i}', f'body.{2 * i}', 3 if i == 0 else nf, nf)
    table['params', f'body_{2 * i + 1}/negative_slope'] = (f'body.{2 * i + 1}.weight', (nf,))
  converter.conv_rows(table, f'body_{last}', f'body.{last}', nf, 3 * scale * scale)
  return Layout({'name': 'srvgg_compact', 'num_features': nf, 'num_convs': num_convs,
                 'scale': scale}, table)


def msrresnet_layout(sd: Mapping) -> Layout:
  """BasicSR MSRResNet: x4 has upconv1 and upconv2 (4*nf each), x2/x3 one upconv1 of scale^2*nf."""
  nf = converter.out_channels(sd, ['conv_first', 'conv_hr'], 64)
  num_blocks = converter.count_blocks(sd, 'body')
  up = converter.dim(sd, 'upconv1.weight', 0, 0)
  scale = 4 if 'upconv2.weight' in sd else {4 * nf: 2, 9 * nf: 3}.get(up, 4)
  table = {}
  converter.conv_rows(table, 'conv_first', 'conv_first', 3, nf)
  for i in range(num_blocks):
    for k in (1, 2):
      converter.conv_rows(table, f'body_{i}/conv{k}', f'body.{i}.conv{k}', nf, nf)
  for j, factor in enumerate((2, 2) if scale == 4 else (scale,), 1):
    converter.conv_rows(table, f'upconv{j}', f'upconv{j}', nf, nf * factor * factor)
  converter.conv_rows(table, 'conv_hr', 'conv_hr', nf, nf)
  converter.conv_rows(table, 'conv_last', 'conv_last', nf, 3)
  return Layout({'name': 'msrresnet', 'num_blocks': num_blocks, 'num_features': nf, 'scale': scale},
                table)


# ---------------------------------------------------------------- EDSR

# EDSR's two namings: BasicSR edsr_arch, and EDSR-PyTorch (head/body/tail Sequentials, MeanShift convs).
_EDSR_KEYS = {
    'basicsr': {'conv_first': 'conv_first', 'conv1': 'body.{i}.conv1', 'conv2': 'body.{i}.conv2',
                'conv_after_body': 'conv_after_body', 'upsample': 'upsample.{j}',
                'conv_last': 'conv_last'},
    'edsr_pytorch': {'conv_first': 'head.0', 'conv1': 'body.{i}.body.0', 'conv2': 'body.{i}.body.2',
                     'conv_after_body': 'body.{n}', 'upsample': 'tail.0.{j}', 'conv_last': 'tail.1'},
}
EDSR_LARGE_FEATURES = 256  # EDSR (large): 256 features, res_scale 0.1 in both repositories' configs


def edsr_layout(sd: Mapping) -> Layout:
  """BasicSR or EDSR-PyTorch EDSR. res_scale is not stored: 0.1 for 256 features, else 1.0."""
  pt = 'head.0.weight' in sd or 'sub_mean.weight' in sd
  names = _EDSR_KEYS['edsr_pytorch' if pt else 'basicsr']
  num_blocks = max(0, converter.count_blocks(sd, 'body') - (1 if pt else 0))
  nf = converter.out_channels(
      sd, [names['conv_first'], names['conv_after_body'].format(n=num_blocks)], 64)
  up_re = re.escape(names['upsample']).replace(r'\{j\}', r'(\d+)') + r'\.weight'
  ups = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(up_re, k)))
  first_up = (converter.dim(sd, names['upsample'].format(j=ups[0]) + '.weight', 0, 4 * nf) if ups
              else 4 * nf)
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
  converter.conv_rows(table, 'conv_first', names['conv_first'], 3, nf)
  for i in range(num_blocks):
    for k in (1, 2):
      converter.conv_rows(table, f'body_{i}/conv{k}', names[f'conv{k}'].format(i=i), nf, nf)
  converter.conv_rows(table, 'conv_after_body', names['conv_after_body'].format(n=num_blocks), nf, nf)
  for j, factor in enumerate((3,) if scale == 3 else (2,) * (scale.bit_length() - 1)):
    converter.conv_rows(table, f'upsample/conv_{j}', names['upsample'].format(j=2 * j), nf,
                        nf * factor ** 2)
  converter.conv_rows(table, 'conv_last', names['conv_last'], nf, 3)
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
