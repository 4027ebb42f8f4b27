"""VGG-style discriminator (SRGAN/ESRGAN, reports 003 and 004): 8 convs 64..512 with alternate stride 2,
then global average pooling, dense 1024, LeakyReLU and one real/fake logit. Works on any patch size.

pool='flatten' is SRGAN's original head (report 003): the final map is flattened, so the input size is
fixed by the weights (64x64 -> 4x4x512 = 8192 features). Flattening is in NHWC (h, w, c) order, unlike
torch's (c, h, w): importing a PyTorch dense1 for it would need its rows permuted."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from enhance_jax.ops.conv import Conv


class VGGStyleDiscriminator(nn.Module):
  """HR image [N,H,W,3] in [0,1] -> logits [N]; BatchNorm after every conv but the first when norm='batch'."""
  num_features: int = 64
  dense_features: int = 1024
  norm: str = 'batch'
  pool: str = 'mean'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.pool not in ('mean', 'flatten'):
      raise ValueError(f"discriminator pool must be 'mean' or 'flatten', got {self.pool!r}.")
    x = x.astype(self.dtype)
    widths = [self.num_features * m for m in (1, 1, 2, 2, 4, 4, 8, 8)]
    for i, width in enumerate(widths):
      stride = 1 if i % 2 == 0 else 2
      x = Conv(width, (3, 3), strides=stride, padding=1, use_bias=(self.norm == 'none' or i == 0),
               dtype=self.dtype, name=f'conv{i}')(x)
      if self.norm == 'batch' and i > 0:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         dtype=self.dtype, name=f'bn{i}')(x)
      x = nn.leaky_relu(x, 0.2)
    if self.pool == 'flatten':
      x = x.reshape(x.shape[0], -1)
    else:
      x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    x = nn.leaky_relu(nn.Dense(self.dense_features, dtype=self.dtype, name='dense1')(x), 0.2)
    return nn.Dense(1, dtype=self.dtype, name='dense2')(x)[:, 0].astype(jnp.float32)
