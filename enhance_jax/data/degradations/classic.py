"""The classic per-image degradation ops, written once for numpy and jnp: bicubic down (+ blur),
Gaussian blur, down-and-up (reports 000-004), salt-and-pepper and colour noise, darken, brighten,
clip, identity, and Real-ESRGAN's USM sharpening of the target.

Resizing and blurring are small [out, in] matrices applied separably along H and W, so one
`tensordot` per axis serves numpy and jax.numpy alike; boundary handling is folded into the matrices.
Each `*_op` factory takes the spec's arguments and returns an op (protocol); registry.OPS names them.
"""

import functools

import numpy as np

from enhance_jax.data.degradations.protocol import (_check_factor, _check_range, _is_number, _split,
                                                     _uniform)
from enhance_jax.errors import UserError
from enhance_jax.ops.resize import (fold_reflect, gaussian_matrix, image_hw, resize, separable, to_matrix,
                                    xp_of)


def gaussian_blur(img, sigma: float):
  """Separable Gaussian blur of an HWC or NHWC image, reflect boundary, truncated at 3 sigma."""
  h, w = image_hw(img)
  return separable(img, gaussian_matrix(h, float(sigma)), gaussian_matrix(w, float(sigma)))


def _check_divisible(hr, scale):
  """Raises ValueError unless the HR height and width are multiples of `scale` (see `mod_crop`)."""
  h, w = image_hw(hr)
  if h % scale or w % scale:
    raise ValueError(f'HR size {h}x{w} is not divisible by scale {scale}; mod_crop the image first.')


