"""EDSR and MDSR (Lim et al. 2017, "Enhanced Deep Residual Networks"): residual blocks without
BatchNorm, a long skip, a pixel-shuffle upsampler; the DIV2K mean is subtracted from the input and
added back. MDSR shares one body between x2, x3 and x4 and keeps per-scale heads and tails.

Submodule names follow BasicSR's edsr_arch: conv_first, body_{i}/conv1|conv2, conv_after_body,
upsample/conv_{j} (BasicSR `upsample.{2j}`, EDSR-PyTorch `tail.0.{2j}`), conv_last. The images are
[0, 1]; the mean shift works in [0, img_range] as both PyTorch repositories do (EDSR-PyTorch's
`sub_mean`/`add_mean` 1x1 convs hold exactly that shift). See io/weights/generators.py for the key mapping.
"""

import functools
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from enhance_jax.models.layers import pixel_shuffle
from enhance_jax.ops.conv import Conv

Conv3x3 = functools.partial(Conv, kernel_size=(3, 3), padding=1)
# DIV2K's RGB mean, which both BasicSR and EDSR-PyTorch subtract.
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def sub_mean(x, rgb_mean, img_range):
  """MeanShift(sign=-1): [0,1] RGB -> (x - mean) * img_range."""
  return (x - jnp.asarray(rgb_mean, x.dtype)) * img_range


def add_mean(x, rgb_mean, img_range):
  """MeanShift(sign=+1), the inverse of `sub_mean`."""
  return x / img_range + jnp.asarray(rgb_mean, x.dtype)


