"""ncnn model files (`NAME.param` + `NAME.bin`) read as a PyTorch-style state_dict.

The format of Real-ESRGAN's, Real-CUGAN's and waifu2x's portable releases: `.param` is the text
layer graph (`magic`, `layers blobs`, then one `Type name n_in n_out inputs... outputs... k=v...`
line per layer; `-233xx=n,v...` is array parameter xx), `.bin` each layer's weights in graph order
(a convolution's weights behind a 4-byte storage tag: float32, float16 or a 256-entry table; its
bias and PReLU slopes as raw float32). No ncnn runtime is loaded: the files are parsed here.

The graph is matched, layer by layer, against the graph an architecture of the sizes it implies
would export (`GRAPHS`): a layer that does not fit is named, and nothing is returned. What comes
back is the state_dict under the architecture's BasicSR/Real-ESRGAN key names, which the weight
importer (`weights.import_weights`) turns into Flax variables like any .pth file.
"""

import dataclasses
import os
import pathlib
from typing import Callable

import numpy as np

from enhance_jax.errors import UserError

MAGIC = 7767517
_FP16_TAG, _INT8_TAG, _FP32_TAG = 0x01306B47, 0x000D4B38, 0x0002C056
_NO_WEIGHTS = ('Input', 'Split', 'Concat', 'Eltwise', 'BinaryOp', 'Interp', 'PixelShuffle', 'ReLU',
               'Reshape', 'Permute', 'Crop', 'Noop')
_INTERP = {1: 'nearest', 2: 'bilinear', 3: 'bicubic'}
_ACTIVATIONS = {0: None, 1: 'relu', 2: 'leaky_relu'}


@dataclasses.dataclass
class Layer:
  """One line of a .param file: type, name, input/output blob names, parameters {id: value}
  (arrays as tuples), and after `read` its weight arrays by role ('weight', 'bias', 'slope')."""
  type: str
  name: str
  inputs: tuple[str, ...]
  outputs: tuple[str, ...]
  params: dict
  data: dict = dataclasses.field(default_factory=dict)

  def get(self, key: int, default=0):
    return self.params.get(key, default)


# ---------------------------------------------------------------- files


def is_ncnn(path) -> bool:
  """True for a `.param` file, or a `.bin` with its `.param` beside it."""
  path = pathlib.Path(path)
  suffix = path.suffix.lower()
  return suffix == '.param' or (suffix == '.bin' and path.with_suffix('.param').is_file())


def paths(path) -> tuple[pathlib.Path, pathlib.Path]:
  """(NAME.param, NAME.bin) for either file's path; UserError when one is missing."""
  path = pathlib.Path(path)
  param, binary = path.with_suffix('.param'), path.with_suffix('.bin')
  for p in (param, binary):
    if not p.is_file():
      raise UserError(f"ncnn model file '{p}' is missing; an ncnn model is NAME.param and NAME.bin "
                      'side by side.')
  return param, binary


def _value(text: str):
  try:
    return int(text)
  except ValueError:
    return float(text)


def _params(tokens: list[str], where: str) -> dict:
  params = {}
  for token in tokens:
    key, sep, value = token.partition('=')
    try:
      key = int(key)
      if key <= -23300:  # an array: -23300 - id = count,v1,v2,...
        count, *values = value.split(',')
        params[-23300 - key] = tuple(_value(v) for v in values[:int(count)])
      else:
        params[key] = _value(value)
    except ValueError:
      raise UserError(f'{where}: parameter {token!r} is not id=value; the .param file is not an ncnn '
                      'model or is damaged.') from None
    if not sep:
      raise UserError(f'{where}: parameter {token!r} has no value; the .param file is damaged.')
  return params


