"""Image-quality metrics on float [0, 1] HWC/NHWC arrays: dm-pix PSNR/SSIM, MSE and the SR protocol.

Every metric returns one value per image (shape [N] for NHWC, a scalar for HWC) and is jittable.
The published SR protocol scores uint8 images: pass both images through `quantize` first to match it.
"""

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np


def _xp(x):
  """The array namespace of `x`: jnp for jax arrays and tracers, numpy otherwise."""
  return jnp if isinstance(x, jax.Array) else np


def _as_float(a, b):
  """Both images as float32 jnp arrays (dm-pix refuses integer inputs)."""
  return jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)


def mse(a, b):
  """Mean squared error per image."""
  a, b = _as_float(a, b)
  return pix.mse(a, b)


def psnr(a, b, max_val: float = 1.0):
  """PSNR in dB per image, for images whose dynamic range is `max_val`; inf for identical images."""
  a, b = _as_float(a, b)
  return pix.psnr(a, b) + 20.0 * jnp.log10(max_val)


def ssim(a, b, max_val: float = 1.0):
  """SSIM per image: 11x11 Gaussian window, sigma 1.5, valid region (skimage's gaussian_weights=True)."""
  a, b = _as_float(a, b)
  return pix.ssim(a, b, max_val=max_val)


def rgb_to_y(img):
  """ITU-R BT.601 luma of [0, 1] RGB as MATLAB rgb2ycbcr computes it: HW1/NHW1 in [16/255, 235/255]."""
  r, g, b = img[..., 0:1], img[..., 1:2], img[..., 2:3]
  return (16.0 + 65.481 * r + 128.553 * g + 24.966 * b) / 255.0


def quantize(img):
  """Clips and rounds images to the 256 uint8 levels (as BasicSR's tensor2img), to score as papers do."""
  xp = _xp(img)
  return xp.round(xp.clip(img, 0.0, 1.0) * 255.0) / 255.0


def _crop_border(img, border: int):
  """Drops `border` pixels from each side of H and W."""
  if border == 0:
    return img
  return img[..., border:-border, border:-border, :]


def sr_metrics(sr, hr, scale: int) -> dict:
  """The SR protocol: RGB psnr/ssim/mse on the whole image; psnr_y/ssim_y on Y with `scale` px borders cut.

  `scale` must be a Python int (static under jit). `sr` is clipped to [0, 1]; quantize both inputs first
  to reproduce published (uint8) numbers.
  """
  sr = jnp.clip(jnp.asarray(sr, jnp.float32), 0.0, 1.0)
  hr = jnp.asarray(hr, jnp.float32)
  sr_y, hr_y = (_crop_border(rgb_to_y(x), scale) for x in (sr, hr))
  return {
      'psnr': psnr(sr, hr),
      'ssim': ssim(sr, hr),
      'mse': mse(sr, hr),
      'psnr_y': psnr(sr_y, hr_y),
      'ssim_y': ssim(sr_y, hr_y),
  }