def bicubic_down(hr, scale: int = 4, antialias: bool = True):
  """Plain bicubic downscale by an integer `scale` (the classic SR degradation), clipped to [0, 1]."""
  _check_divisible(hr, scale)
  h, w = image_hw(hr)
  lr = resize(hr, (h // scale, w // scale), 'bicubic', antialias)
  return xp_of(lr).clip(lr, 0.0, 1.0)


def bicubic_down_blur(hr, scale: int = 4, blur_sigma: float = 1.5):
  """Report 004's LQ: antialiased bicubic downscale, then a Gaussian blur (sigma = PIL radius) on the LR."""
  _check_divisible(hr, scale)
  h, w = image_hw(hr)
  lr = gaussian_blur(resize(hr, (h // scale, w // scale), 'bicubic', True), blur_sigma)
  return xp_of(lr).clip(lr, 0.0, 1.0)


def bicubic_op(factor):
  """HR -> LR by antialiased bicubic downscaling by an integer factor (the classic SR degradation)."""
  _check_factor('bicubic', factor, integer=True)
  return lambda img, rng: bicubic_down(img, int(factor))


def bicubic_blur_op(factor, sigma=1.5):
  """Report 004's LQ: bicubic down by `factor`, then a Gaussian blur of `sigma` on the LR."""
  _check_factor('bicubic_blur', factor, integer=True)
  return lambda img, rng: bicubic_down_blur(img, int(factor), float(sigma))


def blur_op(sigma):
  """A Gaussian blur of `sigma` pixels (same size)."""
  return lambda img, rng: gaussian_blur(img, float(sigma))


def down_up_op(factor, method='bicubic'):
  """Report 000: downscale to 1/factor and back up to the original size (same size out), clipped."""
  _check_factor('down_up', factor)

  def op(img, rng):
    h, w = image_hw(img)
    small = resize(img, (max(1, round(h / factor)), max(1, round(w / factor))), method, True)
    up = resize(small, (h, w), method, False)
    return xp_of(up).clip(up, 0.0, 1.0)
  return op


def _replace_op(name, low, high, fill):
  """A proportion p ~ U(low, high) of the pixels replaced by FILL(key, img) (report 001's noises)."""
  _check_range(name, low, high)

  def op(img, rng):
    kp, km, kf = _split(rng, 3)
    hit = _uniform(km, img.shape[:-1]) < _uniform(kp, (), low, high)
    return xp_of(img).where(hit[..., None], fill(kf, img), img)
  return op


def salt_pepper_op(low=0.3, high=0.6):
  """Report 001: a proportion p ~ U(low, high) of the pixels set to black or white (1/2 each)."""
  return _replace_op('salt_pepper', low, high,
                     lambda k, img: (_uniform(k, img.shape[:-1]) < 0.5).astype(np.float32)[..., None])


def color_noise_op(low=0.3, high=0.6):
  """Report 001: a proportion p ~ U(low, high) of the pixels replaced by a uniformly random colour."""
  return _replace_op('color_noise', low, high, lambda k, img: _uniform(k, img.shape))


def darken_op(low=0.3, high=0.6):
  """Report 001: every pixel lowered by a fraction p ~ U(low, high): x * (1 - p)."""
  _check_range('darken', low, high)
  return lambda img, rng: img * (1.0 - _uniform(rng, (), low, high))


def brighten_op(low=0.3, high=0.6):
  """Report 001: every pixel multiplied by 1 + p, p ~ U(low, high), clipped to [0, 1]."""
  _check_range('brighten', low, high)
  return lambda img, rng: xp_of(img).clip(img * (1.0 + _uniform(rng, (), low, high)), 0.0, 1.0)


def clip_op():
  """Clips to [0, 1]."""
  return lambda img, rng: xp_of(img).clip(img, 0.0, 1.0)


def identity_op():
  """The image unchanged."""
  return lambda img, rng: img


# ------------------------------------------------------------------------------ USM sharpening

# cv2.getGaussianKernel's fixed kernels for the small odd sizes when sigma <= 0.
_CV2_SMALL_GAUSSIANS = {1: (1.0,), 3: (0.25, 0.5, 0.25), 5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
                        7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125)}


@functools.lru_cache(maxsize=64)
def usm_matrix(size: int, radius: int = 50) -> np.ndarray:
  """[size, size] matrix of the 1-D blur of Real-ESRGAN's USMSharp: cv2.getGaussianKernel(k, 0), k the
  radius made odd (sigma 0.3 ((k - 1) / 2 - 1) + 0.8: 8 at radius 50), reflect boundary (filter2D)."""
  k = radius + 1 - radius % 2
  if k in _CV2_SMALL_GAUSSIANS:
    taps = np.array(_CV2_SMALL_GAUSSIANS[k])
  else:
    sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
    taps = np.exp(-((np.arange(k) - (k - 1) / 2) ** 2) / (2 * sigma ** 2))
    taps /= taps.sum()
  rows = np.broadcast_to(np.arange(size)[:, None], (size, k))
  return to_matrix(rows, rows + np.arange(k) - k // 2, np.broadcast_to(taps, rows.shape), size, size,
                   fold=fold_reflect)


def usm_sharpen(img, weight=0.5, radius=50, threshold=10):
  """Real-ESRGAN's USMSharp of an HWC or NHWC image in [0, 1] (numpy or jax): residual = img - blur;
  sharp = clip(img + weight * residual, 0, 1), blended in by the blurred mask |residual| * 255 >
  threshold, so flat areas are left as they are."""
  h, w = image_hw(img)
  xp = xp_of(img)
  img = xp.asarray(img, np.float32)
  mh, mw = usm_matrix(h, radius), usm_matrix(w, radius)
  residual = img - separable(img, mh, mw)
  soft_mask = separable((xp.abs(residual) * 255 > threshold).astype(np.float32), mh, mw)
  sharp = xp.clip(img + weight * residual, 0.0, 1.0)
  return soft_mask * sharp + (1 - soft_mask) * img


def usm_op(weight=0.5, *, radius=50, threshold=10):
  """Real-ESRGAN's USM sharpening of the target (usm_sharpen; its defaults), same size. Radius and
  threshold by keyword only: BasicSR's usm_sharp and USMSharp order them differently."""
  if not (_is_number(weight) and weight >= 0 and isinstance(radius, int) and radius >= 1
          and _is_number(threshold) and threshold >= 0):
    raise UserError(f'usm({weight!r}, radius={radius!r}, threshold={threshold!r}): weight >= 0, radius an '
                    'integer >= 1 and threshold >= 0 (0..255 scale) are needed, e.g. '
                    'usm(0.5, radius=50, threshold=10).')
  return lambda img, rng: usm_sharpen(img, weight, radius, threshold)