def read_param(path) -> list[Layer]:
  """The layers of an ncnn text .param file, in graph order."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise UserError(f"ncnn model file '{path}' is missing; an ncnn model is NAME.param and NAME.bin "
                    'side by side.')
  try:
    lines = [ln.split() for ln in path.read_text(encoding='ascii').splitlines() if ln.strip()]
  except (OSError, UnicodeDecodeError) as err:
    raise UserError(f"'{path}' cannot be read as an ncnn text .param ({type(err).__name__}); "
                    'give the NAME.param of an ncnn model (binary .param.bin is not supported).') from err
  if not lines or lines[0] != [str(MAGIC)]:
    raise UserError(f"'{path}' is not an ncnn .param file (it does not start with {MAGIC}); give "
                    'the NAME.param of an ncnn model.')
  layers = []
  for number, tokens in enumerate(lines[2:], 3):
    where = f'{path.name} line {number}'
    try:
      n_in, n_out = int(tokens[2]), int(tokens[3])
      inputs, outputs = tokens[4:4 + n_in], tokens[4 + n_in:4 + n_in + n_out]
    except (IndexError, ValueError):
      raise UserError(f'{where} is not an ncnn layer line (type name inputs outputs ...); the '
                      '.param file is damaged.') from None
    layers.append(Layer(tokens[0], tokens[1], tuple(inputs), tuple(outputs),
                        _params(tokens[4 + n_in + n_out:], where)))
  if len(lines) < 2 or len(layers) != int(lines[1][0]):
    raise UserError(f"'{path}' declares {lines[1][0] if len(lines) > 1 else '?'} layers but holds "
                    f'{len(layers)}; the .param file is truncated or damaged.')
  return layers


class _Reader:
  """Sequential reads from the .bin's bytes with ncnn's alignment."""

  def __init__(self, data: bytes, path):
    self.data, self.pos, self.path = data, 0, path

  def take(self, n: int, layer: Layer) -> bytes:
    if self.pos + n > len(self.data):
      raise UserError(f"'{self.path}' ends inside the weights of layer {layer.name!r} "
                      f'({layer.type}); the .bin is truncated or belongs to another .param.')
    out = self.data[self.pos:self.pos + n]
    self.pos += n
    return out

  def raw(self, n: int, layer: Layer) -> np.ndarray:
    """N float32 values with no tag (biases, slopes)."""
    return np.frombuffer(self.take(4 * n, layer), '<f4').copy()

  def tagged(self, n: int, layer: Layer) -> np.ndarray:
    """N values behind a storage tag (convolution weights) as float32."""
    tag = int.from_bytes(self.take(4, layer), 'little')
    if tag == _FP16_TAG:
      return np.frombuffer(self.take(2 * n + (-2 * n) % 4, layer)[:2 * n], '<f2').astype(np.float32)
    if tag == _INT8_TAG:
      raise UserError(f'layer {layer.name!r} of {self.path} holds int8-quantised weights, which '
                      'cannot be turned back into the float model; use a float32/float16 export.')
    if tag in (0, _FP32_TAG):
      return self.raw(n, layer)
    table = np.frombuffer(self.take(1024, layer), '<f4')  # any other tag: a 256-entry value table
    index = np.frombuffer(self.take(n + (-n) % 4, layer)[:n], np.uint8)
    return table[index].astype(np.float32)


def _load_weights(layers: list[Layer], binary: pathlib.Path) -> None:
  """Fills each layer's `data` from the .bin, in graph order; the file must be used up exactly."""
  reader = _Reader(binary.read_bytes(), binary)
  for layer in layers:
    if layer.type == 'Convolution':
      size, c_out = layer.get(6), layer.get(0)
      layer.data['weight'] = reader.tagged(size, layer)
      if layer.get(5):
        layer.data['bias'] = reader.raw(c_out, layer)
    elif layer.type == 'PReLU':
      layer.data['slope'] = reader.raw(max(1, layer.get(0)), layer)
    elif layer.type not in _NO_WEIGHTS:
      raise UserError(f'layer {layer.name!r} is an ncnn {layer.type}, which no architecture enhance_jax '
                      'imports holds; give an RRDBNet or SRVGGNetCompact ncnn model.')
  if reader.pos != len(reader.data):
    raise UserError(f"'{binary}' holds {len(reader.data) - reader.pos} bytes more than the .param's "
                    'layers use; the .bin belongs to another .param.')


# ---------------------------------------------------------------- graph signatures


def _signature(layer: Layer) -> tuple:
  """What a layer does, as compared against an architecture's expected graph."""
  if layer.type == 'Convolution':
    k, c_out = layer.get(1), layer.get(0)
    c_in = layer.get(6) // max(1, c_out * k * layer.get(11, k))
    act = _ACTIVATIONS.get(layer.get(9), f'activation {layer.get(9)}')
    slope = round(float(layer.get(10, (0.0,))[0]), 6) if act == 'leaky_relu' else None
    return ('Convolution', c_in, c_out, k, layer.get(11, k), layer.get(3, 1), layer.get(4),
            bool(layer.get(5)), act, slope)
  if layer.type == 'PReLU':
    return ('PReLU', layer.get(0))
  if layer.type == 'Eltwise':
    return ('Eltwise', layer.get(0), tuple(round(float(c), 6) for c in layer.get(1, ())))
  if layer.type == 'Interp':
    return ('Interp', _INTERP.get(layer.get(0), layer.get(0)), round(float(layer.get(1, 1.0)), 6),
            round(float(layer.get(2, 1.0)), 6))
  if layer.type == 'Concat':
    return ('Concat', len(layer.inputs))
  if layer.type in ('BinaryOp', 'PixelShuffle'):
    return (layer.type, layer.get(0))
  return (layer.type,)


