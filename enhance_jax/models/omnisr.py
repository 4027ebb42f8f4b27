"""Omni-SR ("Omni Aggregation Networks for Lightweight Image Super-Resolution", Wang et al. 2023).

A 3x3 head, res_num OSAGs (omni self-attention groups), a 3x3 conv plus the head's features, and a
3x3 conv + pixel shuffle. An OSAG is block_num OSA blocks, a 1x1 conv, a residual and ESA (enhanced
spatial attention). An OSA block (`layer`, indices as the reference's Sequential) is an MBConv
(layer_0) and two rounds of spatial then channel attention, each followed by a gated conv FFN:
window (block) self-attention (layer_2), FFN (layer_4), channel attention within each window
(layer_5), FFN (layer_6); grid self-attention over pixels strided H/window apart (layer_8), FFN
(layer_10), channel attention across windows (layer_11), FFN (layer_12). The input is zero-padded at
the bottom/right to a window multiple (the reference's check_image_size) and the output cropped.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from enhance_jax.models import attention
from enhance_jax.models.layers import pixel_shuffle
from enhance_jax.ops.conv import Conv
from enhance_jax.ops.resize import torch_resize_matrix

Conv3x3 = functools.partial(Conv, kernel_size=(3, 3), padding=1)
Conv1x1 = functools.partial(Conv, kernel_size=(1, 1), padding=0)
LayerNorm2d = functools.partial(nn.LayerNorm, epsilon=1e-6, use_fast_variance=False)  # over channels
gelu = functools.partial(jax.nn.gelu, approximate=False)
ESA_MIN_SIDE = 15  # the smallest side ESA takes: a stride-2 3x3 then a 7x7 max pool, both unpadded


def depthwise3x3(features, use_bias, dtype, name):
  return Conv3x3(features, feature_group_count=features, use_bias=use_bias, dtype=dtype, name=name)


@functools.cache
def relative_position_index(window: int) -> np.ndarray:
  """[w^2, w^2] index into the (2w-1)^2 relative position table for a w x w window (row-major)."""
  coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing='ij')).reshape(2, -1).T
  rel = coords[:, None, :] - coords[None, :, :] + window - 1
  return rel[..., 0] * (2 * window - 1) + rel[..., 1]


class SqueezeExcitation(nn.Module):
  """x * sigmoid(Linear(SiLU(Linear(spatial mean of x)))), squeezed to a quarter of the channels."""
  dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    gate = jnp.mean(x, axis=(1, 2), keepdims=True)
    gate = jax.nn.silu(nn.Dense(int(self.dim * 0.25), use_bias=False, dtype=self.dtype, name='gate_1')(gate))
    return x * jax.nn.sigmoid(nn.Dense(self.dim, use_bias=False, dtype=self.dtype, name='gate_3')(gate))


class MBConv(nn.Module):
  """Inverted residual with expansion 1: 1x1, GELU, depthwise 3x3, GELU, squeeze-excitation, 1x1,
  plus the input."""
  dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = gelu(Conv1x1(self.dim, dtype=self.dtype, name='fn_0')(x))
    y = gelu(depthwise3x3(self.dim, True, self.dtype, 'fn_2')(y))
    y = SqueezeExcitation(self.dim, self.dtype, name='fn_4')(y)
    return Conv1x1(self.dim, dtype=self.dtype, name='fn_5')(y) + x


class Attention(nn.Module):
  """Multi-head self-attention over the tokens of each window [B, w^2, C] (heads of C/4 channels:
  4 heads), with a learned relative position bias (pe)."""
  dim: int
  window: int
  pe: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens):
    b, t, _ = tokens.shape
    heads = 4
    head_dim = self.dim // heads
    qkv = nn.Dense(3 * self.dim, use_bias=False, dtype=self.dtype, name='to_qkv')(tokens)
    q, k, v = (a.reshape(b, t, heads, head_dim) for a in jnp.split(qkv, 3, axis=-1))
    bias = None
    if self.pe:
      table = self.param('rel_pos_bias', nn.initializers.normal(1.0),
                         ((2 * self.window - 1) ** 2, heads), jnp.float32)
      bias = table[relative_position_index(self.window)].transpose(2, 0, 1)[None].astype(q.dtype)
    out = attention.dot_product_attention(q, k, v, bias=bias).reshape(b, t, self.dim)
    return nn.Dense(self.dim, use_bias=False, dtype=self.dtype, name='to_out_0')(out)


def block_windows(x, w):
  """[N,H,W,C] -> [N*(H/w)*(W/w), w*w, C]: w x w blocks of neighbouring pixels."""
  n, h, wd, c = x.shape
  return x.reshape(n, h // w, w, wd // w, w, c).transpose(0, 1, 3, 2, 4, 5).reshape(-1, w * w, c)


def unblock_windows(t, shape, w):
  n, h, wd, c = shape
  return t.reshape(n, h // w, wd // w, w, w, c).transpose(0, 1, 3, 2, 4, 5).reshape(shape)


def grid_windows(x, w):
  """[N,H,W,C] -> [N*(H/w)*(W/w), w*w, C]: w x w pixels spaced H/w (W/w) apart (a sparse grid)."""
  n, h, wd, c = x.shape
  return x.reshape(n, w, h // w, w, wd // w, c).transpose(0, 2, 4, 1, 3, 5).reshape(-1, w * w, c)


def ungrid_windows(t, shape, w):
  n, h, wd, c = shape
  return t.reshape(n, h // w, wd // w, w, w, c).transpose(0, 3, 1, 4, 2, 5).reshape(shape)


class SpatialAttention(nn.Module):
  """PreNormResidual: LayerNorm, window ('block') or grid self-attention, plus the input."""
  dim: int
  window: int
  grid: bool
  pe: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, dtype=self.dtype, name='norm')(x)
    split, merge = (grid_windows, ungrid_windows) if self.grid else (block_windows, unblock_windows)
    y = Attention(self.dim, self.window, self.pe, self.dtype, name='fn')(split(y, self.window))
    return merge(y, x.shape, self.window) + x


def _l2_normalize(x, axis=-1):
  """F.normalize: x / max(||x||, 1e-12)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


