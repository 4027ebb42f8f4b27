"""RCAN, the Residual Channel Attention Network (Zhang et al. 2018): residual groups of residual
channel-attention blocks (RCAB) in a residual-in-residual trunk, a pixel-shuffle upsampler.

RCAB: conv-ReLU-conv, then channel attention (global average pool, 1x1 down by `reduction`, ReLU,
1x1 up, sigmoid) scaling the channels, plus the identity. A residual group is `num_blocks` RCABs and a
conv plus its own skip; the trunk is `num_groups` groups and a conv plus the long skip.

`norm` (the original code, rgb_range 255): the input is scaled to [0, 255] and passed through the
MeanShift 1x1 conv `sub_mean` (identity weight, bias -255 x DIV2K mean), the output through `add_mean`
and back to [0, 1]. Both are parameters initialised to that shift and loaded from a file as stored:
yulunzhang/RCAN's optimizer trained them (its `MeanShift.requires_grad = False` froze nothing), so
released weights need not hold the exact mean; they train here too (`train.lr_multipliers`
`sub_mean=0, add_mean=0` freezes them). `unshuffle` (spandrel's unshuffle_mod, x1/x2 only): the input
is reflect-padded to a multiple of 4 / scale, pixel-unshuffled, upsampled x4, and cropped back.

Parameter names -> spandrel's (yulunzhang/RCAN's) keys: sub_mean, add_mean; head (`head.0`, or
`head.1` after the unshuffle); rg_{g} (`body.{g}`) with rcab_{b} (`body.{g}.body.{b}`: conv1, conv2,
ca/down, ca/up = `body.0`, `body.2`, `body.3.conv_du.0`, `body.3.conv_du.2`) and conv
(`body.{g}.body.{num_blocks}`); conv_after_body (`body.{num_groups}`); upsample/conv_{j}
(`tail.0.{2j}`); conv_last (`tail.1`).
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from enhance_jax.models.edsr import DIV2K_RGB_MEAN, Upsampler
from enhance_jax.models.rrdbnet import pixel_unshuffle
from enhance_jax.ops.conv import Conv

RGB_RANGE = 255.0  # rgb_range of the original code and of spandrel's loader (not stored in files)


class MeanShift(nn.Module):
  """RCAN's MeanShift: a 1x1 conv over RGB, initialised to x + sign * RGB_RANGE * DIV2K mean."""
  sign: float = -1.0

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', lambda _: jnp.eye(3).reshape(1, 1, 3, 3))
    bias = self.param('bias', lambda _: self.sign * RGB_RANGE * jnp.asarray(DIV2K_RGB_MEAN))
    return jnp.einsum('nhwc,cd->nhwd', x, kernel[0, 0], precision=jax.lax.Precision.HIGHEST) + bias


class ChannelAttention(nn.Module):
  """CA layer: per-channel weights sigmoid(up(relu(down(mean over h, w)))) scale the input."""
  num_features: int = 64
  reduction: int = 16
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(Conv, kernel_size=(1, 1), dtype=self.dtype)
    y = jnp.mean(x.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(self.dtype)
    y = conv(self.num_features // self.reduction, name='down')(y)
    y = conv(self.num_features, name='up')(nn.relu(y))
    return x * nn.sigmoid(y)


class RCAB(nn.Module):
  """Residual Channel Attention Block: conv-ReLU-conv, channel attention, plus the identity."""
  num_features: int = 64
  reduction: int = 16
  kernel_size: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(Conv, self.num_features, kernel_size=(self.kernel_size,) * 2,
                             padding=self.kernel_size // 2, dtype=self.dtype)
    y = conv(name='conv2')(nn.relu(conv(name='conv1')(x)))
    return x + ChannelAttention(self.num_features, self.reduction, self.dtype, name='ca')(y)


class ResidualGroup(nn.Module):
  """num_blocks RCABs and a conv, plus the group's skip."""
  num_blocks: int = 20
  num_features: int = 64
  reduction: int = 16
  kernel_size: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = x
    for b in range(self.num_blocks):
      y = RCAB(self.num_features, self.reduction, self.kernel_size, self.dtype, name=f'rcab_{b}')(y)
    k = self.kernel_size
    return x + Conv(self.num_features, kernel_size=(k, k), padding=k // 2, dtype=self.dtype,
                    name='conv')(y)


class RCAN(nn.Module):
  """LR image [N,h,w,3] in [0,1] -> SR image [N,h*scale,w*scale,3] (float32).

  The paper's RCAN: 10 groups of 20 RCABs, 64 features, reduction 16, 3x3 convs; x2, x3, x4, x8.
  """
  num_groups: int = 10
  num_blocks: int = 20
  num_features: int = 64
  reduction: int = 16
  kernel_size: int = 3
  scale: int = 4
  norm: bool = True
  unshuffle: bool = False
  dtype: Any = jnp.float32

  @property
  def input_multiple(self):
    """The unshuffle variant pads its input to a multiple of 4 / scale; the plain RCAN needs none."""
    return 4 // self.scale if self.unshuffle else 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no BatchNorm or dropout
    if self.unshuffle and self.scale not in (1, 2):
      raise ValueError(f'RCAN unshuffle=True pixel-unshuffles by 4 / scale: scale must be 1 or 2, '
                       f'got {self.scale}.')
    n, h, w, _ = x.shape
    x = x.astype(jnp.float32)
    factor = self.input_multiple
    x = jnp.pad(x, ((0, 0), (0, -h % factor), (0, -w % factor), (0, 0)), mode='reflect')
    rgb_range = RGB_RANGE if self.norm else 1.0
    x = x * rgb_range
    if self.norm:
      x = MeanShift(-1.0, name='sub_mean')(x)
    if self.unshuffle:
      x = pixel_unshuffle(x, factor)
    k, nf = self.kernel_size, self.num_features
    conv = functools.partial(Conv, kernel_size=(k, k), padding=k // 2, dtype=self.dtype)
    x = conv(nf, name='head')(x.astype(self.dtype))
    res = x
    for g in range(self.num_groups):
      res = ResidualGroup(self.num_blocks, nf, self.reduction, k, self.dtype, name=f'rg_{g}')(res)
    res = conv(nf, name='conv_after_body')(res) + x
    up = 4 if self.unshuffle else self.scale
    if up > 1:
      res = Upsampler(nf, up, self.dtype, name='upsample')(res)
    out = conv(3, name='conv_last')(res).astype(jnp.float32)
    if self.norm:
      out = MeanShift(1.0, name='add_mean')(out)
    return (out / rgb_range)[:, :h * self.scale, :w * self.scale]
