"""Report 001 (DL-IQIWA, "Image quality improvement with autoencoders"): the CIFAR-10 denoising
autoencoder and its variational counterpart (32 -> 32), and the Cats&Dogs super-resolution networks:
the deconvolution net (180 -> 360) and the ResNet with convolution blocks (90 -> 360).

Transposed convolutions are written with the PyTorch padding p of the authors' code
(github.com/mactat/DL-IQIWA), passed to flax as k - 1 - p on each side (lax pads the stride-dilated
input), with `transpose_kernel=True`: a torch ConvTranspose2d weight (in, out, kh, kw) is this
kernel transposed to (kh, kw, out, in). Ordinary convolutions are `enhance_jax.ops.conv.Conv`.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from enhance_jax.models.layers import batch_norm
from enhance_jax.ops.conv import Conv

Conv3x3 = functools.partial(Conv, kernel_size=(3, 3), padding=1)


def _check_scale(name, scale, allowed):
  if not isinstance(scale, int) or isinstance(scale, bool) or scale not in allowed:
    raise ValueError(f'{name} produces scale {" or ".join(map(str, sorted(allowed)))} only '
                     f'(output side / input side), got {scale!r}; set model.scale accordingly.')


def _check_multiple(name, x, multiple):
  if x.shape[1] % multiple or x.shape[2] % multiple:
    raise ValueError(f'{name} needs a height and width that are multiples of {multiple}, got '
                     f'{x.shape[1]}x{x.shape[2]}; crop or pad the input.')


def conv_transpose(features, kernel, stride, torch_padding, dtype, name):
  """A transposed conv with PyTorch ConvTranspose2d's geometry: out = (in - 1) * stride - 2p + kernel,
  or 'SAME' (out = in * stride) when torch_padding is None."""
  pad = 'SAME' if torch_padding is None else [(kernel - 1 - torch_padding,) * 2] * 2
  return nn.ConvTranspose(features, (kernel, kernel), strides=(stride, stride), padding=pad,
                          transpose_kernel=True, dtype=dtype, name=name)


def upsample_nearest(x, factor):
  """Nearest-neighbour upsampling by an integer factor (torch nn.Upsample's default mode)."""
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


class ConvEncoder(nn.Module):
  """conv k4 s2 -> ReLU -> max-pool 2 -> conv k4 (inner_stride) -> ReLU -> conv k4 (inner_stride).
  The last conv is linear (a latent code, or a VAE's mean and log-variance)."""
  features: Sequence[int]
  out_channels: int
  inner_stride: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    # k4 s2 with PyTorch padding 1 halves exactly; stride 1 pads 'SAME' (1 before, 2 after) to keep size.
    pad = 1 if self.inner_stride == 2 else 'SAME'
    f1, f2 = self.features
    x = nn.relu(Conv(f1, (4, 4), strides=2, padding=1, dtype=self.dtype, name='conv1')(x))
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = nn.relu(Conv(f2, (4, 4), strides=self.inner_stride, padding=pad, dtype=self.dtype, name='conv2')(x))
    return Conv(self.out_channels, (4, 4), strides=self.inner_stride, padding=pad, dtype=self.dtype,
                name='conv3')(x)


class ConvDecoder(nn.Module):
  """The encoder mirrored, in the authors' order: convT k4 (inner_stride) -> ReLU -> nearest x2 ->
  convT k4 (inner_stride) -> ReLU -> convT k4 s2 -> sigmoid."""
  features: Sequence[int]
  inner_stride: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z):
    pad = 1 if self.inner_stride == 2 else None
    f1, f2 = self.features
    x = nn.relu(conv_transpose(f2, 4, self.inner_stride, pad, self.dtype, 'deconv1')(z.astype(self.dtype)))
    x = upsample_nearest(x, 2)
    x = nn.relu(conv_transpose(f1, 4, self.inner_stride, pad, self.dtype, 'deconv2')(x))
    x = conv_transpose(3, 4, 2, 1, self.dtype, 'deconv3')(x)
    return nn.sigmoid(x.astype(jnp.float32))


