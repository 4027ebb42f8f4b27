"""DCGAN-SR (report 003 sec. V, after Yan Wang's EE367 report): a ReLU/BatchNorm generator of residual
upsampling blocks with a sigmoid output, and a DCGAN-style discriminator. Its author never trained it.

The report leaves the sizes open or inconsistent; what this file chooses, and why:
- head conv 4x4 with SAME padding (flax pads 1 before, 2 after), so 16 stays 16 (the listed padding 1
  would give 15 and then 60, not 64);
- all five blocks have width num_features (128) with 3x3 convs; only the last log2(scale) blocks upsample
  (nearest x2), so x4 comes from 2 of 5 blocks instead of x32 from all 5;
- the transposed conv is 3x3, stride 1, SAME: upsampling stays with the listed Upsample(factor=2);
- a block's skip is its input, nearest-upsampled when the block upsamples (widths never change, so no
  projection is needed);
- the input is ImageNet-normalised inside the model (report 003's data transform); the sigmoid output
  is already [0,1];
- discriminator convs run conv-BN-activation (the list writes activation before BN), and the 512-wide
  map is flattened, so its input size is fixed by the weights (64x64 -> 4x4x512 = 8192).
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from enhance_jax.models.rrdbnet import upsample_nearest
from enhance_jax.models.layers import Conv3x3, batch_norm, imagenet_normalize, num_doublings
from enhance_jax.ops.conv import Conv


class ResidualUpsampleBlock(nn.Module):
  """conv-BN-ReLU-conv-BN-ReLU-[nearest x2]-BN-ReLU-ConvTranspose, plus the (upsampled) input."""
  num_features: int = 128
  upsample: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    y = Conv3x3(self.num_features, use_bias=False, dtype=self.dtype, name='conv1')(x)
    y = nn.relu(batch_norm(train, self.dtype, 'bn1')(y))
    y = Conv3x3(self.num_features, use_bias=False, dtype=self.dtype, name='conv2')(y)
    y = nn.relu(batch_norm(train, self.dtype, 'bn2')(y))
    if self.upsample:
      x, y = upsample_nearest(x), upsample_nearest(y)
    y = nn.relu(batch_norm(train, self.dtype, 'bn3')(y))
    y = nn.ConvTranspose(self.num_features, (3, 3), padding='SAME', dtype=self.dtype, name='deconv')(y)
    return x + y


class DCGANSRGenerator(nn.Module):
  """LR [N,h,w,3] in [0,1] -> SR [N,h*scale,w*scale,3] in [0,1] (sigmoid)."""
  num_features: int = 128
  num_blocks: int = 5
  scale: int = 4
  input_norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    ups = num_doublings(self.scale)
    if ups > self.num_blocks:
      raise ValueError(f'DCGAN-SR needs num_blocks >= log2(scale) = {ups}, got {self.num_blocks}.')
    x = x.astype(self.dtype)
    x = imagenet_normalize(x) if self.input_norm else x
    x = nn.relu(Conv(self.num_features, (4, 4), padding='SAME', dtype=self.dtype, name='conv_first')(x))
    for i in range(self.num_blocks):
      x = ResidualUpsampleBlock(self.num_features, i >= self.num_blocks - ups, self.dtype,
                                name=f'body_{i}')(x, train)
    x = nn.relu(Conv3x3(self.num_features, dtype=self.dtype, name='conv_hr1')(x))
    x = nn.relu(Conv3x3(self.num_features // 2, dtype=self.dtype, name='conv_hr2')(x))
    return nn.sigmoid(Conv3x3(3, dtype=self.dtype, name='conv_last')(x).astype(jnp.float32))


class DCGANSRDiscriminator(nn.Module):
  """HR [N,64,64,3] -> logits [N]: conv, 4 stride-2 convs (BN+LeakyReLU), 2 convs (BN+ReLU), 2 dense."""
  num_features: int = 64
  dense_features: int = 1024
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    nf = self.num_features
    x = nn.leaky_relu(Conv3x3(nf, dtype=self.dtype, name='conv0')(x.astype(self.dtype)), 0.2)
    layers = [(nf, 2, 'lrelu'), (2 * nf, 2, 'lrelu'), (4 * nf, 2, 'lrelu'), (8 * nf, 2, 'lrelu'),
              (8 * nf, 1, 'relu'), (8 * nf, 1, 'relu')]
    for i, (width, stride, act) in enumerate(layers, start=1):
      x = Conv3x3(width, strides=stride, use_bias=False, dtype=self.dtype, name=f'conv{i}')(x)
      x = batch_norm(train, self.dtype, f'bn{i}')(x)
      x = nn.leaky_relu(x, 0.2) if act == 'lrelu' else nn.relu(x)
    x = x.reshape(x.shape[0], -1)
    x = nn.leaky_relu(nn.Dense(self.dense_features, dtype=self.dtype, name='dense1')(x), 0.2)
    return nn.Dense(1, dtype=self.dtype, name='dense2')(x)[:, 0].astype(jnp.float32)
