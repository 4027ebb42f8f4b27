"""SwinIR (Liang et al. 2021, "SwinIR: Image Restoration Using Swin Transformer").

A 3x3 conv, residual Swin Transformer blocks (RSTB: Swin Transformer layers of window self-attention,
every second one on windows shifted by half a window, then a conv) and a reconstruction head, on
features kept NHWC throughout. The pieces HAT reuses live here too: window partition and the shifted-
window mask (numpy constants at trace time), the relative position index, window attention through
`jax.nn.dot_product_attention` with the relative position bias (and the mask) as its `bias`, Mlp,
stochastic depth and the upsamplers.

Parameter names mirror JingyunLiang/SwinIR's module tree (spandrel's keys) so a file maps one to one:
`layers_0/residual_group/blocks_1/attn/qkv` is `layers.0.residual_group.blocks.1.attn.qkv`, a Sequential's
index j becomes `conv_j` (`conv_after_body.2` -> `conv_after_body/conv_2`, `upsample.2` -> `upsample/conv_1`
as in EDSR).
"""

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from enhance_jax.models import attention
from enhance_jax.models.layers import pixel_shuffle
from enhance_jax.ops.conv import Conv

Conv3x3 = functools.partial(Conv, kernel_size=(3, 3), padding=1)
Conv1x1 = functools.partial(Conv, kernel_size=(1, 1), padding=0)
LayerNorm = functools.partial(nn.LayerNorm, epsilon=1e-5)  # torch's eps
Dense = functools.partial(nn.Dense, kernel_init=nn.initializers.truncated_normal(0.02))
TABLE_INIT = nn.initializers.truncated_normal(0.02)  # the relative position bias tables

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
MASK_VALUE = -100.0  # the shifted-window mask's logit offset for token pairs from different regions
UPSAMPLERS = ('pixelshuffle', 'pixelshuffledirect', 'nearest+conv', '')
RESI_CONNECTIONS = ('1conv', '3conv')


def gelu(x):
  """torch's nn.GELU (the exact erf form)."""
  return nn.gelu(x, approximate=False)


# ---------------------------------------------------------------- trace-time constants (numpy)


@functools.lru_cache(maxsize=None)
def relative_position_index(window: int) -> np.ndarray:
  """[T, T] (T = window^2) index into the (2*window-1)^2-row bias table of each query/key pair's offset."""
  coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing='ij')).reshape(2, -1)
  offsets = (coords[:, :, None] - coords[:, None, :]) + (window - 1)  # [2, T, T], from 0
  index = offsets[0] * (2 * window - 1) + offsets[1]
  index.flags.writeable = False
  return index


@functools.lru_cache(maxsize=None)
def shifted_window_mask(height: int, width: int, window: int, shift: int) -> np.ndarray:
  """[nW, T, T] logit offsets of the shifted windows of a height x width map: MASK_VALUE between tokens
  that the cyclic shift brought from different image regions, 0 within one (Swin's attn_mask)."""
  regions = np.zeros((height, width), np.float32)
  bands = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
  for i, rows in enumerate(bands):
    for j, cols in enumerate(bands):
      regions[rows, cols] = 3 * i + j
  windows = window_partition(regions[None, :, :, None], window)[0, :, :, 0]  # [nW, T]
  mask = np.where(windows[:, None, :] != windows[:, :, None], MASK_VALUE, 0.0).astype(np.float32)
  mask.flags.writeable = False
  return mask


# ---------------------------------------------------------------- windows and attention


