"""RRDBNet, the ESRGAN generator (Wang et al. 2018): Residual-in-Residual Dense Blocks, no BatchNorm.

Submodule names follow BasicSR's rrdbnet_arch (conv_first, body_i.rdbj.convk, conv_body, conv_up1,
conv_up2, conv_hr, conv_last) so released PyTorch weights map one to one (see io/weights/generators.py).
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from enhance_jax.ops.conv import Conv

Conv3x3 = functools.partial(Conv, kernel_size=(3, 3), padding=1)


def lrelu(x):
  return nn.leaky_relu(x, negative_slope=0.2)


def pixel_unshuffle(x, factor):
  """Space-to-depth (NHWC), channel order matching torch.nn.functional.pixel_unshuffle."""
  n, h, w, c = x.shape
  x = x.reshape(n, h // factor, factor, w // factor, factor, c)
  return x.transpose(0, 1, 3, 5, 2, 4).reshape(n, h // factor, w // factor, c * factor * factor)


class ResidualDenseBlock(nn.Module):
  """Five densely connected 3x3 convs; the output is scaled by `residual_scale` and added to the input."""
  num_features: int = 64
  growth_channels: int = 32
  residual_scale: float = 0.2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    features = [x]
    for i in range(1, 5):
      y = Conv3x3(self.growth_channels, dtype=self.dtype, name=f'conv{i}')(jnp.concatenate(features, -1))
      features.append(lrelu(y))
    y = Conv3x3(self.num_features, dtype=self.dtype, name='conv5')(jnp.concatenate(features, -1))
    return x + self.residual_scale * y


class RRDB(nn.Module):
  """Residual in Residual Dense Block: three dense blocks inside one more scaled residual."""
  num_features: int = 64
  growth_channels: int = 32
  residual_scale: float = 0.2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = x
    for j in range(1, 4):
      y = ResidualDenseBlock(self.num_features, self.growth_channels, self.residual_scale,
                             self.dtype, name=f'rdb{j}')(y)
    return x + self.residual_scale * y


def upsample_nearest(x):
  """Nearest-neighbour x2 of an NHWC batch."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class UpsampleBlock(nn.Module):
  """Nearest-neighbour x2 then a 3x3 conv and LeakyReLU (ESRGAN's interpolation upsampler)."""
  num_features: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = upsample_nearest(x)
    return lrelu(Conv3x3(self.num_features, dtype=self.dtype, name='conv')(x))


class RRDBNet(nn.Module):
  """LR image [N,h,w,3] in [0,1] -> SR image [N,h*scale,w*scale,3]; x1/x2 unshuffle the input first."""
  num_blocks: int = 23
  num_features: int = 64
  growth_channels: int = 32
  scale: int = 4
  residual_scale: float = 0.2
  out_channels: int = 3
  remat: bool = False
  dtype: Any = jnp.float32

  @property
  def input_multiple(self):
    """x1 and x2 pixel-unshuffle the input by 4 // scale, so its sides must be multiples of that."""
    return 4 // self.scale if self.scale < 4 else 1

  def trunk(self, x):
    """The num_blocks RRDBs (parameters body_0, body_1, ...). With remat, one rematerialised block
    scanned over their stacked parameters: the backward pass keeps only each block's input (an
    unrolled jax.checkpoint is merged back by XLA's CSE on CPU), and the trunk compiles once."""
    fields = (self.num_features, self.growth_channels, self.residual_scale, self.dtype)
    if not self.remat or self.is_initializing() or not self.num_blocks:
      for i in range(self.num_blocks):
        x = RRDB(*fields, name=f'body_{i}')(x)
      return x
    params = self.variables['params']
    stacked = jax.tree.map(lambda *p: jnp.stack(p),
                           *(params[f'body_{i}'] for i in range(self.num_blocks)))
    block = RRDB(*fields, parent=None)
    step = jax.checkpoint(lambda h, p: (block.apply({'params': p}, h), None), prevent_cse=False)
    return jax.lax.scan(step, x, stacked)[0]

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no BatchNorm or dropout
    if self.scale not in (1, 2, 4):
      raise ValueError(f'RRDBNet upsamples x4 after a pixel-unshuffle for x1/x2: scale must be 1, 2 or '
                       f'4, got {self.scale}.')
    if self.scale in (1, 2):
      x = pixel_unshuffle(x, 4 // self.scale)
    x = x.astype(self.dtype)
    feat = Conv3x3(self.num_features, dtype=self.dtype, name='conv_first')(x)
    feat = feat + Conv3x3(self.num_features, dtype=self.dtype, name='conv_body')(self.trunk(feat))
    feat = UpsampleBlock(self.num_features, self.dtype, name='conv_up1')(feat)
    feat = UpsampleBlock(self.num_features, self.dtype, name='conv_up2')(feat)
    feat = lrelu(Conv3x3(self.num_features, dtype=self.dtype, name='conv_hr')(feat))
    out = Conv3x3(self.out_channels, dtype=self.dtype, name='conv_last')(feat)
    return out.astype(jnp.float32)