def _conv(c_in, c_out, act=None):
  return ('Convolution', c_in, c_out, 3, 3, 1, 1, True, act, 0.2 if act == 'leaky_relu' else None)


def _describe(sig) -> str:
  if sig is None:
    return 'the end of the graph'
  if sig[0] == 'Convolution':
    act = f', then {sig[8]}' if sig[8] else ''
    return f'a {sig[3]}x{sig[4]} convolution {sig[1]} -> {sig[2]} channels{act}'
  return ' '.join(map(str, sig))


def _count(layers, sig) -> int:
  return sum(1 for layer in layers if _signature(layer) == sig)


def _convs(layers) -> list[Layer]:
  return [layer for layer in layers if layer.type == 'Convolution']


# RRDBNet (BasicSR / Real-ESRGAN): conv_first, blocks of 3 residual dense blocks (5 convs with dense
# concatenation, 0.2-scaled residuals), conv_body + skip, two nearest x2 upsamplings, conv_hr, conv_last.
_RESIDUAL = ('Eltwise', 1, (0.2, 1.0))
_UNSHUFFLE = {3: 4, 12: 2, 48: 1}  # conv_first in-channels -> scale (pixel-unshuffled input)


def _rrdbnet_sizes(layers):
  convs = _convs(layers)
  if len(convs) < 2:
    return None
  nf, c_in = convs[0].get(0), _signature(convs[0])[1]
  return {'num_blocks': _count(layers, _RESIDUAL) // 4, 'num_features': nf,
          'growth_channels': convs[1].get(0), 'c_in': c_in, 'scale': _UNSHUFFLE.get(c_in, 4)}


def _rrdbnet_graph(sizes):
  nb, nf, gc = sizes['num_blocks'], sizes['num_features'], sizes['growth_channels']
  expect, keys = [('Input',)], []
  if sizes['scale'] != 4:  # the pixel unshuffle, as ONNX exports it (Reshape, Transpose, Reshape)
    expect += [('Reshape',), ('Permute',), ('Reshape',)]
  expect.append(_conv(sizes['c_in'], nf))
  keys.append('conv_first')
  for i in range(nb):
    for j in (1, 2, 3):
      for k in range(1, 6):
        if k > 1:
          expect.append(('Concat', k))
        expect.append(_conv(nf + (k - 1) * gc, gc if k < 5 else nf,
                            'leaky_relu' if k < 5 else None))
        keys.append(f'body.{i}.rdb{j}.conv{k}')
      expect.append(_RESIDUAL)
    expect.append(_RESIDUAL)
  expect += [_conv(nf, nf), ('BinaryOp', 0)]
  keys.append('conv_body')
  for name in ('conv_up1', 'conv_up2'):
    expect += [('Interp', 'nearest', 2.0, 2.0), _conv(nf, nf, 'leaky_relu')]
    keys.append(name)
  expect += [_conv(nf, nf, 'leaky_relu'), _conv(nf, 3)]
  keys += ['conv_hr', 'conv_last']
  return expect, keys


def _rrdbnet_section(sizes, tail):
  del tail
  return {'name': 'rrdbnet', 'num_blocks': sizes['num_blocks'], 'num_features':
          sizes['num_features'], 'growth_channels': sizes['growth_channels'], 'scale': sizes['scale']}


# SRVGGNetCompact (Real-ESRGAN): conv + PReLU stacks at LR, one pixel shuffle, the nearest-upsampled
# input added; the animevideov3 x2/x3 files end with a bicubic downscale of the x4 output.
def _srvgg_sizes(layers):
  convs = _convs(layers)
  if len(convs) < 2:
    return None
  last = convs[-1].get(0)
  net_scale = round((last / 3) ** 0.5)
  downs = [layer for layer in layers if _signature(layer)[:2] == ('Interp', 'bicubic')]
  factor = float(downs[-1].get(1, 1.0)) if downs else 1.0
  return {'num_features': convs[0].get(0), 'num_convs': len(convs) - 2, 'net_scale': net_scale,
          'factor': factor, 'scale': round(net_scale * factor)}


