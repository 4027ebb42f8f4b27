"""Real-ESRGAN's U-Net discriminator with spectral normalisation (Wang et al. 2021, `UNetDiscriminatorSN`):
one real/fake logit per pixel instead of one per image.

conv0 (3x3, bias) -> three 4x4 stride-2 convs down (x2, x4, x8 features) -> three bilinear x2 upsamplings,
each followed by a 3x3 conv and, with skip connections, the encoder map of the same size added -> two
more 3x3 convs -> conv9 (3x3, bias) to one channel. LeakyReLU 0.2 after every conv but the last. Every
conv but the first and last is spectrally normalised (flax's `nn.SpectralNorm`, one power iteration a
call as torch's `spectral_norm`) and has no bias. The power iteration's `u` and the last `sigma` live in
the 'batch_stats' collection: updated in training (`train=True`, `mutable=['batch_stats']`), read only
otherwise. The input is the HR image in [0, 1] as is (Real-ESRGAN normalises nothing); its sides must be
multiples of 8.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from enhance_jax.ops.conv import Conv


def upsample2x(x):
  """Bilinear x2 upsampling with half-pixel centres (torch's `interpolate(..., align_corners=False)`)."""
  n, h, w, c = x.shape
  return jax.image.resize(x, (n, 2 * h, 2 * w, c), method='bilinear')


class UNetDiscriminatorSN(nn.Module):
  """HR image [N,H,W,3] in [0,1] -> logits [N,H,W,1] (float32). Param names follow Real-ESRGAN's
  conv0..conv9; the spectral-norm statistics of convK are under batch_stats['convK_sn']."""
  num_features: int = 64
  skip_connection: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    h, w = x.shape[1:3]
    if h % 8 or w % 8:
      raise ValueError(f'the unet_sn discriminator needs image sides that are multiples of 8, '
                       f'got {h}x{w}; use a data.patch_size that is a multiple of 8.')
    f = self.num_features
    act = lambda y: nn.leaky_relu(y, 0.2)

    def sn_conv(i, width, y, kernel=3, stride=1):
      conv = Conv(width, (kernel, kernel), strides=stride, padding=1, use_bias=False,
                  dtype=self.dtype, name=f'conv{i}')
      return act(nn.SpectralNorm(conv, name=f'conv{i}_sn')(y, update_stats=train))

    x = x.astype(self.dtype)
    x0 = act(Conv(f, (3, 3), padding=1, dtype=self.dtype, name='conv0')(x))
    x1 = sn_conv(1, 2 * f, x0, kernel=4, stride=2)
    x2 = sn_conv(2, 4 * f, x1, kernel=4, stride=2)
    x3 = sn_conv(3, 8 * f, x2, kernel=4, stride=2)
    y = x3
    for i, width, skip in ((4, 4 * f, x2), (5, 2 * f, x1), (6, f, x0)):
      y = sn_conv(i, width, upsample2x(y))
      if self.skip_connection:
        y = y + skip
    y = sn_conv(8, f, sn_conv(7, f, y))
    return Conv(1, (3, 3), padding=1, dtype=self.dtype, name='conv9')(y).astype(jnp.float32)