class ChannelAttention(nn.Module):
  """Transposed (channel x channel) attention, 4 heads, on L2-normalised q, k with a learned
  temperature per head: within each w x w window (grid=False) or, for each position inside the
  windows, across all windows (grid=True). q, k, v from a 1x1 then a depthwise 3x3 conv."""
  dim: int
  window: int
  grid: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    n, h, w, c = x.shape
    heads, ps = 4, self.window
    d = c // heads
    temperature = self.param('temperature', nn.initializers.ones, (heads,), jnp.float32)
    qkv = depthwise3x3(3 * c, False, self.dtype, 'qkv_dwconv')(
        Conv1x1(3 * c, use_bias=False, dtype=self.dtype, name='qkv')(x))
    # [N, h/ps, ps, w/ps, ps, heads, d] -> groups x heads x d x (pixels of a group)
    order = (0, 2, 4, 5, 6, 1, 3) if self.grid else (0, 1, 3, 5, 6, 2, 4)
    q, k, v = (a.reshape(n, h // ps, ps, w // ps, ps, heads, d).transpose(order)
               for a in jnp.split(qkv, 3, axis=-1))
    grouped = q.shape
    q, k, v = (a.reshape(*grouped[:5], -1) for a in (q, k, v))
    q, k = _l2_normalize(q), _l2_normalize(k)
    attn = jnp.einsum('...id,...jd->...ij', q, k) * temperature[:, None, None].astype(q.dtype)
    out = jnp.einsum('...ij,...jd->...id', jax.nn.softmax(attn, axis=-1), v)
    out = out.reshape(grouped).transpose(np.argsort(order)).reshape(n, h, w, c)
    return Conv1x1(c, use_bias=False, dtype=self.dtype, name='project_out')(out)


class GatedConvFeedForward(nn.Module):
  """1x1 to 2*dim, depthwise 3x3, GELU(first half) * second half, 1x1 back (no biases)."""
  dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = Conv1x1(2 * self.dim, use_bias=False, dtype=self.dtype, name='project_in')(x)
    y1, y2 = jnp.split(depthwise3x3(2 * self.dim, False, self.dtype, 'dwconv')(y), 2, axis=-1)
    return Conv1x1(self.dim, use_bias=False, dtype=self.dtype, name='project_out')(gelu(y1) * y2)


class ConvPreNormResidual(nn.Module):
  """Channel LayerNorm (eps 1e-6), a channel attention or gated FFN (`fn`), plus the input."""
  dim: int
  window: int
  kind: str  # 'ffn' | 'channel' | 'channel_grid'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = LayerNorm2d(dtype=self.dtype, name='norm')(x)
    if self.kind == 'ffn':
      fn = GatedConvFeedForward(self.dim, self.dtype, name='fn')
    else:
      fn = ChannelAttention(self.dim, self.window, self.kind == 'channel_grid', self.dtype, name='fn')
    return fn(y) + x


class OSABlock(nn.Module):
  """Omni self-attention block: MBConv, then window and grid rounds of spatial attention, FFN,
  channel attention, FFN (parameter names `layer_i` as the reference's Sequential indices)."""
  dim: int
  window: int
  pe: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    args = (self.dim, self.window)
    x = MBConv(self.dim, self.dtype, name='layer_0')(x)
    for first, grid in ((2, False), (8, True)):
      x = SpatialAttention(*args, grid, self.pe, self.dtype, name=f'layer_{first}')(x)
      x = ConvPreNormResidual(*args, 'ffn', self.dtype, name=f'layer_{first + 2}')(x)
      kind = 'channel_grid' if grid else 'channel'
      x = ConvPreNormResidual(*args, kind, self.dtype, name=f'layer_{first + 3}')(x)
      x = ConvPreNormResidual(*args, 'ffn', self.dtype, name=f'layer_{first + 4}')(x)
    return x


class ESA(nn.Module):
  """Enhanced spatial attention (RFANet's, as Omni-SR trims it): 1x1 to f, strided 3x3, 7x7/3 max
  pool, 3x3, bilinear back to size, plus a 1x1 of the first features, 1x1 to C, sigmoid gate."""
  esa_channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    n, h, w, c = x.shape
    f = self.esa_channels
    c1_ = Conv1x1(f, dtype=self.dtype, name='conv1')(x)
    c1 = Conv(f, (3, 3), strides=2, padding=0, dtype=self.dtype, name='conv2')(c1_)
    v_max = nn.max_pool(c1, (7, 7), strides=(3, 3), padding='VALID')
    c3 = Conv3x3(f, dtype=self.dtype, name='conv3')(v_max)
    hh, ww = c3.shape[1:3]
    mh = torch_resize_matrix(hh, h, hh, h, 1).astype(c3.dtype)  # bilinear, align_corners=False
    mw = torch_resize_matrix(ww, w, ww, w, 1).astype(c3.dtype)
    c3 = jnp.einsum('oh,nhwc,pw->nopc', mh, c3, mw, precision='highest')
    cf = Conv1x1(f, dtype=self.dtype, name='conv_f')(c1_)
    c4 = Conv1x1(c, dtype=self.dtype, name='conv4')(c3 + cf)
    return x * jax.nn.sigmoid(c4)


class OSAG(nn.Module):
  """Omni self-attention group: block_num OSA blocks, a 1x1 conv, plus the input, then ESA."""
  dim: int = 64
  block_num: int = 1
  window: int = 8
  pe: bool = True
  bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = x
    for j in range(self.block_num):
      y = OSABlock(self.dim, self.window, self.pe, self.dtype, name=f'residual_layer_{j}')(y)
    y = Conv1x1(self.dim, use_bias=self.bias, dtype=self.dtype,
                name=f'residual_layer_{self.block_num}')(y)
    return ESA(max(self.dim // 4, 16), self.dtype, name='esa')(y + x)


class OmniSR(nn.Module):
  """LR image [N,h,w,3] in [0,1] -> SR image [N,h*scale,w*scale,3] (float32), any h, w >= 1.

  num_feat features (a multiple of 4: 4 heads), res_num OSAGs of block_num OSA blocks, attention
  windows of window_size (relative position bias when pe), biases on the head/OSAG/tail convs when
  bias. signed_input: the official Francis0625/Omni-SR checkpoints were trained and evaluated on
  images mapped to [-1, 1]; True feeds the network 2x - 1 and returns (y + 1) / 2 (spandrel,
  traiNNer-redux and neosr, and so the default, use [0, 1]). remat: rematerialise each OSAG.
  """
  num_feat: int = 64
  res_num: int = 5
  block_num: int = 1
  window_size: int = 8
  pe: bool = True
  bias: bool = True
  scale: int = 4
  signed_input: bool = False
  remat: bool = False
  dtype: Any = jnp.float32

  @property
  def input_multiple(self):
    """Windows tile the (padded) input: sides that are window multiples need no padding."""
    return self.window_size

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no BatchNorm or dropout
    if self.num_feat % 4:
      raise ValueError(f'OmniSR num_feat must be a multiple of 4 (4 heads), got {self.num_feat}.')
    n, h, w, _ = x.shape
    ws, s = self.window_size, self.scale
    if min(h + -h % ws, w + -w % ws) < ESA_MIN_SIDE:
      raise ValueError(f'OmniSR needs sides of at least {ESA_MIN_SIDE} after padding to a multiple of '
                       f'{ws} (its ESA pools a strided 3x3 by 7x7), got {h}x{w}.')
    x = x.astype(jnp.float32)
    if self.signed_input:
      x = 2 * x - 1
    x = jnp.pad(x, ((0, 0), (0, -h % ws), (0, -w % ws), (0, 0))).astype(self.dtype)
    residual = Conv3x3(self.num_feat, use_bias=self.bias, dtype=self.dtype, name='input')(x)
    group = nn.remat(OSAG) if self.remat else OSAG
    out = residual
    for i in range(self.res_num):
      out = group(self.num_feat, self.block_num, ws, self.pe, self.bias, self.dtype,
                  name=f'residual_layer_{i}')(out)
    out = Conv3x3(self.num_feat, use_bias=self.bias, dtype=self.dtype, name='output')(out) + residual
    out = Conv3x3(3 * s * s, use_bias=self.bias, dtype=self.dtype, name='up_0')(out)
    out = pixel_shuffle(out, s)[:, :h * s, :w * s].astype(jnp.float32)
    return (out + 1) / 2 if self.signed_input else out
