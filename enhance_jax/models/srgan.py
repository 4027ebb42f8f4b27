"""SRResNet, the SRGAN generator (Ledig et al. 2017; reports 003 and 004): 9x9 head + PReLU, residual
blocks conv-BN-PReLU-conv-BN, conv+BN with a long skip, pixel-shuffle x2 upsamplers, 9x9 tail.

PReLU is one learnable slope per layer (init 0.25), as torch's nn.PReLU() default and the SRGAN paper.
Report 003's layer list says relu in the head and blocks while its text says PReLU; this follows the
text, the paper and report 004. Convs followed by BatchNorm have no bias (BN's offset subsumes it).
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


class ResidualBlock(nn.Module):
  """conv3x3-BN-PReLU-conv3x3-BN plus the identity."""
  num_features: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    y = Conv3x3(self.num_features, use_bias=False, dtype=self.dtype, name='conv1')(x)
    y = PReLU(name='prelu')(batch_norm(train, self.dtype, 'bn1')(y))
    y = Conv3x3(self.num_features, use_bias=False, dtype=self.dtype, name='conv2')(y)
    return x + batch_norm(train, self.dtype, 'bn2')(y)


class UpsampleBlock(nn.Module):
  """x2: conv3x3 to 4*num_features, pixel shuffle, PReLU."""
  num_features: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = Conv3x3(self.num_features * 4, dtype=self.dtype, name='conv')(x)
    return PReLU(name='prelu')(pixel_shuffle(x, 2))


class SRResNet(nn.Module):
  """LR [N,h,w,3] in [0,1] -> SR [N,h*scale,w*scale,3]; output='tanh' maps tanh to [0,1], 'none' is linear."""
  num_blocks: int = 16
  num_features: int = 64
  scale: int = 4
  output: str = 'tanh'
  input_norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.output not in ('tanh', 'none'):
      raise ValueError(f"SRResNet output must be 'tanh' or 'none', got {self.output!r}.")
    x = x.astype(self.dtype)
    x = imagenet_normalize(x) if self.input_norm else x
    feat = PReLU(name='prelu_first')(Conv9x9(self.num_features, dtype=self.dtype, name='conv_first')(x))
    body = feat
    for i in range(self.num_blocks):
      body = ResidualBlock(self.num_features, self.dtype, name=f'body_{i}')(body, train)
    body = Conv3x3(self.num_features, use_bias=False, dtype=self.dtype, name='conv_body')(body)
    feat = feat + batch_norm(train, self.dtype, 'bn_body')(body)
    for i in range(num_doublings(self.scale)):
      feat = UpsampleBlock(self.num_features, self.dtype, name=f'upsample_{i}')(feat)
    out = Conv9x9(3, dtype=self.dtype, name='conv_last')(feat).astype(jnp.float32)
    return (jnp.tanh(out) + 1) / 2 if self.output == 'tanh' else out
