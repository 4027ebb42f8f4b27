"""Report 004 phase 1 ("Deep Image Refinement Using GANs"), 160 -> 640: a conv autoencoder that upsamples
with bicubic interpolation, and a vanilla pixel-shuffle GAN (generator + small BatchNorm discriminator).

The report gives no widths or kernels for either. Chosen here:
- RefineAutoencoder: 3x3 ReLU convs. Encoder nf,nf @160 | pool | 2nf,2nf @80 | pool | 4nf @40 (5 convs,
  2 max-pools 2x2); decoder 4nf @40 | bicubic x4 | 2nf,2nf @160 | bicubic x4 | nf, 3 (linear) @640
  (5 convs, 2 upsamplings by 4), mirroring the encoder and keeping the widest convs at low resolution.
  Bicubic is resize.resize (MATLAB kernel, differentiable jnp matmuls), computed in float32.
- RefineGenerator: SRResNet without BatchNorm or residuals: 9x9 head, num_layers conv3x3+PReLU,
  pixel-shuffle x2 upsamplers, 9x9 tail, tanh mapped to [0,1].
- RefineDiscriminator: conv nf (LeakyReLU 0.2), convs 2nf/4nf/8nf stride 2 with BN + LeakyReLU 0.2,
  AdaptiveAvgPool2d(1), one dense logit (the report's sigmoid is in the BCE loss).
Inputs are ImageNet-normalised inside the generators, as the report's data transform did.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from enhance_jax.ops import resize
from enhance_jax.models.layers import (Conv3x3, Conv9x9, PReLU, UpsampleBlock, batch_norm,
                                      imagenet_normalize, num_doublings)


def bicubic_up(x, factor):
  """Bicubic upsampling of an NHWC batch by an integer factor, in float32, back in x's dtype."""
  n, h, w, c = x.shape
  return resize.resize(x, (h * factor, w * factor), 'bicubic', antialias=False).astype(x.dtype)


class RefineAutoencoder(nn.Module):
  """LR [N,h,w,3] -> [N,4h,4w,3] (h, w multiples of 4): 5 convs + 2 max-pools, then 5 convs + 2 bicubic x4."""
  num_features: int = 64
  scale: int = 4
  input_norm: bool = True
  dtype: Any = jnp.float32
  input_multiple = 4  # two 2x2 max-pools

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no BatchNorm or dropout
    if self.scale != 4:
      raise ValueError(f'RefineAutoencoder supports scale 4 only (two 2x2 pools, two x4 upsamplings), '
                       f'got {self.scale}.')
    if x.shape[1] % 4 or x.shape[2] % 4:
      raise ValueError(f'RefineAutoencoder needs a height and width divisible by 4, got {x.shape[1:3]}.')
    nf = self.num_features
    conv = lambda width, name, y: nn.relu(Conv3x3(width, dtype=self.dtype, name=name)(y))
    pool = lambda y: nn.max_pool(y, (2, 2), strides=(2, 2))
    x = x.astype(self.dtype)
    x = imagenet_normalize(x) if self.input_norm else x
    x = pool(conv(nf, 'enc2', conv(nf, 'enc1', x)))
    x = pool(conv(2 * nf, 'enc4', conv(2 * nf, 'enc3', x)))
    x = bicubic_up(conv(4 * nf, 'dec1', conv(4 * nf, 'enc5', x)), 4)
    x = bicubic_up(conv(2 * nf, 'dec3', conv(2 * nf, 'dec2', x)), 4)
    x = conv(nf, 'dec4', x)
    return Conv3x3(3, dtype=self.dtype, name='dec5')(x).astype(jnp.float32)


class RefineGenerator(nn.Module):
  """LR [N,h,w,3] in [0,1] -> SR [N,h*scale,w*scale,3] in [0,1]: the 'vanilla' pixel-shuffle generator."""
  num_features: int = 64
  num_layers: int = 4
  scale: int = 4
  input_norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no BatchNorm or dropout
    x = x.astype(self.dtype)
    x = imagenet_normalize(x) if self.input_norm else x
    x = PReLU(name='prelu_first')(Conv9x9(self.num_features, dtype=self.dtype, name='conv_first')(x))
    for i in range(self.num_layers):
      x = PReLU(name=f'prelu_{i}')(Conv3x3(self.num_features, dtype=self.dtype, name=f'conv_{i}')(x))
    for i in range(num_doublings(self.scale)):
      x = UpsampleBlock(self.num_features, self.dtype, name=f'upsample_{i}')(x)
    out = Conv9x9(3, dtype=self.dtype, name='conv_last')(x).astype(jnp.float32)
    return (jnp.tanh(out) + 1) / 2


class RefineDiscriminator(nn.Module):
  """HR [N,H,W,3] in [0,1] -> logits [N]; global average pooling serves any size."""
  num_features: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.leaky_relu(Conv3x3(self.num_features, dtype=self.dtype, name='conv0')(x.astype(self.dtype)), 0.2)
    for i, mult in enumerate((2, 4, 8), start=1):
      x = Conv3x3(self.num_features * mult, strides=2, use_bias=False, dtype=self.dtype, name=f'conv{i}')(x)
      x = nn.leaky_relu(batch_norm(train, self.dtype, f'bn{i}')(x), 0.2)
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return nn.Dense(1, dtype=self.dtype, name='dense')(x)[:, 0].astype(jnp.float32)
