"""RealPLKSR (traiNNer-redux's variant of PLKSR, "Partial Large Kernel CNNs for Efficient
Super-Resolution", Lee et al. 2024): a 3x3 head, n_blocks PLK blocks, a 3x3 conv to 3*scale^2
channels plus the channel-repeated input, then a pixel shuffle or a DySample upsampler.

A PLK block: [LayerNorm] -> DCCM (3x3 to 2*dim, Mish, 3x3 back) -> a kernel_size^2 conv over the first
dim*split_ratio channels only (partial large kernel) -> element-wise attention (x * sigmoid(3x3 x))
-> 1x1 refine -> [GroupNorm], plus the block's input. The layer_norm option swaps the GroupNorm for a
channel LayerNorm at the block's start. Names mirror spandrel's `feats` Sequential: the head is
feats_0, block i is feats_{i+1}, the tail conv feats_{n_blocks+2} (feats_{n_blocks+1} is Dropout2d).
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from enhance_jax.models.layers import pixel_shuffle
from enhance_jax.ops.conv import Conv

Conv3x3 = functools.partial(Conv, kernel_size=(3, 3), padding=1)
Conv1x1 = functools.partial(Conv, kernel_size=(1, 1), padding=0)
UPSAMPLERS = ('pixelshuffle', 'dysample')
# traiNNer-redux's initialisation: trunc_normal_(std=0.02) on the head, tail, DCCM's second conv, the
# large kernel, EA and refine (truncated at +-2, i.e. 100 std: a plain normal), DySample's scope at 0.
SMALL_INIT = nn.initializers.normal(0.02)


def mish(x):
  """x * tanh(softplus(x)) (torch.nn.Mish)."""
  return x * jnp.tanh(jax.nn.softplus(x))


class PLKConv2d(nn.Module):
  """Partial large kernel conv: a dense kernel_size^2 conv over the first `partial` channels; the
  other channels pass through."""
  partial: int
  kernel_size: int = 17
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    head = Conv(self.partial, (k, k), padding=k // 2, kernel_init=SMALL_INIT, dtype=self.dtype,
                name='conv')(x[..., :self.partial])
    return jnp.concatenate([head, x[..., self.partial:]], axis=-1)


class EA(nn.Module):
  """Element-wise attention: x * sigmoid(conv3x3(x))."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    f = Conv3x3(x.shape[-1], kernel_init=SMALL_INIT, dtype=self.dtype, name='f_0')
    return x * jax.nn.sigmoid(f(x))


class PLKBlock(nn.Module):
  """[LayerNorm], DCCM (doubled convolutional channel mixer), partial large kernel conv, EA, 1x1
  refine, [GroupNorm], plus the input."""
  dim: int = 64
  kernel_size: int = 17
  split_ratio: float = 0.25
  use_ea: bool = True
  norm_groups: int = 4
  layer_norm: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = x
    if self.layer_norm:
      y = nn.LayerNorm(epsilon=1e-6, use_fast_variance=False, dtype=self.dtype, name='layer_norm')(y)
    y = mish(Conv3x3(2 * self.dim, dtype=self.dtype, name='channel_mixer_0')(y))
    y = Conv3x3(self.dim, kernel_init=SMALL_INIT, dtype=self.dtype, name='channel_mixer_2')(y)
    y = PLKConv2d(int(self.dim * self.split_ratio), self.kernel_size, self.dtype, name='lk')(y)
    if self.use_ea:
      y = EA(self.dtype, name='attn')(y)
    y = Conv1x1(self.dim, kernel_init=SMALL_INIT, dtype=self.dtype, name='refine')(y)
    if not self.layer_norm:
      y = nn.GroupNorm(num_groups=self.norm_groups, epsilon=1e-5, use_fast_variance=False,
                       dtype=self.dtype, name='norm')(y)
    return y + x


def dysample_init_pos(scale: int, groups: int) -> np.ndarray:
  """DySample's initial offsets [2 * groups * scale^2] (x offsets then y offsets, each group's
  scale x scale sub-pixel grid row-major): the centres of the sub-pixels, in LR pixels."""
  h = (np.arange(scale) - (scale - 1) / 2) / scale
  dx = np.broadcast_to(h[None, :], (scale, scale))  # varies along the sub-pixel column j
  dy = np.broadcast_to(h[:, None], (scale, scale))  # varies along the sub-pixel row i
  return np.concatenate([np.tile(dx.reshape(-1), groups), np.tile(dy.reshape(-1), groups)]
                        ).astype(np.float32)


