"""EDSR (Lim et al. 2017, "Enhanced Deep Residual Networks"): residual blocks without BatchNorm, a
long skip, a pixel-shuffle upsampler; the DIV2K mean is subtracted from the input and added back.

Submodule names follow BasicSR's edsr_arch: conv_first, body_{i}/conv1|conv2, conv_after_body,
upsample/conv_{j} (BasicSR `upsample.{2j}`, EDSR-PyTorch `tail.0.{2j}`), conv_last. The images are
[0, 1]; the mean shift works in [0, img_range] as both PyTorch repositories do (EDSR-PyTorch's
`sub_mean`/`add_mean` 1x1 convs hold exactly that shift). See weights.py for the key mapping.
"""

import functools
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from enhance_jax.conv import Conv
from enhance_jax.models.srgan import pixel_shuffle

Conv3x3 = functools.partial(Conv, kernel_size=(3, 3), padding=1)
# DIV2K's RGB mean, which both BasicSR and EDSR-PyTorch subtract.
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def sub_mean(x, rgb_mean, img_range):
  """MeanShift(sign=-1): [0,1] RGB -> (x - mean) * img_range."""
  return (x - jnp.asarray(rgb_mean, x.dtype)) * img_range


def add_mean(x, rgb_mean, img_range):
  """MeanShift(sign=+1), the inverse of `sub_mean`."""
  return x / img_range + jnp.asarray(rgb_mean, x.dtype)


class ResBlock(nn.Module):
  """conv3x3-ReLU-conv3x3, scaled by `res_scale`, plus the identity (BasicSR's ResidualBlockNoBN)."""
  num_features: int = 64
  res_scale: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = nn.relu(Conv3x3(self.num_features, dtype=self.dtype, name='conv1')(x))
    y = Conv3x3(self.num_features, dtype=self.dtype, name='conv2')(y)
    return x + self.res_scale * y


class Upsampler(nn.Module):
  """x2^n: n times conv3x3 to 4*num_features then pixel shuffle 2; x3: one conv to 9*num_features,
  pixel shuffle 3. No activation (EDSR's `act=False`). Convs conv_0, conv_1, ..."""
  num_features: int = 64
  scale: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.scale == 3:
      factors = (3,)
    elif self.scale >= 2 and not self.scale & (self.scale - 1):
      factors = (2,) * int(math.log2(self.scale))
    else:
      raise ValueError(f'Upsampler supports x3 and powers of two, got scale {self.scale}.')
    for j, factor in enumerate(factors):
      x = Conv3x3(self.num_features * factor * factor, dtype=self.dtype, name=f'conv_{j}')(x)
      x = pixel_shuffle(x, factor)
    return x


class EDSR(nn.Module):
  """LR image [N,h,w,3] in [0,1] -> SR image [N,h*scale,w*scale,3] (float32).

  EDSR baseline: 16 blocks of 64 features, res_scale 1; EDSR (large): 32 blocks of 256, res_scale 0.1.
  """
  num_blocks: int = 16
  num_features: int = 64
  scale: int = 4
  res_scale: float = 1.0
  img_range: float = 255.0
  rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no BatchNorm or dropout
    x = sub_mean(x.astype(jnp.float32), self.rgb_mean, self.img_range).astype(self.dtype)
    feat = Conv3x3(self.num_features, dtype=self.dtype, name='conv_first')(x)
    res = feat
    for i in range(self.num_blocks):
      res = ResBlock(self.num_features, self.res_scale, self.dtype, name=f'body_{i}')(res)
    res = Conv3x3(self.num_features, dtype=self.dtype, name='conv_after_body')(res) + feat
    res = Upsampler(self.num_features, self.scale, self.dtype, name='upsample')(res)
    out = Conv3x3(3, dtype=self.dtype, name='conv_last')(res)
    return add_mean(out.astype(jnp.float32), self.rgb_mean, self.img_range)