def _srvgg_graph(sizes):
  nf, s = sizes['num_features'], sizes['net_scale']
  expect, keys = [('Input',)], []
  for i in range(sizes['num_convs'] + 1):
    expect += [_conv(3 if i == 0 else nf, nf), ('PReLU', nf)]
    keys += [f'body.{2 * i}', f'body.{2 * i + 1}']
  expect += [_conv(nf, 3 * s * s), ('PixelShuffle', s), ('Interp', 'nearest', float(s), float(s)),
             ('BinaryOp', 0)]
  keys.append(f'body.{2 * sizes["num_convs"] + 2}')
  if sizes['factor'] != 1.0:
    expect.append(('Interp', 'bicubic', round(sizes['factor'], 6), round(sizes['factor'], 6)))
  return expect, keys


def _srvgg_section(sizes, tail):
  del tail
  section = {'name': 'srvgg_compact', 'num_features': sizes['num_features'],
             'num_convs': sizes['num_convs'], 'scale': sizes['scale']}
  if sizes['scale'] != sizes['net_scale']:
    section['net_scale'] = sizes['net_scale']
  return section


@dataclasses.dataclass(frozen=True)
class Graph:
  """An architecture as an ncnn graph: the sizes a graph implies, the layer signatures and state_dict
  keys (one per weighted layer, in order) those sizes give, and the model section they build."""
  detect: Callable[[list], bool]
  sizes: Callable[[list], dict | None]
  expected: Callable[[dict], tuple[list, list]]
  section: Callable[[dict, list], dict]


GRAPHS = {
    'rrdbnet': Graph(lambda layers: _count(layers, _RESIDUAL) >= 4 or not any(
        layer.type == 'PReLU' for layer in layers), _rrdbnet_sizes, _rrdbnet_graph, _rrdbnet_section),
    'srvgg_compact': Graph(lambda layers: any(layer.type == 'PReLU' for layer in layers),
                           _srvgg_sizes, _srvgg_graph, _srvgg_section),
}


def _match(layers, arch) -> tuple[dict, dict]:
  """(model section, state_dict) of LAYERS read as ARCH, or UserError naming the first layer that
  does not fit the graph ARCH exports."""
  graph = GRAPHS[arch]
  body = [layer for layer in layers if layer.type != 'Split']
  sizes = graph.sizes(body)
  if sizes is None:
    raise UserError(f'the ncnn graph has too few convolutions to be an {arch}; give an RRDBNet or '
                    'SRVGGNetCompact ncnn model.')
  expected, keys = graph.expected(sizes)
  for i in range(max(len(body), len(expected))):
    got = _signature(body[i]) if i < len(body) else None
    want = expected[i] if i < len(expected) else None
    if got != want:
      where = f'layer {body[i].name!r} ({body[i].type}, #{i + 1})' if i < len(body) else \
          'the graph ends early'
      sizes_text = ', '.join(f'{k}={v}' for k, v in sizes.items() if k not in ('c_in', 'factor'))
      raise UserError(f'the ncnn graph does not fit {arch} ({sizes_text}): {where} is '
                      f'{_describe(got)} where {arch} has {_describe(want)}; give a model of an '
                      'architecture enhance_jax imports (RRDBNet, SRVGGNetCompact).')
  weighted = [layer for layer in body if layer.data]
  sd = {}
  for key, layer in zip(keys, weighted):
    if layer.type == 'Convolution':
      c_in, c_out, kh, kw = (_signature(layer)[i] for i in (1, 2, 4, 3))
      sd[f'{key}.weight'] = layer.data['weight'].reshape(c_out, c_in, kh, kw)
      if 'bias' in layer.data:
        sd[f'{key}.bias'] = layer.data['bias']
    else:
      sd[f'{key}.weight'] = layer.data['slope']
  return graph.section(sizes, body), sd


def read(path, arch: str | None = None) -> tuple[dict, dict[str, np.ndarray]]:
  """(model section, state_dict under BasicSR/Real-ESRGAN key names) of the ncnn model at PATH
  (its .param or .bin); ARCH names the architecture, else the graph tells."""
  layers = read_param(pathlib.Path(path).with_suffix('.param'))
  _, binary = paths(path)
  _load_weights(layers, binary)
  if arch is None:
    arch = next((name for name, g in GRAPHS.items() if g.detect(layers)), 'rrdbnet')
  if arch not in GRAPHS:
    raise UserError(f'--arch {arch}: ncnn models are read as {" or ".join(GRAPHS)} only.')
  section, sd = _match(layers, arch)
  bad = [k for k, v in sd.items() if not np.all(np.isfinite(v))]
  if bad:
    raise UserError(f"'{binary}' holds NaN or Inf in {bad[0]!r}; the .bin is damaged, download it "
                    'again.')
  return section, sd


def source_name(path) -> str:
  """The model's file name for metadata: NAME.param."""
  return os.path.basename(os.fspath(pathlib.Path(path).with_suffix('.param')))
