"""SRVGGNetCompact, Real-ESRGAN's compact generator (realesr-general-x4v3, realesr-animevideov3): a
plain stack of 3x3 convs with per-channel PReLU at LR, one pixel shuffle at the end, and the
nearest-upsampled input added, so the network learns the residual.

Parameter names are Real-ESRGAN's `body` ModuleList indices: convs body_0, body_2, ..., body_{2n+2}
and PReLU slopes body_1, body_3, ..., body_{2n+1} (torch `body.{i}.weight`/`.bias`).
"""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from enhance_jax.models.layers import pixel_shuffle
from enhance_jax.ops.conv import Conv
from enhance_jax.ops.resize import torch_resize_matrix

Conv3x3 = functools.partial(Conv, kernel_size=(3, 3), padding=1)
ACTIVATIONS = ('prelu', 'relu', 'leakyrelu')


class ChannelPReLU(nn.Module):
  """PReLU with one learnable slope per channel (torch's nn.PReLU(num_parameters=C)), init 0.25."""

  @nn.compact
  def __call__(self, x):
    slope = self.param('negative_slope', nn.initializers.constant(0.25), (x.shape[-1],), jnp.float32)
    return jnp.where(x >= 0, x, slope.astype(x.dtype) * x)


def nearest_upsample(x, scale):
  """Nearest-neighbour upsampling of an NHWC batch by an integer `scale`."""
  return jnp.repeat(jnp.repeat(x, scale, axis=1), scale, axis=2)


class SRVGGNetCompact(nn.Module):
  """LR image [N,h,w,3] in [0,1] -> SR image [N,h*scale,w*scale,3] (float32).

  body_0 conv(3 -> num_features), act, then num_convs x [conv(num_features -> num_features), act],
  then conv(num_features -> 3*net^2) and a pixel shuffle by net = `net_scale` (0: `scale`). `act` is
  'prelu' (the released weights; parameters at the odd indices), 'relu' or 'leakyrelu' (slope 0.1; no
  parameters). A net_scale above scale ends with PyTorch's bicubic downscale to scale, as the
  animevideov3 x2/x3 releases run their x4 network.
  """
  num_features: int = 64
  num_convs: int = 16
  scale: int = 4
  net_scale: int = 0
  act: str = 'prelu'
  dtype: Any = jnp.float32

  def activation(self, x, index):
    if self.act == 'prelu':
      return ChannelPReLU(name=f'body_{index}')(x)
    if self.act == 'relu':
      return nn.relu(x)
    if self.act == 'leakyrelu':
      return nn.leaky_relu(x, negative_slope=0.1)
    raise ValueError(f'SRVGGNetCompact act must be one of {", ".join(ACTIVATIONS)}, got {self.act!r}.')

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no BatchNorm or dropout
    x = x.astype(jnp.float32)
    out = x.astype(self.dtype)
    for i in range(self.num_convs + 1):
      out = Conv3x3(self.num_features, dtype=self.dtype, name=f'body_{2 * i}')(out)
      out = self.activation(out, 2 * i + 1)
    net = self.net_scale or self.scale
    out = Conv3x3(3 * net ** 2, dtype=self.dtype, name=f'body_{2 * self.num_convs + 2}')(out)
    out = pixel_shuffle(out, net).astype(jnp.float32) + nearest_upsample(x, net)
    if net == self.scale:
      return out
    return downscale(out, self.scale / net)


def downscale(x, factor):
  """NHWC X resized by FACTOR < 1 as F.interpolate(scale_factor=FACTOR, mode='bicubic') does."""
  (h, w), bicubic = x.shape[1:3], 2
  oh, ow = int(h * factor), int(w * factor)
  mh = torch_resize_matrix(h, oh, h, oh, bicubic, 1 / factor)
  mw = torch_resize_matrix(w, ow, w, ow, bicubic, 1 / factor)
  return jnp.einsum('oh,nhwc,pw->nopc', mh, x, mw, precision='highest')
