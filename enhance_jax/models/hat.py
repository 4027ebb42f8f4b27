"""HAT (Chen et al. 2023, "Activating More Pixels in Image Super-Resolution Transformer").

SwinIR's frame (conv, residual groups of window-attention blocks, pixel-shuffle head) with two
additions: each Hybrid Attention Block (HAB) adds a channel-attention conv branch (CAB, scaled by
conv_scale) beside its (shifted) window attention, and each Residual Hybrid Attention Group (RHAG)
ends with an Overlapping Cross-Attention Block (OCAB): queries from window x window tiles attend to
keys and values from the larger, overlapping (1 + overlap_ratio) x window windows around them.

Parameter names mirror XPixelGroup/HAT's module tree (spandrel's keys): `layers_0/residual_group/
blocks_1/conv_block/cab_3/attention_1` is `layers.0.residual_group.blocks.1.conv_block.cab.3.attention.1`,
`layers_0/residual_group/overlap_attn/qkv` is `layers.0.residual_group.overlap_attn.qkv`.
"""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from enhance_jax.models.swinir import (DIV2K_RGB_MEAN, TABLE_INIT, Conv1x1, Conv3x3, Dense, LayerNorm,
                                       Mlp, PatchEmbed, Upsample, WindowAttention, drop_path,
                                       drop_path_rates, gelu, pad_to_multiple, pixel_shuffle_scale,
                                       relative_position_bias, residual_conv, window_partition,
                                       window_reverse, window_self_attention, windowed_attention)

RESI_CONNECTIONS = ('1conv', 'identity')


@functools.lru_cache(maxsize=None)
def overlap_relative_position_index(window: int, overlap: int) -> np.ndarray:
  """[window^2, overlap^2] index into OCAB's (window+overlap-1)^2-row bias table, as HAT's
  calculate_rpi_oca computes it (some entries are negative: torch's indexing wraps them, and so does
  `relative_position_bias`)."""
  def grid(n):
    return np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing='ij')).reshape(2, -1)
  offsets = (grid(overlap)[:, None, :] - grid(window)[:, :, None]) + (window - overlap + 1)
  index = offsets[0] * (window + overlap - 1) + offsets[1]
  index.flags.writeable = False
  return index


def overlapping_windows(x, window, size):
  """[b, H, W, C] -> [b, nW, size*size, C]: around each window x window tile, the size x size window
  centred on it with zeros outside the map (torch's nn.Unfold(size, stride=window,
  padding=(size-window)//2)), by reshapes and slices of the padded map, no gather."""
  b, h, w, c = x.shape
  pad = (size - window) // 2
  tiles = -(-size // window)  # tiles one window spans
  nh, nw = h // window, w // window
  x = jnp.pad(x, ((0, 0), (pad, (nh + tiles) * window - h - pad), (pad, (nw + tiles) * window - w - pad),
                  (0, 0)))
  x = x.reshape(b, nh + tiles, window, nw + tiles, window, c)
  x = jnp.concatenate([x[:, j:j + nh] for j in range(tiles)], axis=2)[:, :, :size]
  x = jnp.concatenate([x[:, :, :, j:j + nw] for j in range(tiles)], axis=4)[:, :, :, :, :size]
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, nh * nw, size * size, c)