class DenoiseAutoencoder(nn.Module):
  """Report 001's CIFAR-10 denoising autoencoder: [N,H,W,3] in [0,1] -> [N,H,W,3] in [0,1].

  Report: encoder "2d convolution followed by 2d maxpooling and two more convolutions", decoder "a
  mirrored encoder, but instead of convolutions and maxpooling it used transposed convolutions and
  upsampling", "kernel size equal to 4", no dense layer, bottleneck "8x8 with two channels" (32x32
  input). The report also says every conv has stride 2, which after the pool would end at 2x2, not
  8x8: the authors' README network (32, pool, 16, 8 channels, all stride 2; 23,659 params) has a
  2x2x8 bottleneck, likely the "8x8x2" misread. Here the two convs after the pool have stride
  `inner_stride`: 1 (default) gives the report's 8x8x2 bottleneck at 32x32; 2 with
  latent_channels=8 gives the README network's layers, sizes and parameters.
  Chosen where the report is silent: widths 32, 16 (the README's); ReLU after every hidden layer and
  a sigmoid output (the authors' code), but a linear code (the authors' ReLU on the last encoder
  conv could zero one of only two code channels for good); nearest-neighbour upsampling (torch
  nn.Upsample's default); the decoder's order convT, upsample, convT, convT (the authors' code; an
  exact mirror has the same parameters); stride-1 k4 convs pad 'SAME' (1 before, 2 after: 4 is even).
  """
  scale: int = 1
  features: Sequence[int] = (32, 16)
  latent_channels: int = 2
  inner_stride: int = 1
  dtype: Any = jnp.float32

  @property
  def input_multiple(self) -> int:
    """conv s2 and the 2x2 pool halve twice, then two convs of stride inner_stride."""
    return 4 * self.inner_stride ** 2

  def setup(self):
    _check_scale(type(self).__name__, self.scale, {1})
    if self.inner_stride not in (1, 2):
      raise ValueError(f'inner_stride must be 1 or 2, got {self.inner_stride!r}.')
    self.encoder = ConvEncoder(tuple(self.features), self.latent_channels, self.inner_stride, self.dtype)
    self.decoder = ConvDecoder(tuple(self.features), self.inner_stride, self.dtype)

  def encode(self, x):
    """The bottleneck code [N, H/4/inner_stride^2, W/..., latent_channels] (8x8x2 for 32x32)."""
    _check_multiple(type(self).__name__, x, self.input_multiple)
    return self.encoder(x.astype(self.dtype)).astype(jnp.float32)

  def __call__(self, x, train: bool = False):
    del train  # no BatchNorm or dropout
    return self.decoder(self.encode(x))


class DenoiseVAE(DenoiseAutoencoder):
  """Report 001's variational autoencoder: [N,H,W,3] -> {'image': [N,H,W,3] in [0,1], 'mean', 'logvar'}.

  The report only names it ("convolutional and variational autoencoders"; the VAE did worse). Chosen:
  the autoencoder's encoder whose last conv gives 2 * latent_channels channels, split into the mean and
  log-variance of a convolutional latent (8x8x2 at 32x32, the report's bottleneck), and the
  autoencoder's decoder. The authors' notebook VAE (two k4 s2 convs of width 64/128, dense 10-d latent)
  is not used: the report found a dense layer in the bottleneck made reconstructions worse.
  Training: z = mean + exp(logvar / 2) * eps, eps ~ N(0, 1) from the 'sample' rng; eval: z = mean.
  mean/logvar are float32 and unclipped (the KL term reads them as they are). Fields and
  input_multiple are the autoencoder's.
  """

  def setup(self):
    _check_scale(type(self).__name__, self.scale, {1})
    if self.inner_stride not in (1, 2):
      raise ValueError(f'inner_stride must be 1 or 2, got {self.inner_stride!r}.')
    self.encoder = ConvEncoder(tuple(self.features), 2 * self.latent_channels, self.inner_stride,
                               self.dtype)
    self.decoder = ConvDecoder(tuple(self.features), self.inner_stride, self.dtype)

  def encode(self, x):
    """(mean, logvar) of the latent, each [N, H/4/inner_stride^2, W/..., latent_channels], float32."""
    _check_multiple(type(self).__name__, x, self.input_multiple)
    stats = self.encoder(x.astype(self.dtype)).astype(jnp.float32)
    return stats[..., :self.latent_channels], stats[..., self.latent_channels:]

  def __call__(self, x, train: bool = False):
    mean, logvar = self.encode(x)
    z = mean
    if train:
      eps = jax.random.normal(self.make_rng('sample'), mean.shape, jnp.float32)
      z = mean + jnp.exp(0.5 * logvar) * eps
    return {'image': self.decoder(z), 'mean': mean, 'logvar': logvar}


