"""MSRResNet, BasicSR's "modified SRResNet": SRResNet without BatchNorm (EDSR's residual blocks),
LeakyReLU(0.1), pixel-shuffle upsampling, and the bilinearly upsampled input added to the output.

Submodule names follow BasicSR's srresnet_arch one to one: conv_first, body_{i}/conv1|conv2 (torch
`body.{i}.conv1`), upconv1 [, upconv2 for x4], conv_hr, conv_last. x2 and x3 upsample once by
pixel shuffle 2 or 3, x4 twice by 2.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from enhance_jax.models.edsr import ResBlock
from enhance_jax.models.layers import pixel_shuffle
from enhance_jax.ops.conv import Conv

Conv3x3 = functools.partial(Conv, kernel_size=(3, 3), padding=1)


def lrelu(x):
  return nn.leaky_relu(x, negative_slope=0.1)


def upsample_bilinear(x, scale):
  """Bilinear resize of an NHWC batch by `scale`, as torch's interpolate(align_corners=False)."""
  n, h, w, c = x.shape
  return jax.image.resize(x, (n, h * scale, w * scale, c), 'linear', antialias=False)


class MSRResNet(nn.Module):
  """LR image [N,h,w,3] in [0,1] -> SR image [N,h*scale,w*scale,3] (float32); scale 2, 3 or 4."""
  num_blocks: int = 16
  num_features: int = 64
  scale: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no BatchNorm or dropout
    if self.scale not in (2, 3, 4):
      raise ValueError(f'MSRResNet supports scale 2, 3 or 4, got {self.scale}.')
    x = x.astype(jnp.float32)
    nf = self.num_features
    feat = lrelu(Conv3x3(nf, dtype=self.dtype, name='conv_first')(x.astype(self.dtype)))
    for i in range(self.num_blocks):
      feat = ResBlock(nf, 1.0, self.dtype, name=f'body_{i}')(feat)
    factors = (2, 2) if self.scale == 4 else (self.scale,)
    for j, factor in enumerate(factors, 1):
      feat = Conv3x3(nf * factor * factor, dtype=self.dtype, name=f'upconv{j}')(feat)
      feat = lrelu(pixel_shuffle(feat, factor))
    out = Conv3x3(3, dtype=self.dtype, name='conv_last')(
        lrelu(Conv3x3(nf, dtype=self.dtype, name='conv_hr')(feat)))
    return out.astype(jnp.float32) + upsample_bilinear(x, self.scale)
