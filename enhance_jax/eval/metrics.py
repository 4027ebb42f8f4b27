"""Image-quality metrics on float [0, 1] HWC/NHWC arrays: dm-pix PSNR/SSIM, MSE and the SR protocol;
and NIMA's rating-histogram metrics: EMD (its loss), LCC and SRCC of mean scores.

Every metric returns one value per image (shape [N] for NHWC, a scalar for HWC) and is jittable.
The published SR protocol scores uint8 images: pass both images through `quantize` first to match it.
"""

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np

from enhance_jax.models.nima import mean_score, std_score


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


# ---------------------------------------------------------------- rating histograms (NIMA, report 002)


def cdf(p):
  """Cumulative sums over the last axis (the CDF of each histogram)."""
  return jnp.cumsum(p, axis=-1)


def emd(p, q, r: float = 2.0):
  """NIMA's normalised EMD between histograms [..., N] (rows sum to 1) -> [...]; 0 when equal.

  (mean_k |CDF_p(k) - CDF_q(k)|^r)^(1/r). The sqrt at r = 2 has an infinite gradient at 0, so the
  loss uses a tiny floor inside it (1e-12), which changes no value above 1e-6.
  """
  p, q = jnp.asarray(p, jnp.float32), jnp.asarray(q, jnp.float32)
  d = jnp.abs(cdf(p) - cdf(q))
  m = jnp.mean(d ** r, axis=-1)
  return jnp.where(m > 0, jnp.maximum(m, 1e-12) ** (1.0 / r), 0.0)


def emd_loss(pred, true, r: float = 2.0):
  """The batch mean of `emd` (NIMA's training loss)."""
  return jnp.mean(emd(pred, true, r))


def histogram_mean_std(hist):
  """(mean, std) of the rating 1..10 of histograms [..., 10] (normalised or vote counts)."""
  hist = jnp.asarray(hist, jnp.float32)
  hist = hist / jnp.sum(hist, axis=-1, keepdims=True)
  return mean_score(hist), std_score(hist)


def lcc(pred, true) -> float:
  """Pearson linear correlation of two 1-D score arrays (nan when either is constant)."""
  a, b = np.asarray(pred, np.float64).ravel(), np.asarray(true, np.float64).ravel()
  a, b = a - a.mean(), b - b.mean()
  denom = np.sqrt((a * a).sum() * (b * b).sum())
  return float((a * b).sum() / denom) if denom > 0 else float('nan')


def _ranks(x: np.ndarray) -> np.ndarray:
  """Ranks 1..n with ties given their average rank (scipy.stats.rankdata's 'average')."""
  order = np.argsort(x, kind='mergesort')
  sorted_x = x[order]
  starts = np.r_[True, sorted_x[1:] != sorted_x[:-1]]
  group = np.cumsum(starts) - 1
  first = np.flatnonzero(starts)
  last = np.r_[first[1:], len(x)] - 1
  avg = (first + last) / 2.0 + 1.0
  ranks = np.empty(len(x), np.float64)
  ranks[order] = avg[group]
  return ranks


def srcc(pred, true) -> float:
  """Spearman rank correlation of two 1-D score arrays: Pearson of their (tie-averaged) ranks."""
  a, b = np.asarray(pred, np.float64).ravel(), np.asarray(true, np.float64).ravel()
  return lcc(_ranks(a), _ranks(b))