class DeconvSR(nn.Module):
  """Report 001's deconvolution net, x2 (180 -> 360): three transposed convs, [N,h,w,3] -> [N,2h,2w,3].

  Report: "kernel size 3 and stride 1" (10 channels, keeps the size), "kernel size 3 and stride 2"
  (20 channels, 180 -> 359), "kernel size 4 and stride 1" (3 channels, -> 360). With
  out = (in - 1) * stride - 2p + k, the authors' PyTorch padding p = 1 on all three gives
  h -> (h-1) - 2 + 3 = h -> 2(h-1) - 2 + 3 = 2h - 1 -> (2h-2) - 2 + 4 = 2h, so 180 -> 180 -> 359 -> 360
  and any h works (input_multiple 1); in lax terms the paddings are (1,1), (1,1), (2,2).
  Chosen where the report is silent: ReLU after the first two layers and a sigmoid output (the
  authors' code).
  """
  scale: int = 2
  features: Sequence[int] = (10, 20)
  dtype: Any = jnp.float32

  @property
  def input_multiple(self) -> int:
    return 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no BatchNorm or dropout
    _check_scale(type(self).__name__, self.scale, {2})
    f1, f2 = self.features
    x = nn.relu(conv_transpose(f1, 3, 1, 1, self.dtype, 'deconv1')(x.astype(self.dtype)))
    x = nn.relu(conv_transpose(f2, 3, 2, 1, self.dtype, 'deconv2')(x))
    x = conv_transpose(3, 4, 1, 1, self.dtype, 'deconv3')(x)
    return nn.sigmoid(x.astype(jnp.float32))


class ConvolutionBlock(nn.Module):
  """The report's "convolution block": conv3x3-BN-ReLU, dropout, conv3x3-BN-ReLU."""
  num_features: int = 64
  dropout_rate: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = Conv3x3(self.num_features, use_bias=False, dtype=self.dtype, name='conv1')(x)
    x = nn.relu(batch_norm(train, self.dtype, 'bn1')(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = Conv3x3(self.num_features, use_bias=False, dtype=self.dtype, name='conv2')(x)
    return nn.relu(batch_norm(train, self.dtype, 'bn2')(x))


class ResNetSR(nn.Module):
  """Report 001's ResNet-SR, x4 (90 -> 360): upsampling, a conv, ResBlocks, a conv, sigmoid.

  Report: "an up-sampling one at the very beginning", "two free standing 2D convolutional layers",
  "two in total" "ResBlocks" with the skip connection, each made of "Convolution blocks": convolutions
  "proceeded by batch normalization and ReLu activation" with "a dropout layer between two skipped
  convolutional layers"; 90x90 in, 360x360 out.
  Chosen where the report is silent (mostly from the authors' conv-block script): bilinear upsampling
  by `scale` (half-pixel centres, matching the LR made by resizing; the authors used torch's
  align_corners=True variant); width 64 and 3x3 'same' convs; two convolution blocks per ResBlock,
  each conv3x3-BN-ReLU, dropout, conv3x3-BN-ReLU, so a ResBlock is x + block2(block1(x)); dropout rate
  0.1; convs before BatchNorm have no bias (BN's offset subsumes it); a sigmoid output for [0, 1]
  (the authors' output was linear). BatchNorm has PyTorch's defaults (layers.batch_norm).
  """
  scale: int = 4
  num_features: int = 64
  num_blocks: int = 2
  dropout_rate: float = 0.1
  dtype: Any = jnp.float32

  @property
  def input_multiple(self) -> int:
    return 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    if not isinstance(self.scale, int) or isinstance(self.scale, bool) or self.scale < 1:
      raise ValueError(f'ResNetSR upsamples by a positive integer scale, got {self.scale!r}.')
    if not 0 <= self.dropout_rate < 1:
      raise ValueError(f'ResNetSR dropout_rate must be in [0, 1), got {self.dropout_rate!r}.')
    n, h, w, c = x.shape
    x = jax.image.resize(x.astype(jnp.float32), (n, h * self.scale, w * self.scale, c), 'bilinear')
    x = Conv3x3(self.num_features, dtype=self.dtype, name='conv_first')(x.astype(self.dtype))
    for i in range(self.num_blocks):
      y = x
      for j in range(2):
        y = ConvolutionBlock(self.num_features, self.dropout_rate, self.dtype,
                             name=f'res{i}_block{j}')(y, train)
      x = x + y
    x = Conv3x3(3, dtype=self.dtype, name='conv_last')(x)
    return nn.sigmoid(x.astype(jnp.float32))