class ChannelAttention(nn.Module):
  """RCAN's channel attention: global average pool, 1x1 squeeze, ReLU, 1x1, sigmoid gate (torch
  Sequential indices 1 and 3)."""
  squeeze: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = jnp.mean(x.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(self.dtype)
    y = nn.relu(Conv1x1(self.squeeze, dtype=self.dtype, name='attention_1')(y))
    y = nn.sigmoid(Conv1x1(x.shape[-1], dtype=self.dtype, name='attention_3')(y))
    return x * y


class CAB(nn.Module):
  """Channel Attention Block: 3x3 to dim // compress_ratio, GELU, 3x3 back, channel attention."""
  compress_ratio: float = 3
  squeeze_factor: float = 30
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    dim = x.shape[-1]
    y = gelu(Conv3x3(int(dim // self.compress_ratio), dtype=self.dtype, name='cab_0')(x))
    y = Conv3x3(dim, dtype=self.dtype, name='cab_2')(y)
    return ChannelAttention(int(dim // self.squeeze_factor), self.dtype, name='cab_3')(y)


class HAB(nn.Module):
  """Hybrid Attention Block: LayerNorm, then (shifted) window attention plus conv_scale x CAB on the
  same normalised input, residual; LayerNorm, Mlp, residual."""
  num_heads: int
  window_size: int
  shift_size: int = 0
  compress_ratio: float = 3
  squeeze_factor: float = 30
  conv_scale: float = 0.01
  mlp_ratio: float = 2.0
  drop_path: float = 0.0
  deterministic: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = LayerNorm(dtype=self.dtype, name='norm1')(x)
    conv = CAB(self.compress_ratio, self.squeeze_factor, self.dtype, name='conv_block')(y)
    attn = WindowAttention(self.window_size, self.num_heads, self.dtype, name='attn')
    y = window_self_attention(attn, y, self.window_size, self.shift_size)
    x = x + drop_path(self, y, self.drop_path, self.deterministic) + conv * self.conv_scale
    y = Mlp(int(x.shape[-1] * self.mlp_ratio), self.dtype, name='mlp')(LayerNorm(dtype=self.dtype,
                                                                                name='norm2')(x))
    return x + drop_path(self, y, self.drop_path, self.deterministic)


class OCAB(nn.Module):
  """Overlapping Cross-Attention Block: queries of each window x window tile attend to keys/values of
  the overlapping window of int(overlap_ratio * window) + window around it, with a relative position
  bias; projection, residual; LayerNorm, Mlp, residual."""
  num_heads: int
  window_size: int
  overlap_ratio: float = 0.5
  mlp_ratio: float = 2.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    ws, n = self.window_size, self.num_heads
    size = int(ws * self.overlap_ratio) + ws
    if (size - ws) % 2:
      raise ValueError(f"HAT's overlapping windows grow the window by an even number of pixels, not "
                       f'{size - ws}.')
    table = self.param('relative_position_bias_table', TABLE_INIT, ((ws + size - 1) ** 2, n), jnp.float32)
    qkv = Dense(3 * c, dtype=self.dtype, name='qkv')(LayerNorm(dtype=self.dtype, name='norm1')(x))
    q = window_partition(qkv[..., :c], ws).reshape(b, -1, ws * ws, n, c // n)
    kv = overlapping_windows(qkv[..., c:], ws, size).reshape(b, -1, size * size, 2, n, c // n)
    bias = relative_position_bias(table, overlap_relative_position_index(ws, size))
    y = windowed_attention(q, kv[:, :, :, 0], kv[:, :, :, 1], bias)
    x = x + Dense(c, dtype=self.dtype, name='proj')(window_reverse(y, ws, h, w))
    return x + Mlp(int(c * self.mlp_ratio), self.dtype, name='mlp')(LayerNorm(dtype=self.dtype,
                                                                            name='norm2')(x))


class AttenBlocks(nn.Module):
  """`depth` HABs (odd ones on shifted windows), then one OCAB (`overlap_attn`)."""
  depth: int
  num_heads: int
  window_size: int
  compress_ratio: float = 3
  squeeze_factor: float = 30
  conv_scale: float = 0.01
  overlap_ratio: float = 0.5
  mlp_ratio: float = 2.0
  drop_paths: tuple = ()
  remat: bool = False
  deterministic: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    hab = nn.remat(HAB) if self.remat else HAB
    ocab = nn.remat(OCAB) if self.remat else OCAB
    for j in range(self.depth):
      x = hab(self.num_heads, self.window_size, 0 if j % 2 == 0 else self.window_size // 2,
              self.compress_ratio, self.squeeze_factor, self.conv_scale, self.mlp_ratio,
              self.drop_paths[j] if self.drop_paths else 0.0, self.deterministic, self.dtype,
              name=f'blocks_{j}')(x)
    return ocab(self.num_heads, self.window_size, self.overlap_ratio, self.mlp_ratio, self.dtype,
                name='overlap_attn')(x)


class RHAG(nn.Module):
  """Residual Hybrid Attention Group: AttenBlocks (`residual_group`), a conv, and the input added."""
  depth: int
  num_heads: int
  window_size: int
  compress_ratio: float = 3
  squeeze_factor: float = 30
  conv_scale: float = 0.01
  overlap_ratio: float = 0.5
  mlp_ratio: float = 2.0
  resi_connection: str = '1conv'
  drop_paths: tuple = ()
  remat: bool = False
  deterministic: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = AttenBlocks(self.depth, self.num_heads, self.window_size, self.compress_ratio, self.squeeze_factor,
                    self.conv_scale, self.overlap_ratio, self.mlp_ratio, self.drop_paths, self.remat,
                    self.deterministic, self.dtype, name='residual_group')(x)
    return x + residual_conv(self.resi_connection, x.shape[-1], self.dtype, 'conv')(y)


class HAT(nn.Module):
  """LR image [N,h,w,3] in [0,1] -> SR image [N,h*scale,w*scale,3] (float32).

  The input is shifted by the DIV2K mean, scaled by img_range and reflect-padded to window multiples;
  the output is cropped back. Defaults: HAT x4 (embed 180, 6 RHAG of 6 HABs, 6 heads, window 16,
  compress_ratio 3, squeeze_factor 30, conv_scale 0.01, overlap_ratio 0.5, mlp_ratio 2). HAT-S: embed
  144, compress_ratio 24, squeeze_factor 24; HAT-L: 12 RHAGs. resi_connection '1conv' or 'identity'.
  drop_path_rate: stochastic depth in training (0.1 in the official training).
  """
  embed_dim: int = 180
  depths: tuple = (6, 6, 6, 6, 6, 6)
  num_heads: tuple = (6, 6, 6, 6, 6, 6)
  window_size: int = 16
  compress_ratio: float = 3
  squeeze_factor: float = 30
  conv_scale: float = 0.01
  overlap_ratio: float = 0.5
  mlp_ratio: float = 2.0
  resi_connection: str = '1conv'
  num_feat: int = 64
  img_range: float = 1.0
  scale: int = 4
  drop_path_rate: float = 0.1
  remat: bool = False
  dtype: Any = jnp.float32

  @property
  def input_multiple(self):
    """Inputs are padded to window multiples; tiles and patches of that multiple need no padding."""
    return self.window_size

  def features(self, x, train):
    """Deep feature extraction: PatchEmbed's norm, the RHAGs, a LayerNorm."""
    x = PatchEmbed(self.dtype, name='patch_embed')(x)
    rates = drop_path_rates(self.drop_path_rate, self.depths)
    for i, (depth, heads) in enumerate(zip(self.depths, self.num_heads)):
      x = RHAG(depth, heads, self.window_size, self.compress_ratio, self.squeeze_factor, self.conv_scale,
               self.overlap_ratio, self.mlp_ratio, self.resi_connection, rates[i], self.remat, not train,
               self.dtype, name=f'layers_{i}')(x)
    return LayerNorm(dtype=self.dtype, name='norm')(x)

  def __post_init__(self):
    super().__post_init__()
    problem, grow = None, int(self.window_size * self.overlap_ratio)
    if self.resi_connection not in RESI_CONNECTIONS:
      problem = f'HAT resi_connection must be one of {RESI_CONNECTIONS}, got {self.resi_connection!r}'
    elif len(self.depths) != len(self.num_heads):
      problem = f'HAT depths {self.depths} and num_heads {self.num_heads} differ in length'
    elif grow % 2:
      problem = (f"HAT's overlapping windows grow the window by an even number of pixels: window "
                 f'{self.window_size} x overlap_ratio {self.overlap_ratio} gives {grow}')
    elif not pixel_shuffle_scale(self.scale):
      problem = f"HAT's pixel-shuffle upsampler is x2^n or x3, got x{self.scale}"
    if problem:
      raise ValueError(problem)

  @nn.compact
  def __call__(self, x, train: bool = False):
    h, w = x.shape[1:3]
    mean = jnp.asarray(DIV2K_RGB_MEAN, jnp.float32)
    x = pad_to_multiple((x.astype(jnp.float32) - mean) * self.img_range, self.window_size)
    feat = Conv3x3(self.embed_dim, dtype=self.dtype, name='conv_first')(x.astype(self.dtype))
    res = feat + residual_conv(self.resi_connection, self.embed_dim, self.dtype, 'conv_after_body')(
        self.features(feat, train))
    y = nn.leaky_relu(Conv3x3(self.num_feat, dtype=self.dtype, name='conv_before_upsample')(res), 0.01)
    y = Upsample(self.scale, self.num_feat, self.dtype, name='upsample')(y)
    y = Conv3x3(3, dtype=self.dtype, name='conv_last')(y)
    out = y.astype(jnp.float32) / self.img_range + mean
    return out[:, :h * self.scale, :w * self.scale]
