"""DAT, the Dual Aggregation Transformer (Chen et al. 2023, "Dual Aggregation Transformer for Image
Super-Resolution"; zhengchen1999/DAT, spandrel's DAT).

Residual groups of Transformer blocks that alternate two self-attentions: spatial-window attention
(DSTB, even blocks: half the channels in hs x ws windows, half in ws x hs windows, with a dynamic
position bias, shifted windows in every other DSTB) and channel-wise attention (DCTB, odd blocks:
attention between channels over all pixels). Both run beside a depthwise-conv branch on V, and an
adaptive interaction module (AIM) gates each branch by a map of the other; the feed-forward is the
spatial-gate FFN (SGFN). Inputs of any size: the window attention pads its q, k, v to a multiple of
the larger split side and crops, as the reference does.

Parameter names are the PyTorch keys with a '.' before an index written '_' and other dots '/':
`layers.0.blocks.2.attn.attns.1.pos.pos3.2.weight` -> `layers_0/blocks_2/attn/attns_1/pos/pos3_2`
(io/weights/dat.py maps them). The published sizes are in VARIANTS.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from enhance_jax.models import attention
from enhance_jax.models.layers import batch_norm, pixel_shuffle
from enhance_jax.ops.conv import Conv

Conv1x1 = functools.partial(Conv, kernel_size=(1, 1), padding=0)
Conv3x3 = functools.partial(Conv, kernel_size=(3, 3), padding=1)
LayerNorm = functools.partial(nn.LayerNorm, epsilon=1e-5)  # torch's eps
Dense = functools.partial(nn.Dense, kernel_init=nn.initializers.normal(0.02))  # upstream's Linear init
RGB_MEAN = (0.4488, 0.4371, 0.4040)  # DIV2K mean, subtracted from 3-channel inputs
NUM_FEAT = 64  # width of the pixel-shuffle upsampler (fixed upstream)
UPSAMPLERS = ('pixelshuffle', 'pixelshuffledirect')
RESI_CONNECTIONS = ('1conv', '3conv')

# The published networks (zhengchen1999/DAT options/Test/*.yml); all have img_range 1 and img_size 64.
_SIX = (6, 6, 6, 6, 6, 6)
VARIANTS = {
    'dat_s': dict(embed_dim=180, depths=_SIX, num_heads=_SIX, split_size=(8, 16), expansion_factor=2.0),
    'dat': dict(embed_dim=180, depths=_SIX, num_heads=_SIX, split_size=(8, 32), expansion_factor=4.0),
    'dat_2': dict(embed_dim=180, depths=_SIX, num_heads=_SIX, split_size=(8, 32), expansion_factor=2.0),
    'dat_light': dict(embed_dim=60, depths=(18,), num_heads=(6,), split_size=(8, 32),
                      expansion_factor=2.0, resi_connection='3conv', upsampler='pixelshuffledirect'),
}


def gelu(x):
  return nn.gelu(x, approximate=False)  # torch nn.GELU(): the exact erf form


# ---------------------------------------------------------------- windows (numpy constants at trace time)


def window_partition(x, hs, ws):
  """[B, H, W, ...] -> [B * H/hs * W/ws, hs * ws, ...]: windows in row-major order, as img2windows."""
  b, h, w, *rest = x.shape
  x = x.reshape(b, h // hs, hs, w // ws, ws, *rest)
  return jnp.moveaxis(x, 2, 3).reshape(b * (h // hs) * (w // ws), hs * ws, *rest)


def window_merge(x, hs, ws, h, w):
  """The inverse of window_partition: [B * H/hs * W/ws, hs * ws, C] -> [B, H, W, C]."""
  c = x.shape[-1]
  x = x.reshape(-1, h // hs, w // ws, hs, ws, c)
  return jnp.moveaxis(x, 3, 2).reshape(-1, h, w, c)


@functools.cache
def relative_coordinates(hs, ws):
  """[(2hs-1)(2ws-1), 2] float32: every (dy, dx) offset inside an hs x ws window (the reference's
  `rpe_biases` buffer), the input of the dynamic position bias."""
  dy, dx = np.meshgrid(np.arange(1 - hs, hs), np.arange(1 - ws, ws), indexing='ij')
  return np.stack([dy.ravel(), dx.ravel()], axis=1).astype(np.float32)


@functools.cache
def relative_position_index(hs, ws):
  """[N, N] int: the row of relative_coordinates for each (query, key) pair of an hs x ws window."""
  coords = np.stack(np.meshgrid(np.arange(hs), np.arange(ws), indexing='ij')).reshape(2, -1)
  rel = coords[:, :, None] - coords[:, None, :]
  return (rel[0] + hs - 1) * (2 * ws - 1) + rel[1] + ws - 1


@functools.cache
def shift_mask(h, w, hs, ws, sh, sw):
  """[nW, N, N] float32: -100 between tokens of a shifted hs x ws window that came from different
  regions of the (sh, sw)-rolled H x W image, else 0 (Swin's mask)."""
  regions = np.zeros((h, w), np.float32)
  cuts = lambda n, s, t: (slice(0, n - s), slice(n - s, n - t), slice(n - t, n))
  for i, (rows, cols) in enumerate((r, c) for r in cuts(h, hs, sh) for c in cuts(w, ws, sw)):
    regions[rows, cols] = i
  windows = regions.reshape(h // hs, hs, w // ws, ws).transpose(0, 2, 1, 3).reshape(-1, hs * ws)
  return np.where(windows[:, None, :] != windows[:, :, None], -100.0, 0.0).astype(np.float32)


def is_shifted(rg_idx, b_idx):
  """Whether block b_idx of residual group rg_idx shifts its windows (DSTBs 2, 6, ... of even groups,
  0, 4, ... of odd groups)."""
  return (rg_idx % 2 == 0 and b_idx > 0 and (b_idx - 2) % 4 == 0) or (rg_idx % 2 == 1 and b_idx % 4 == 0)


# ---------------------------------------------------------------- attention


class DynamicPosBias(nn.Module):
  """Dynamic position bias (CrossFormer's DPB, not residual): an MLP from each relative (dy, dx)
  offset to one bias per head, so one set of weights serves any window."""
  pos_dim: int
  num_heads: int

  @nn.compact
  def __call__(self, coords):
    pos = Dense(self.pos_dim, name='pos_proj')(coords)
    for i, width in ((1, self.pos_dim), (2, self.pos_dim), (3, self.num_heads)):
      pos = nn.relu(LayerNorm(name=f'pos{i}_0')(pos))
      pos = Dense(width, name=f'pos{i}_2')(pos)
    return pos


class SpatialAttention(nn.Module):
  """One branch of the spatial attention: its window's position bias [heads, N, N], the DPB run once
  over the (2hs-1)(2ws-1) offsets and gathered by a constant index (not per window)."""
  window: tuple[int, int]
  num_heads: int
  pos_dim: int

  @nn.compact
  def __call__(self):
    hs, ws = self.window
    pos = DynamicPosBias(self.pos_dim, self.num_heads, name='pos')(relative_coordinates(hs, ws))
    n = hs * ws
    return pos[relative_position_index(hs, ws).reshape(-1)].reshape(n, n, -1).transpose(2, 0, 1)


def channel_interaction(x, train, dtype):
  """AIM's C-map (channel_interaction.1/.2/.4): mean over pixels, 1x1 to C/8, BN, GELU, 1x1 back."""
  c = x.shape[-1]
  y = Conv1x1(c // 8, dtype=dtype, name='channel_interaction_1')(x.mean((1, 2), keepdims=True))
  y = gelu(batch_norm(train, dtype, 'channel_interaction_2')(y))
  return Conv1x1(c, dtype=dtype, name='channel_interaction_4')(y)


def spatial_interaction(x, train, dtype):
  """AIM's S-map (spatial_interaction.0/.1/.3): 1x1 to C/16, BN, GELU, 1x1 to one channel."""
  y = Conv1x1(x.shape[-1] // 16, dtype=dtype, name='spatial_interaction_0')(x)
  y = gelu(batch_norm(train, dtype, 'spatial_interaction_1')(y))
  return Conv1x1(1, dtype=dtype, name='spatial_interaction_3')(y)


def conv_branch(v, train, dtype):
  """The convolution branch beside an attention (dwconv.0/.1): depthwise 3x3 on V, BN, GELU."""
  c = v.shape[-1]
  y = Conv3x3(c, feature_group_count=c, dtype=dtype, name='dwconv_0')(v)
  return gelu(batch_norm(train, dtype, 'dwconv_1')(y))


class AdaptiveSpatialAttention(nn.Module):
  """DSTB's attention: channels [:C/2] in hs x ws windows, [C/2:] in ws x hs windows (both halves in
  one dot_product_attention, their heads side by side), optionally shifted by half a window; then the
  AIM with the conv branch: attention x sigmoid(C-map of conv), conv x sigmoid(S-map of attention)."""
  num_heads: int
  split_size: tuple[int, int]
  qkv_bias: bool = True
  shifted: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train=False):
    b, h, w, c = x.shape
    (s0, s1), half, heads = self.split_size, c // 2, self.num_heads // 2
    qkv = Dense(3 * c, use_bias=self.qkv_bias, dtype=self.dtype, name='qkv')(x).reshape(b, h, w, 3, c)
    conv_x = conv_branch(qkv[..., 2, :], train, self.dtype)
    side = max(s0, s1)  # zero-pad q, k, v (after the projection) to a multiple of the larger side
    hp, wp = -(-h // side) * side, -(-w // side) * side
    qkv = jnp.pad(qkv, ((0, 0), (0, hp - h), (0, wp - w), (0, 0), (0, 0)))
    windows = ((s0, s1), (s1, s0))
    shifts = ((s0 // 2, s1 // 2), (s1 // 2, s0 // 2)) if self.shifted else ((0, 0), (0, 0))
    n, parts, biases = s0 * s1, [], []
    for j, (window, shift) in enumerate(zip(windows, shifts)):
      part = jnp.roll(qkv[..., j * half:(j + 1) * half], (-shift[0], -shift[1]), axis=(1, 2))
      parts.append(window_partition(part, *window).reshape(-1, n, 3, heads, half // heads))
      bias = SpatialAttention(window, heads, half // 4 // 4, name=f'attns_{j}')()[None]
      if self.shifted:
        bias = bias + shift_mask(hp, wp, *window, *shift)[:, None]
      biases.append(bias)
    qkv = jnp.concatenate(parts, axis=3)  # [B*nW, N, 3, heads of both branches, head_dim]
    bias = jnp.concatenate(biases, axis=1)
    out = attention.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], bias=bias,
                                         scale=(half // heads) ** -0.5)  # bias [1 or nW, ...]
    branches = []
    for j, (window, shift) in enumerate(zip(windows, shifts)):
      y = window_merge(out[:, :, j * heads:(j + 1) * heads].reshape(-1, n, half), *window, hp, wp)
      branches.append(jnp.roll(y, shift, axis=(1, 2))[:, :h, :w])
    attened_x = jnp.concatenate(branches, axis=-1)
    channel_map = channel_interaction(conv_x, train, self.dtype)
    spatial_map = spatial_interaction(attened_x, train, self.dtype)
    y = attened_x * nn.sigmoid(channel_map) + conv_x * nn.sigmoid(spatial_map)
    return Dense(c, dtype=self.dtype, name='proj')(y)


def unit_over_pixels(t):
  """[B, N, heads, d] divided by its norm over the N pixels (F.normalize's eps 1e-12), in float32."""
  t = t.astype(jnp.float32)
  return t / jnp.maximum(jnp.linalg.norm(t, axis=1, keepdims=True), 1e-12)


class AdaptiveChannelAttention(nn.Module):
  """DCTB's attention (XCiT's cross-covariance attention): per head, softmax(temperature x cosine
  of q and k channels over all pixels) mixes v's channels; AIM as the spatial one, the maps swapped:
  attention x sigmoid(S-map of conv), conv x sigmoid(C-map of attention)."""
  num_heads: int
  qkv_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train=False):
    b, h, w, c = x.shape
    nh = self.num_heads
    temperature = self.param('temperature', nn.initializers.ones, (nh, 1, 1), jnp.float32)
    qkv = Dense(3 * c, use_bias=self.qkv_bias, dtype=self.dtype, name='qkv')(x)
    qkv = qkv.reshape(b, h * w, 3, nh, c // nh)
    q, k = (unit_over_pixels(qkv[:, :, i]).astype(self.dtype) for i in (0, 1))
    attn = jnp.einsum('bnhd,bnhe->bhde', q, k, preferred_element_type=jnp.float32) * temperature
    attn = jax.nn.softmax(attn, axis=-1).astype(self.dtype)
    attened_x = jnp.einsum('bhde,bnhe->bnhd', attn, qkv[:, :, 2]).reshape(b, h, w, c)
    conv_x = conv_branch(qkv[:, :, 2].reshape(b, h, w, c), train, self.dtype)
    channel_map = channel_interaction(attened_x, train, self.dtype)
    spatial_map = spatial_interaction(conv_x, train, self.dtype)
    y = attened_x * nn.sigmoid(spatial_map) + conv_x * nn.sigmoid(channel_map)
    return Dense(c, dtype=self.dtype, name='proj')(y)


class SGFN(nn.Module):
  """Spatial-gate feed-forward network: fc1 to `hidden`, GELU, the second half of the channels
  through LayerNorm and a depthwise 3x3 (sg.norm, sg.conv) gates the first half, fc2 back."""
  hidden: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c, half = x.shape[-1], self.hidden // 2
    y = gelu(Dense(self.hidden, dtype=self.dtype, name='fc1')(x))
    gate = SpatialGate(half, self.dtype, name='sg')(y[..., half:])
    return Dense(c, dtype=self.dtype, name='fc2')(y[..., :half] * gate)


class SpatialGate(nn.Module):
  """SGFN's gate: LayerNorm then a depthwise 3x3 convolution."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = LayerNorm(dtype=self.dtype, name='norm')(x)
    return Conv3x3(self.features, feature_group_count=self.features, dtype=self.dtype, name='conv')(x)


class DATB(nn.Module):
  """Dual aggregation Transformer block: x + attn(norm1(x)), then x + SGFN(norm2(x)), each branch
  dropped per sample with probability `drop_path` in training (stochastic depth). Even b_idx: the
  spatial attention (DSTB), odd: the channel attention (DCTB)."""
  num_heads: int
  split_size: tuple[int, int]
  expansion_factor: float
  qkv_bias: bool
  rg_idx: int
  b_idx: int
  drop_path: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train=False):
    if self.b_idx % 2 == 0:
      attn = AdaptiveSpatialAttention(self.num_heads, self.split_size, self.qkv_bias,
                                      is_shifted(self.rg_idx, self.b_idx), self.dtype, name='attn')
    else:
      attn = AdaptiveChannelAttention(self.num_heads, self.qkv_bias, self.dtype, name='attn')
    drop = nn.Dropout(self.drop_path, broadcast_dims=(1, 2, 3), deterministic=not train)
    x = x + drop(attn(LayerNorm(dtype=self.dtype, name='norm1')(x), train))
    ffn = SGFN(int(x.shape[-1] * self.expansion_factor), self.dtype, name='ffn')
    return x + drop(ffn(LayerNorm(dtype=self.dtype, name='norm2')(x)))


def residual_conv(x, kind, dtype, name):
  """The conv closing a residual group or the body: '1conv' one 3x3 (`name`); '3conv' 3x3 to C/4,
  LeakyReLU 0.2, 1x1, LeakyReLU 0.2, 3x3 back (`name_0`, `name_2`, `name_4`)."""
  c = x.shape[-1]
  if kind == '1conv':
    return Conv3x3(c, dtype=dtype, name=name)(x)
  y = nn.leaky_relu(Conv3x3(c // 4, dtype=dtype, name=f'{name}_0')(x), 0.2)
  y = nn.leaky_relu(Conv1x1(c // 4, dtype=dtype, name=f'{name}_2')(y), 0.2)
  return Conv3x3(c, dtype=dtype, name=f'{name}_4')(y)


class ResidualGroup(nn.Module):
  """`depth` DATBs and a residual conv, around one skip connection."""
  depth: int
  num_heads: int
  split_size: tuple[int, int]
  expansion_factor: float
  qkv_bias: bool
  rg_idx: int
  drop_paths: tuple[float, ...]
  resi_connection: str = '1conv'
  remat: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train=False):
    block = nn.remat(DATB, static_argnums=(2,)) if self.remat else DATB
    y = x
    for i in range(self.depth):
      y = block(self.num_heads, self.split_size, self.expansion_factor, self.qkv_bias, self.rg_idx, i,
                self.drop_paths[i], self.dtype, name=f'blocks_{i}')(y, train)
    return x + residual_conv(y, self.resi_connection, self.dtype, 'conv')


class DAT(nn.Module):
  """LR image [N,h,w,3] in [0,1] -> SR image [N,h*scale,w*scale,3] (float32).

  Mean shift, conv_first, LayerNorm, the residual groups (`depths[i]` blocks with `num_heads[i]`
  heads), LayerNorm, conv_after_body plus the shallow features, then 'pixelshuffle' (3x3 conv to 64,
  LeakyReLU 0.01, x2 conv+shuffle stages or one x3, conv_last) or 'pixelshuffledirect' (one conv to
  3*scale^2 and a shuffle). split_size: (hs, ws) of the spatial windows (the second half of the
  channels uses ws x hs). img_size: the side the stored shifted-window masks were made for (the
  weights files hold them; the masks are computed here for each input size, so it changes nothing).
  drop_path_rate: stochastic depth, rising linearly to it over the blocks (0.1 upstream; training
  only).
  """
  embed_dim: int = 180
  depths: tuple[int, ...] = _SIX
  num_heads: tuple[int, ...] = _SIX
  split_size: tuple[int, int] = (8, 32)
  expansion_factor: float = 4.0
  qkv_bias: bool = True
  resi_connection: str = '1conv'
  upsampler: str = 'pixelshuffle'
  img_size: int = 64
  scale: int = 4
  img_range: float = 1.0
  drop_path_rate: float = 0.1
  remat: bool = False
  dtype: Any = jnp.float32

  @property
  def input_multiple(self):
    """The spatial attention pads every side to a multiple of the larger split side."""
    return max(self.split_size)

  def check(self):
    if self.upsampler not in UPSAMPLERS or self.resi_connection not in RESI_CONNECTIONS:
      raise ValueError(f'DAT upsampler must be one of {UPSAMPLERS} and resi_connection one of '
                       f'{RESI_CONNECTIONS}, got {self.upsampler!r}, {self.resi_connection!r}.')
    if len(self.depths) != len(self.num_heads) or len(self.split_size) != 2:
      raise ValueError(f'DAT needs one num_heads per group and two split sides, got depths '
                       f'{self.depths}, num_heads {self.num_heads}, split_size {self.split_size}.')
    if max(self.split_size) % min(self.split_size):
      raise ValueError(f'DAT pads to the larger split side, which must be a multiple of the '
                       f'smaller: split_size {self.split_size}.')
    for nh in self.num_heads:
      if nh % 2 or self.embed_dim % nh or (self.embed_dim // 2) % (nh // 2):
        raise ValueError(f'DAT num_heads must be even and divide embed_dim={self.embed_dim} (and '
                         f'half of them its half), got {nh}.')
    if self.embed_dim // 2 // 4 // 4 < 1:
      raise ValueError(f'DAT embed_dim={self.embed_dim} leaves its position-bias MLP no width '
                       '(embed_dim / 32 features); use an embed_dim of at least 32.')
    doublings = self.scale.bit_length() - 1
    if self.upsampler == 'pixelshuffle' and self.scale != 3 and 2 ** doublings != self.scale:
      raise ValueError(f"DAT's pixelshuffle upsampler takes a power of two or 3, got {self.scale}.")

  @nn.compact
  def __call__(self, x, train: bool = False):
    self.check()
    mean = jnp.asarray(RGB_MEAN, jnp.float32)
    x = ((x.astype(jnp.float32) - mean) * self.img_range).astype(self.dtype)
    feat = Conv3x3(self.embed_dim, dtype=self.dtype, name='conv_first')(x)
    y = LayerNorm(dtype=self.dtype, name='before_RG_1')(feat)
    rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths)).tolist()
    for i, (depth, heads) in enumerate(zip(self.depths, self.num_heads)):
      start = sum(self.depths[:i])
      y = ResidualGroup(depth, heads, tuple(self.split_size), self.expansion_factor, self.qkv_bias, i,
                        tuple(rates[start:start + depth]), self.resi_connection, self.remat,
                        self.dtype, name=f'layers_{i}')(y, train)
    y = LayerNorm(dtype=self.dtype, name='norm')(y)
    feat = feat + residual_conv(y, self.resi_connection, self.dtype, 'conv_after_body')
    if self.upsampler == 'pixelshuffledirect':
      out = Conv3x3(3 * self.scale ** 2, dtype=self.dtype, name='upsample_0')(feat)
      out = pixel_shuffle(out, self.scale)
    else:
      out = nn.leaky_relu(Conv3x3(NUM_FEAT, dtype=self.dtype, name='conv_before_upsample_0')(feat), 0.01)
      factors = (3,) if self.scale == 3 else (2,) * (self.scale.bit_length() - 1)
      for j, f in enumerate(factors):
        out = pixel_shuffle(Conv3x3(NUM_FEAT * f * f, dtype=self.dtype, name=f'upsample_{2 * j}')(out), f)
      out = Conv3x3(3, dtype=self.dtype, name='conv_last')(out)
    return out.astype(jnp.float32) / self.img_range + mean
