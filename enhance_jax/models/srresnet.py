"""SRResNet, the SRGAN generator (Ledig et al. 2017; reports 003 and 004): 9x9 head + PReLU, residual
blocks conv-BN-PReLU-conv-BN, conv+BN with a long skip, pixel-shuffle x2 upsamplers, 9x9 tail.

PReLU is one learnable slope per layer (init 0.25), as torch's nn.PReLU() default and the SRGAN paper.
Report 003's layer list says relu in the head and blocks while its text says PReLU; this follows the
text, the paper and report 004. Convs followed by BatchNorm have no bias (BN's offset subsumes it).
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from enhance_jax.models.layers import (Conv3x3, Conv9x9, PReLU, UpsampleBlock, batch_norm,
                                       imagenet_normalize, num_doublings)


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
