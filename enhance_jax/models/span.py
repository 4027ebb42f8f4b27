"""SPAN, the Swift Parameter-free Attention Network (Wan et al. 2024; NTIRE 2024 efficient SR winner).

Six SPABs (Swift Parameter-free Attention Blocks), each three re-parameterisable convs `Conv3XC` whose
output `v` gives the attention `sigmoid(v) - 0.5` without parameters: out = (v + x) * (sigmoid(v) -
0.5). conv_cat joins the first features, the trunk's output, block 1's output and block 6's first
conv after its SiLU; a 3x3 conv and one pixel shuffle make the image. The input is `(x - DIV2K mean) * img_range`
(norm, as hongyuanyu/SPAN always does; spandrel's `no_norm` files skip it); the output is not shifted back.

Conv3XC trains as 1x1 (c_in -> 2 c_in), 3x3 (-> 2 c_out, on the zero-padded input), 1x1 (-> c_out)
plus a 1x1 skip `sk`; evaluated, the four are one 3x3 conv whose kernel is computed from them (the
released files' `eval_conv`, which PyTorch recomputes the same way in eval mode). Both paths give the
same output and the same gradients to the branch parameters, which are the only parameters.

Parameter names follow spandrel's (hongyuanyu/SPAN's) keys: conv_1, block_{1..6}/c{1,2,3}_r, conv_cat,
conv_2, upsampler (`upsampler.0`); each Conv3XC holds sk, conv_0, conv_1, conv_2 (`conv.0/1/2`).
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from enhance_jax.models.layers import pixel_shuffle
from enhance_jax.ops.conv import Conv, conv_general_dilated

# DIV2K's RGB mean, which SPAN subtracts before scaling by img_range.
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
NUM_BLOCKS = 6  # SPABs; fixed in the architecture
GAIN = 2        # Conv3XC's hidden width is GAIN x its in/out channels
_NHWC = ('NHWC', 'HWIO', 'NHWC')
_HIGHEST = jax.lax.Precision.HIGHEST


class ConvParams(nn.Module):
  """The kernel [k, k, c_in, features] and bias of one convolution (named as nn.Conv names them),
  returned for the caller to apply or fuse."""
  features: int
  kernel_size: int

  @nn.compact
  def __call__(self, c_in):
    k = self.kernel_size
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (k, k, c_in, self.features),
                        jnp.float32)
    return kernel, self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32)


def conv2d(x, kernel, bias, padding, dtype):
  """A stride-1 NHWC convolution in `dtype` through the project's convolution (oneDNN on CPU)."""
  y = conv_general_dilated(x.astype(dtype), kernel.astype(dtype), (1, 1), padding,
                           dimension_numbers=_NHWC)
  return y + bias.astype(dtype)


def fuse(sk, conv_0, conv_1, conv_2):
  """The one 3x3 (kernel, bias) equal to conv_2(conv_1(conv_0(pad(x)))) + sk(x): the 1x1s are
  channel matrices folded into the 3x3 kernel, conv_0's bias passes through conv_1's taps (it is
  also the value of the zero-padded border after conv_0), and the skip joins the centre tap."""
  (w0, b0), (w1, b1), (w2, b2), (ws, bs) = conv_0, conv_1, conv_2, sk
  kernel = jnp.einsum('im,hwmn,no->hwio', w0[0, 0], w1, w2[0, 0], precision=_HIGHEST)
  kernel = kernel.at[1, 1].add(ws[0, 0])
  mid = jnp.einsum('m,hwmn->n', b0, w1, precision=_HIGHEST) + b1
  return kernel, jnp.dot(mid, w2[0, 0], precision=_HIGHEST) + b2 + bs


class Conv3XC(nn.Module):
  """A 3x3 conv (c_in -> c_out) over-parameterised for training as 1x1-3x3-1x1 (hidden width GAIN
  times) plus a 1x1 skip; `train=False` runs it as the single fused 3x3 conv."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    c_in, c_out = x.shape[-1], self.features
    sk = ConvParams(c_out, 1, name='sk')(c_in)
    conv_0 = ConvParams(c_in * GAIN, 1, name='conv_0')(c_in)
    conv_1 = ConvParams(c_out * GAIN, 3, name='conv_1')(c_in * GAIN)
    conv_2 = ConvParams(c_out, 1, name='conv_2')(c_out * GAIN)
    if not train:
      return conv2d(x, *fuse(sk, conv_0, conv_1, conv_2), ((1, 1), (1, 1)), self.dtype)
    valid = ((0, 0), (0, 0))
    y = conv2d(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), *conv_0, valid, self.dtype)
    y = conv2d(conv2d(y, *conv_1, valid, self.dtype), *conv_2, valid, self.dtype)
    return y + conv2d(x, *sk, valid, self.dtype)


class SPAB(nn.Module):
  """Swift Parameter-free Attention Block: three Conv3XC (SiLU between), then the parameter-free
  attention sigmoid(v) - 0.5 on the third's output v gating v + x. Returns (out, SiLU of the first
  conv's output): upstream's in-place SiLU overwrites the first output it returns."""
  num_features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = functools.partial(Conv3XC, self.num_features, self.dtype)
    out1 = nn.silu(conv(name='c1_r')(x, train))
    out2 = nn.silu(conv(name='c2_r')(out1, train))
    out3 = conv(name='c3_r')(out2, train)
    attention = jax.nn.sigmoid(out3) - 0.5
    return (out3 + x) * attention, out1


class SPAN(nn.Module):
  """LR image [N,h,w,3] in [0,1] -> SR image [N,h*scale,w*scale,3] (float32).

  SPAN: 48 features (spandrel's default and the paper's); the NTIRE 2024 entry and traiNNer-redux's
  SPAN-S use fewer. `norm`: subtract the DIV2K mean and multiply by img_range first (the official
  code; files with spandrel's `no_norm` buffer were trained without). `train=True` runs each Conv3XC's
  branches, `train=False` its fused 3x3 conv (same output).
  """
  num_features: int = 48
  scale: int = 4
  norm: bool = True
  img_range: float = 255.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.astype(jnp.float32)
    if self.norm:
      x = (x - jnp.asarray(DIV2K_RGB_MEAN, jnp.float32)) * self.img_range
    nf = self.num_features
    feature = Conv3XC(nf, self.dtype, name='conv_1')(x.astype(self.dtype), train)
    out, outs = feature, []
    for i in range(1, NUM_BLOCKS + 1):
      out, first = SPAB(nf, self.dtype, name=f'block_{i}')(out, train)
      outs.append(out)
    trunk = Conv3XC(nf, self.dtype, name='conv_2')(out, train)
    out = Conv(nf, kernel_size=(1, 1), dtype=self.dtype, name='conv_cat')(
        jnp.concatenate([feature, trunk, outs[0], first], axis=-1))
    out = Conv(3 * self.scale ** 2, kernel_size=(3, 3), padding=1, dtype=self.dtype,
               name='upsampler')(out)
    return pixel_shuffle(out, self.scale).astype(jnp.float32)
