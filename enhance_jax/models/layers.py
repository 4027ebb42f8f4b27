"""Layers the generators and discriminators share: 3x3/9x9 convs, PReLU as torch's, pixel shuffle as
torch's, BatchNorm with torch's defaults, ImageNet normalisation, and SRGAN's x2 UpsampleBlock.
"""

import functools
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from enhance_jax.models.vgg import IMAGENET_MEAN, IMAGENET_STD
from enhance_jax.ops.conv import Conv

Conv3x3 = functools.partial(Conv, kernel_size=(3, 3), padding=1)
Conv9x9 = functools.partial(Conv, kernel_size=(9, 9), padding=4)
PReLU = functools.partial(nn.PReLU, negative_slope_init=0.25)


def pixel_shuffle(x, factor):
  """Depth-to-space (NHWC), channel order matching torch.nn.functional.pixel_shuffle."""
  n, h, w, c = x.shape
  x = x.reshape(n, h, w, c // (factor * factor), factor, factor)
  return x.transpose(0, 1, 4, 2, 5, 3).reshape(n, h * factor, w * factor, c // (factor * factor))


def imagenet_normalize(x):
  """[0,1] RGB -> ImageNet mean/std normalised, the input the reports' generators were trained on."""
  return (x - jnp.asarray(IMAGENET_MEAN, x.dtype)) / jnp.asarray(IMAGENET_STD, x.dtype)


def num_doublings(scale):
  """log2(scale) for the x2 upsampling stages; other scales are a ValueError."""
  if scale < 2 or scale & (scale - 1):
    raise ValueError(f'scale must be a power of two (2, 4, 8, ...), got {scale}.')
  return int(math.log2(scale))


def batch_norm(train, dtype, name):
  """BatchNorm with PyTorch's defaults (momentum 0.1 == flax 0.9, eps 1e-5)."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype, name=name)


class UpsampleBlock(nn.Module):
  """x2: conv3x3 to 4*num_features, pixel shuffle, PReLU."""
  num_features: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = Conv3x3(self.num_features * 4, dtype=self.dtype, name='conv')(x)
    return PReLU(name='prelu')(pixel_shuffle(x, 2))