class ResBlock(nn.Module):
  """conv-ReLU-conv (3x3; MDSR's pre-processing uses 5x5), scaled by `res_scale`, plus the identity
  (BasicSR's ResidualBlockNoBN)."""
  num_features: int = 64
  res_scale: float = 1.0
  dtype: Any = jnp.float32
  kernel_size: int = 3

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(Conv, self.num_features, kernel_size=(self.kernel_size,) * 2,
                             padding=self.kernel_size // 2, dtype=self.dtype)
    y = conv(name='conv2')(nn.relu(conv(name='conv1')(x)))
    return x + self.res_scale * y


class Upsampler(nn.Module):
  """x2^n: n times conv3x3 to 4*num_features then pixel shuffle 2; x3: one conv to 9*num_features,
  pixel shuffle 3. No activation (EDSR's `act=False`). Convs conv_0, conv_1, ..."""
  num_features: int = 64
  scale: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.scale == 3:
      factors = (3,)
    elif self.scale >= 2 and not self.scale & (self.scale - 1):
      factors = (2,) * int(math.log2(self.scale))
    else:
      raise ValueError(f'Upsampler supports x3 and powers of two, got scale {self.scale}.')
    for j, factor in enumerate(factors):
      x = Conv3x3(self.num_features * factor * factor, dtype=self.dtype, name=f'conv_{j}')(x)
      x = pixel_shuffle(x, factor)
    return x


# EDSR's two published sizes as (num_blocks, num_features, res_scale).
EDSR_SIZES = {'baseline': (16, 64, 1.0), 'large': (32, 256, 0.1)}


def _body(x, num_blocks, num_features, res_scale, dtype):
  """body_0..body_{n-1} then conv_after_body, plus the long skip (called inside a compact method)."""
  res = x
  for i in range(num_blocks):
    res = ResBlock(num_features, res_scale, dtype, name=f'body_{i}')(res)
  return Conv3x3(num_features, dtype=dtype, name='conv_after_body')(res) + x


class EDSR(nn.Module):
  """LR image [N,h,w,3] in [0,1] -> SR image [N,h*scale,w*scale,3] (float32).

  EDSR baseline: 16 blocks of 64 features, res_scale 1; EDSR (large): 32 blocks of 256, res_scale 0.1.
  `size='baseline'` builds the trunk the fields give (their defaults are the baseline's, and an
  imported checkpoint states them); `size='large'` builds the large EDSR. 'large' with any other
  num_blocks/num_features/res_scale than the baseline's defaults is an error rather than a silent
  override: for another trunk keep size='baseline' and set the three fields.
  """
  num_blocks: int = 16
  num_features: int = 64
  scale: int = 4
  res_scale: float = 1.0
  size: str = 'baseline'
  img_range: float = 255.0
  rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN
  dtype: Any = jnp.float32

  def __post_init__(self):
    super().__post_init__()
    if self.size not in EDSR_SIZES:
      raise ValueError(f"size={self.size!r}; use 'baseline' or 'large'")
    given = (self.num_blocks, self.num_features, float(self.res_scale))
    if self.size == 'large' and given not in (EDSR_SIZES['baseline'], EDSR_SIZES['large']):
      raise ValueError("size='large' is 32 blocks of 256 features, res_scale 0.1, but num_blocks/"
                       f'num_features/res_scale are {given}; drop them or use size=\'baseline\'')

  @property
  def trunk(self) -> tuple[int, int, float]:
    """(num_blocks, num_features, res_scale) this module builds."""
    if self.size == 'large':
      return EDSR_SIZES['large']
    return self.num_blocks, self.num_features, self.res_scale

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no BatchNorm or dropout
    num_blocks, nf, res_scale = self.trunk
    x = sub_mean(x.astype(jnp.float32), self.rgb_mean, self.img_range).astype(self.dtype)
    feat = Conv3x3(nf, dtype=self.dtype, name='conv_first')(x)
    res = _body(feat, num_blocks, nf, res_scale, self.dtype)
    res = Upsampler(nf, self.scale, self.dtype, name='upsample')(res)
    out = Conv3x3(3, dtype=self.dtype, name='conv_last')(res)
    return add_mean(out.astype(jnp.float32), self.rgb_mean, self.img_range)


class MDSR(nn.Module):
  """Multi-scale EDSR: LR [N,h,w,3] in [0,1] -> SR [N,h*S,w*S,3] for S in `scales`, one parameter set.

  `model.apply(variables, x, scale=S)`: S is a static Python int (one compiled program per scale);
  None means `scale`, the default scale. Per scale S: `pre_process_x{S}_{0,1}` (two residual blocks
  with 5x5 kernels) after the shared conv_first, and `upsample_x{S}` (pixel shuffle); shared between
  scales: conv_first, body_{i}, conv_after_body, conv_last. `init` creates every scale's branches.

  EDSR-PyTorch's model/mdsr.py (its released mdsr_baseline r16f64 and mdsr r80f64): 16 blocks of 64
  give the paper's "3.2M" baseline MDSR (3,227,203 parameters), 80 blocks of 64 its 8.0M MDSR.
  """
  num_blocks: int = 16
  num_features: int = 64
  scale: int = 2
  scales: tuple[int, ...] = (2, 3, 4)
  res_scale: float = 1.0
  img_range: float = 255.0
  rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN
  dtype: Any = jnp.float32

  def __post_init__(self):
    super().__post_init__()
    if self.scale not in tuple(self.scales):
      raise ValueError(f'scale={self.scale} is not one of scales={tuple(self.scales)}')

  @nn.compact
  def __call__(self, x, train: bool = False, scale: int | None = None):
    del train  # no BatchNorm or dropout
    scale = self.scale if scale is None else scale
    if scale not in tuple(self.scales):
      raise ValueError(f'MDSR was built for scales {tuple(self.scales)}, not x{scale}.')
    # Only the asked scale runs, except at init, which creates every scale's parameters.
    branches = tuple(self.scales) if self.is_initializing() else (scale,)
    nf = self.num_features
    x = sub_mean(x.astype(jnp.float32), self.rgb_mean, self.img_range).astype(self.dtype)
    feat = Conv3x3(nf, dtype=self.dtype, name='conv_first')(x)
    pre = {}
    for s in branches:
      h = feat
      for k in range(2):
        h = ResBlock(nf, 1.0, self.dtype, kernel_size=5, name=f'pre_process_x{s}_{k}')(h)
      pre[s] = h
    res = _body(pre[scale], self.num_blocks, nf, self.res_scale, self.dtype)
    up = {s: Upsampler(nf, s, self.dtype, name=f'upsample_x{s}')(res) for s in branches}
    out = Conv3x3(3, dtype=self.dtype, name='conv_last')(up[scale])
    return add_mean(out.astype(jnp.float32), self.rgb_mean, self.img_range)