def window_partition(x, window):
  """[b, H, W, C] -> [b, nW, window*window, C], windows in row-major order (H, W multiples of window)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // window, window, w // window, window, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // window) * (w // window), window * window, c)


def window_reverse(windows, window, height, width):
  """window_partition's inverse: [b, nW, window*window, C] -> [b, height, width, C]."""
  b, _, _, c = windows.shape
  x = windows.reshape(b, height // window, width // window, window, window, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, height, width, c)


def relative_position_bias(table, index):
  """[heads, T, S] bias from a [rows, heads] table and a numpy [T, S] index (one gather per call)."""
  t, s = index.shape
  return jnp.take(table, jnp.asarray(index.reshape(-1) % table.shape[0]), axis=0).reshape(t, s, -1) \
      .transpose(2, 0, 1)


def windowed_attention(q, k, v, bias):
  """Multi-head attention inside each window: q [b, nW, T, heads, d], k and v [b, nW, S, heads, d],
  bias [heads, T, S] (shared by the windows) or [nW, heads, T, S] (per window) -> [b, nW, T, heads*d]."""
  b, nw, t, n, d = q.shape
  s = k.shape[2]
  out = attention.dot_product_attention(q.reshape(b * nw, t, n, d), k.reshape(b * nw, s, n, d),
                                       v.reshape(b * nw, s, n, d), bias=bias[None] if bias.ndim == 3 else bias)
  return out.reshape(b, nw, t, n * d)


def drop_path(module, x, rate, deterministic):
  """Stochastic depth (timm's DropPath): drops the residual branch X for a random subset of the batch,
  scaling the kept samples by 1/(1-rate); the identity when deterministic or rate is 0."""
  if deterministic or rate == 0.0:
    return x
  keep = jax.random.bernoulli(module.make_rng('dropout'), 1.0 - rate, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def drop_path_rates(rate, depths):
  """Per-block stochastic depth rates, rising linearly from 0 to RATE over all blocks, per group."""
  rates = np.linspace(0.0, rate, sum(depths)).tolist()
  starts = np.cumsum((0,) + tuple(depths)).tolist()
  return [tuple(rates[starts[i]:starts[i + 1]]) for i in range(len(depths))]


def pad_to_multiple(x, multiple):
  """Reflect-pads an NHWC batch at the bottom and right to sides that are multiples of MULTIPLE."""
  h, w = x.shape[1:3]
  pad_h, pad_w = -h % multiple, -w % multiple
  if not pad_h and not pad_w:
    return x
  return jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode='reflect')


class Mlp(nn.Module):
  """Linear to `hidden`, GELU, Linear back (the transformer's feed-forward network)."""
  hidden: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = gelu(Dense(self.hidden, dtype=self.dtype, name='fc1')(x))
    return Dense(x.shape[-1], dtype=self.dtype, name='fc2')(y)


class WindowAttention(nn.Module):
  """Window multi-head self-attention (W-MSA) with a learned relative position bias per head; an
  optional [nW, T, T] mask (shifted windows) is added to the logits with it."""
  window_size: int
  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, windows, mask=None):
    b, nw, t, c = windows.shape
    n = self.num_heads
    table = self.param('relative_position_bias_table', TABLE_INIT, ((2 * self.window_size - 1) ** 2, n),
                       jnp.float32)
    qkv = Dense(3 * c, dtype=self.dtype, name='qkv')(windows).reshape(b, nw, t, 3, n, c // n)
    bias = relative_position_bias(table, relative_position_index(self.window_size))
    if mask is not None:
      bias = bias[None] + jnp.asarray(mask)[:, None]
    out = windowed_attention(qkv[:, :, :, 0], qkv[:, :, :, 1], qkv[:, :, :, 2], bias)
    return Dense(c, dtype=self.dtype, name='proj')(out)


def window_self_attention(attn, x, window, shift):
  """ATTN (a WindowAttention) over the windows of X [b, H, W, C], cyclically shifted by SHIFT first
  (SW-MSA, with its mask) and shifted back after."""
  h, w = x.shape[1:3]
  if shift:
    x = jnp.roll(x, (-shift, -shift), axis=(1, 2))
  mask = shifted_window_mask(h, w, window, shift) if shift else None
  y = window_reverse(attn(window_partition(x, window), mask), window, h, w)
  return jnp.roll(y, (shift, shift), axis=(1, 2)) if shift else y


class SwinTransformerBlock(nn.Module):
  """LayerNorm, (shifted) window attention, residual; LayerNorm, Mlp, residual."""
  num_heads: int
  window_size: int
  shift_size: int = 0
  mlp_ratio: float = 2.0
  drop_path: float = 0.0
  deterministic: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    attn = WindowAttention(self.window_size, self.num_heads, self.dtype, name='attn')
    y = window_self_attention(attn, LayerNorm(dtype=self.dtype, name='norm1')(x), self.window_size,
                              self.shift_size)
    x = x + drop_path(self, y, self.drop_path, self.deterministic)
    y = Mlp(int(x.shape[-1] * self.mlp_ratio), self.dtype, name='mlp')(LayerNorm(dtype=self.dtype,
                                                                                name='norm2')(x))
    return x + drop_path(self, y, self.drop_path, self.deterministic)


class BasicLayer(nn.Module):
  """`depth` Swin Transformer blocks, odd ones on windows shifted by half a window."""
  depth: int
  num_heads: int
  window_size: int
  mlp_ratio: float = 2.0
  drop_paths: tuple = ()
  remat: bool = False
  deterministic: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    block = nn.remat(SwinTransformerBlock) if self.remat else SwinTransformerBlock
    for j in range(self.depth):
      x = block(self.num_heads, self.window_size, 0 if j % 2 == 0 else self.window_size // 2,
                self.mlp_ratio, self.drop_paths[j] if self.drop_paths else 0.0, self.deterministic,
                self.dtype, name=f'blocks_{j}')(x)
    return x


class ThreeConv(nn.Module):
  """SwinIR's '3conv' residual connection (fewer parameters than one 3x3 of `dim`): 3x3 to dim/4,
  LeakyReLU 0.2, 1x1, LeakyReLU 0.2, 3x3 back to dim (torch Sequential indices 0, 2, 4)."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    dim = x.shape[-1]
    y = nn.leaky_relu(Conv3x3(dim // 4, dtype=self.dtype, name='conv_0')(x), 0.2)
    y = nn.leaky_relu(Conv1x1(dim // 4, dtype=self.dtype, name='conv_2')(y), 0.2)
    return Conv3x3(dim, dtype=self.dtype, name='conv_4')(y)


def residual_conv(resi_connection, dim, dtype, name):
  """The conv before a residual connection: '1conv' (one 3x3), '3conv' (ThreeConv), 'identity' (HAT)."""
  if resi_connection == '1conv':
    return Conv3x3(dim, dtype=dtype, name=name)
  if resi_connection == '3conv':
    return ThreeConv(dtype, name=name)
  if resi_connection == 'identity':
    return lambda x: x
  raise ValueError(f"resi_connection must be '1conv', '3conv' or 'identity', got {resi_connection!r}.")


class RSTB(nn.Module):
  """Residual Swin Transformer Block: a BasicLayer (`residual_group`), a conv, and the input added."""
  depth: int
  num_heads: int
  window_size: int
  mlp_ratio: float = 2.0
  resi_connection: str = '1conv'
  drop_paths: tuple = ()
  remat: bool = False
  deterministic: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = BasicLayer(self.depth, self.num_heads, self.window_size, self.mlp_ratio, self.drop_paths,
                   self.remat, self.deterministic, self.dtype, name='residual_group')(x)
    return x + residual_conv(self.resi_connection, x.shape[-1], self.dtype, 'conv')(y)


class PatchEmbed(nn.Module):
  """Swin's patch embedding at patch size 1: a LayerNorm over each pixel's features."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    return LayerNorm(dtype=self.dtype, name='norm')(x)


def pixel_shuffle_factors(scale):
  """The x2 stages of a scale 2^n, or (3,) for x3; () for any other scale."""
  if scale == 3:
    return (3,)
  if scale > 1 and not scale & (scale - 1):
    return (2,) * int(math.log2(scale))
  return ()


def pixel_shuffle_scale(scale):
  """Whether the pixel-shuffle upsampler (Upsample) builds SCALE."""
  return scale == 1 or bool(pixel_shuffle_factors(scale))


class Upsample(nn.Module):
  """Pixel-shuffle upsampler: x2 stages of conv to 4*num_feat + shuffle (scale 2^n), or one x3 stage."""
  scale: int
  num_feat: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    factors = pixel_shuffle_factors(self.scale)
    if not factors and self.scale != 1:
      raise ValueError(f'the pixel-shuffle upsampler supports scales 2^n and 3, got {self.scale}.')
    for j, f in enumerate(factors):
      x = pixel_shuffle(Conv3x3(f * f * self.num_feat, dtype=self.dtype, name=f'conv_{j}')(x), f)
    return x


class UpsampleOneStep(nn.Module):
  """Lightweight SwinIR's upsampler: one conv to scale^2 * out_channels and one pixel shuffle."""
  scale: int
  out_channels: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = Conv3x3(self.scale ** 2 * self.out_channels, dtype=self.dtype, name='conv_0')(x)
    return pixel_shuffle(y, self.scale)


def nearest_x2(x):
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class SwinIR(nn.Module):
  """LR image [N,h,w,3] in [0,1] -> SR image [N,h*scale,w*scale,3] (float32).

  The input is reflect-padded to window multiples, shifted by the DIV2K mean and scaled by img_range;
  the output is cropped back. Defaults: classical SwinIR x4 (embed 180, 6 RSTB of 6 blocks, 6 heads,
  window 8, mlp ratio 2, 'pixelshuffle', '1conv'). Lightweight: embed 60, depths/heads (6,)*4,
  'pixelshuffledirect'. Real-world: 'nearest+conv' (x2/x4/x8), SwinIR-L with '3conv'. upsampler ''
  (scale 1): denoising / JPEG artifact removal, the input added to the output.
  img_size: the training patch the released file was built for; it only sets the shape of the file's
  stored attn_mask buffers (masks are computed for each input's size), never the output.
  drop_path_rate: stochastic depth in training (0.1 in the official training).
  """
  embed_dim: int = 180
  depths: tuple = (6, 6, 6, 6, 6, 6)
  num_heads: tuple = (6, 6, 6, 6, 6, 6)
  window_size: int = 8
  mlp_ratio: float = 2.0
  upsampler: str = 'pixelshuffle'
  resi_connection: str = '1conv'
  img_range: float = 1.0
  img_size: int = 64
  scale: int = 4
  drop_path_rate: float = 0.1
  remat: bool = False
  dtype: Any = jnp.float32

  @property
  def input_multiple(self):
    """Inputs are padded to window multiples; tiles and patches of that multiple need no padding."""
    return self.window_size

  def __post_init__(self):
    super().__post_init__()
    problem = None
    if self.upsampler not in UPSAMPLERS:
      problem = f'SwinIR upsampler must be one of {UPSAMPLERS}, got {self.upsampler!r}'
    elif self.resi_connection not in RESI_CONNECTIONS:
      problem = f'SwinIR resi_connection must be one of {RESI_CONNECTIONS}, got {self.resi_connection!r}'
    elif len(self.depths) != len(self.num_heads):
      problem = f'SwinIR depths {self.depths} and num_heads {self.num_heads} differ in length'
    elif (self.upsampler == '') != (self.scale == 1):
      problem = (f"SwinIR's upsampler '' (restoration) is scale 1 and the others enlarge: got upsampler "
                 f'{self.upsampler!r} at scale {self.scale}')
    elif self.upsampler == 'nearest+conv' and self.scale not in (2, 4, 8):
      problem = f"SwinIR's 'nearest+conv' upsampler is x2, x4 or x8, got x{self.scale}"
    elif self.upsampler == 'pixelshuffle' and not pixel_shuffle_scale(self.scale):
      problem = f"SwinIR's 'pixelshuffle' upsampler is x2^n or x3, got x{self.scale}"
    if problem:
      raise ValueError(problem)

  def features(self, x, train):
    """Deep feature extraction: PatchEmbed's norm, the RSTBs, a LayerNorm."""
    x = PatchEmbed(self.dtype, name='patch_embed')(x)
    rates = drop_path_rates(self.drop_path_rate, self.depths)
    for i, (depth, heads) in enumerate(zip(self.depths, self.num_heads)):
      x = RSTB(depth, heads, self.window_size, self.mlp_ratio, self.resi_connection, rates[i],
               self.remat, not train, self.dtype, name=f'layers_{i}')(x)
    return LayerNorm(dtype=self.dtype, name='norm')(x)

  @nn.compact
  def __call__(self, x, train: bool = False):
    h, w = x.shape[1:3]
    mean = jnp.asarray(DIV2K_RGB_MEAN, jnp.float32)
    x = (pad_to_multiple(x.astype(jnp.float32), self.window_size) - mean) * self.img_range
    x = x.astype(self.dtype)
    feat = Conv3x3(self.embed_dim, dtype=self.dtype, name='conv_first')(x)
    res = feat + residual_conv(self.resi_connection, self.embed_dim, self.dtype, 'conv_after_body')(
        self.features(feat, train))
    num_feat = 64
    if self.upsampler == 'pixelshuffle':
      y = nn.leaky_relu(Conv3x3(num_feat, dtype=self.dtype, name='conv_before_upsample')(res), 0.01)
      y = Upsample(self.scale, num_feat, self.dtype, name='upsample')(y)
      y = Conv3x3(3, dtype=self.dtype, name='conv_last')(y)
    elif self.upsampler == 'pixelshuffledirect':
      y = UpsampleOneStep(self.scale, 3, self.dtype, name='upsample')(res)
    elif self.upsampler == 'nearest+conv':
      y = nn.leaky_relu(Conv3x3(num_feat, dtype=self.dtype, name='conv_before_upsample')(res), 0.01)
      for k in range(1, int(math.log2(self.scale)) + 1):
        y = nn.leaky_relu(Conv3x3(num_feat, dtype=self.dtype, name=f'conv_up{k}')(nearest_x2(y)), 0.2)
      y = nn.leaky_relu(Conv3x3(num_feat, dtype=self.dtype, name='conv_hr')(y), 0.2)
      y = Conv3x3(3, dtype=self.dtype, name='conv_last')(y)
    else:
      y = x + Conv3x3(3, dtype=self.dtype, name='conv_last')(res)
    out = y.astype(jnp.float32) / self.img_range + mean
    return out[:, :h * self.scale, :w * self.scale]