def bilinear_sample(x, py, px):
  """x [N,H,W,G,Cg] sampled at pixel positions py, px [N,P,G] (each group its own positions) as
  torch's grid_sample(mode='bilinear', padding_mode='border', align_corners=False): positions
  clipped to the image, then the four neighbours weighted -> [N,P,G,Cg]."""
  n, h, w, g, cg = x.shape
  py = jnp.clip(py, 0.0, h - 1)
  px = jnp.clip(px, 0.0, w - 1)
  y0, x0 = jnp.floor(py), jnp.floor(px)
  fy, fx = (py - y0)[..., None], (px - x0)[..., None]
  y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)
  y1, x1 = jnp.minimum(y0 + 1, h - 1), jnp.minimum(x0 + 1, w - 1)  # weight 0 where clipped
  src = x.reshape(n, h * w, g, cg).transpose(0, 2, 1, 3)  # [N,G,HW,Cg]

  def gather(yy, xx):
    index = (yy * w + xx).transpose(0, 2, 1)[..., None]  # [N,G,P,1]
    return jnp.take_along_axis(src, index, axis=2).transpose(0, 2, 1, 3)  # [N,P,G,Cg]

  top = gather(y0, x0) * (1 - fx) + gather(y0, x1) * fx
  bottom = gather(y1, x0) * (1 - fx) + gather(y1, x1) * fx
  return top * (1 - fy) + bottom * fy


class DySample(nn.Module):
  """DySample ("Learning to Upsample by Learning to Sample", Liu et al. 2023): each output pixel
  bilinearly samples the LR features at its sub-pixel centre plus a learned offset
  (offset(x) * sigmoid(scope(x)) * 0.5), per channel group; then a 1x1 conv to `out_channels`."""
  out_channels: int = 3
  scale: int = 4
  groups: int = 4
  end_convolution: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    n, h, w, c = x.shape
    s, g = self.scale, self.groups
    if c % g:
      raise ValueError(f'DySample needs channels ({c}) divisible by groups ({g}).')
    offset = Conv1x1(2 * g * s * s, kernel_init=SMALL_INIT, dtype=self.dtype, name='offset')(x)
    scope = Conv1x1(2 * g * s * s, use_bias=False, kernel_init=nn.initializers.zeros, dtype=self.dtype,
                    name='scope')(x)
    offset = (offset.astype(jnp.float32) * jax.nn.sigmoid(scope.astype(jnp.float32)) * 0.5
              + dysample_init_pos(s, g))
    # [N,h,w,(2,G,i,j)] -> [N,(h,i),(w,j),G] positions in LR pixels, for x and y: grid_sample's
    # normalised (pixel + 0.5 + offset) / size * 2 - 1 maps back to pixel + offset (align_corners=False)
    offset = offset.reshape(n, h, w, 2, g, s, s).transpose(3, 0, 1, 5, 2, 6, 4)
    px = offset[0] + jnp.arange(w, dtype=jnp.float32)[None, None, None, :, None, None]
    py = offset[1] + jnp.arange(h, dtype=jnp.float32)[None, :, None, None, None, None]
    px, py = (p.reshape(n, h * s * w * s, g) for p in (px, py))
    out = bilinear_sample(x.reshape(n, h, w, g, c // g), py, px).reshape(n, h * s, w * s, c)
    if self.end_convolution:
      out = Conv1x1(self.out_channels, dtype=self.dtype, name='end_conv')(out)
    return out


class RealPLKSR(nn.Module):
  """LR image [N,h,w,3] in [0,1] -> SR image [N,h*scale,w*scale,3] (float32), any h, w.

  dim features, n_blocks PLK blocks with a kernel_size^2 conv over int(dim * split_ratio) channels,
  element-wise attention (use_ea), GroupNorm(norm_groups) or, with layer_norm, a LayerNorm at each
  block's start; channel Dropout2d(dropout) before the tail in training only; upsampler
  'pixelshuffle' or 'dysample' (groups 4, or 3 for odd scales; a 1x1 end conv unless scale is 1).
  """
  dim: int = 64
  n_blocks: int = 28
  kernel_size: int = 17
  split_ratio: float = 0.25
  use_ea: bool = True
  norm_groups: int = 4
  dropout: float = 0.0
  upsampler: str = 'pixelshuffle'
  layer_norm: bool = False
  scale: int = 4
  dtype: Any = jnp.float32

  input_multiple = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.upsampler not in UPSAMPLERS:
      raise ValueError(f'RealPLKSR upsampler must be one of {", ".join(UPSAMPLERS)}, got '
                       f'{self.upsampler!r}.')
    s = self.scale
    x = x.astype(jnp.float32)
    feat = Conv3x3(self.dim, kernel_init=SMALL_INIT, dtype=self.dtype, name='feats_0')(x.astype(self.dtype))
    for i in range(self.n_blocks):
      feat = PLKBlock(self.dim, self.kernel_size, self.split_ratio, self.use_ea, self.norm_groups,
                      self.layer_norm, self.dtype, name=f'feats_{i + 1}')(feat)
    feat = nn.Dropout(self.dropout, broadcast_dims=(1, 2), deterministic=not train)(feat)
    tail = Conv3x3(3 * s * s, kernel_init=SMALL_INIT, dtype=self.dtype, name=f'feats_{self.n_blocks + 2}')
    feat = tail(feat)
    out = feat.astype(jnp.float32) + jnp.repeat(x, s * s, axis=-1)  # repeat_interleave on channels
    if self.upsampler == 'pixelshuffle':
      return pixel_shuffle(out, s)
    up = DySample(3, s, 3 if s % 2 else 4, s != 1, self.dtype, name='to_img')
    return up(out.astype(self.dtype)).astype(jnp.float32)
