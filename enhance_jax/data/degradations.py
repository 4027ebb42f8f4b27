"""Degradations and augmentations: pure functions written once for numpy (grain workers) and jnp (device).

Resizing and blurring are small [out, in] matrices applied separably along H and W, so one `tensordot`
per axis serves numpy and jax.numpy alike; boundary handling is folded into the matrices. Real-ESRGAN's
second-order chain (`realesrgan`) is jnp alone: it runs per image inside the jitted step.
"""

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import scipy.ndimage

from enhance_jax.ops import jpeg as jpeg_lib
from enhance_jax.ops.resize import (fold_reflect, gaussian_matrix, image_hw, resize, separable,
                                 to_matrix, torch_resize_matrix, xp_of)
from enhance_jax.errors import UserError


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


def flip_rot90(img, hflip: bool, vflip: bool, rot90: bool):
  """BasicSR's augment: optional horizontal flip, vertical flip, then H<->W transpose (HWC or NHWC view)."""
  if hflip:
    img = img[..., ::-1, :]
  if vflip:
    img = img[..., ::-1, :, :]
  if rot90:
    img = img.swapaxes(-3, -2)
  return img


def random_flip_rot90(img, rng: np.random.Generator):
  """`flip_rot90` with the three bits drawn from `rng`, each with probability 1/2."""
  hflip, vflip, rot90 = (bool(b) for b in rng.random(3) < 0.5)
  return flip_rot90(img, hflip, vflip, rot90)


def random_crop(img, size: int, rng: np.random.Generator):
  """A random size x size patch of an HWC numpy image."""
  h, w = img.shape[:2]
  if h < size or w < size:
    raise UserError(f'An image of {h}x{w} pixels is smaller than the {size}x{size} training patch; '
                    'lower data.patch_size or remove the image.')
  top = int(rng.integers(0, h - size + 1))
  left = int(rng.integers(0, w - size + 1))
  return img[top:top + size, left:left + size]


def center_crop(img, size: int):
  """The centred size x size square of an HWC or NHWC image (top-left rounding when odd)."""
  h, w = image_hw(img)
  top, left = (h - size) // 2, (w - size) // 2
  return img[..., top:top + size, left:left + size, :]


def square_resize(img, side: int):
  """Reports 003/004's HR preparation: the largest centred square, resized (bicubic, antialiased) to
  side x side. uint8 (0..255) or float ([0, 1]) HWC/NHWC in, float32 in [0, 1] out."""
  h, w = image_hw(img)
  xp = xp_of(img)
  sq = center_crop(img, min(h, w))
  sq = xp.asarray(sq, np.float32) / (255.0 if img.dtype == np.uint8 else 1.0)
  if min(h, w) != side:
    sq = resize(sq, (side, side), 'bicubic', True)
  return xp.clip(sq, 0.0, 1.0)


def affine_matrix(h: int, w: int, theta=0.0, tx=0.0, ty=0.0, shear=0.0, zx=1.0, zy=1.0):
  """Keras' `apply_affine_transform` matrix (keras-preprocessing 1.1, the scipy version): 3x3, mapping an
  output (row, col, 1) to the input point it samples, about the image centre (size / 2 - 0.5).

  rotation(theta deg) @ shift(tx rows, ty cols) @ shear(deg: [[1, -sin], [0, cos]]) @ zoom(zx rows, zy cols).
  """
  t, s = np.deg2rad(theta), np.deg2rad(shear)
  m = (np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
       @ np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
       @ np.array([[1, -np.sin(s), 0], [0, np.cos(s), 0], [0, 0, 1]])
       @ np.diag([zx, zy, 1.0]))
  o = np.array([[1, 0, h / 2 - 0.5], [0, 1, w / 2 - 0.5], [0, 0, 1]])
  return o @ m @ np.linalg.inv(o)


def apply_affine(img, theta=0.0, tx=0.0, ty=0.0, shear=0.0, zx=1.0, zy=1.0):
  """Resamples an HWC numpy image through `affine_matrix`: bilinear (order 1), fill_mode 'nearest'
  (edge pixels repeated), per channel, like Keras. float32 out."""
  x = np.asarray(img, np.float32)
  m = affine_matrix(x.shape[0], x.shape[1], theta, tx, ty, shear, zx, zy)
  return np.stack([scipy.ndimage.affine_transform(x[..., c], m[:2, :2], m[:2, 2], order=1, mode='nearest')
                   for c in range(x.shape[-1])], axis=-1)


def random_affine(img, rng: np.random.Generator, rotation=0.0, shift=0.0, shear=0.0, zoom=0.0,
                  hflip=False):
  """Keras `ImageDataGenerator(rotation_range=rotation, width_shift_range=shift,
  height_shift_range=shift, shear_range=shear, zoom_range=zoom, horizontal_flip=hflip,
  fill_mode='nearest')` on one HWC float image, every draw from `rng`.

  As in Keras' `get_random_transform`: theta ~ U(-rotation, rotation) degrees; row and column shifts
  ~ U(-shift, shift) * H and * W; shear ~ U(-shear, shear) degrees; zx, zy independently
  ~ U(1 - zoom, 1 + zoom); then a horizontal flip with probability 1/2. A zero range draws nothing;
  all zero and no flip returns `img` itself (no resampling).
  """
  h, w = img.shape[:2]
  theta = rng.uniform(-rotation, rotation) if rotation else 0.0
  tx = rng.uniform(-shift, shift) * h if shift else 0.0
  ty = rng.uniform(-shift, shift) * w if shift else 0.0
  sh = rng.uniform(-shear, shear) if shear else 0.0
  zx, zy = rng.uniform(1 - zoom, 1 + zoom, 2) if zoom else (1.0, 1.0)
  if rotation or shift or shear or zoom:
    img = apply_affine(img, theta, tx, ty, sh, zx, zy)
  if hflip and rng.random() < 0.5:
    img = img[:, ::-1]
  return img


def mod_crop(img, scale: int):
  """Crops H and W (HWC or NHWC) down to multiples of `scale`, keeping the top-left corner."""
  h, w = image_hw(img)
  return img[..., :h - h % scale, :w - w % scale, :]


# ------------------------------------------------------------------------------------------------
# Degradation ops: `op(image, rng) -> image` on one HWC float image in [0, 1], composed from a spec
# such as 'bicubic(4)|blur(1.5)' or "one_of('darken(0.3, 0.6)', 'brighten(0.3, 0.6)')". `rng` is a
# numpy Generator in grain workers and a jax key on the device (`apply_batch` vmaps an op over a
# batch with one key per image); each op is written once against both through `_split`/`_uniform`.
# A new op is one factory `(*spec args) -> op` and one line in OPS.
# ------------------------------------------------------------------------------------------------


def _split(rng, n):
  """N independent generators: jax keys split; a numpy Generator is sequential, so itself N times."""
  if isinstance(rng, np.random.Generator):
    return [rng] * n
  return list(jax.random.split(rng, n))


def _uniform(rng, shape=(), low=0.0, high=1.0):
  """float32 uniform draws in [low, high) from a numpy Generator or a jax key."""
  if isinstance(rng, np.random.Generator):
    return np.asarray(rng.uniform(low, high, shape), np.float32)
  return jax.random.uniform(rng, shape, jnp.float32, low, high)


def _check_range(name, low, high):
  if not 0 <= low <= high <= 1:
    raise UserError(f'{name}({low}, {high}): the proportion range must satisfy 0 <= low <= high <= 1.')


def _check_factor(name, factor, integer=False):
  if not (isinstance(factor, (int, float)) and factor >= 1) or (integer and factor != int(factor)):
    kind = 'an integer' if integer else 'a number'
    raise UserError(f'{name}({factor!r}): the factor must be {kind} >= 1 (e.g. {name}(4)).')


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


def one_of_op(*specs):
  """One of the given specs per image, uniformly (report 001 draws one noise type per image)."""
  if not specs:
    raise UserError('one_of() needs at least one spec, e.g. one_of("darken(0.3, 0.6)", "brighten").')
  ops = [parse(s) for s in specs]

  def op(img, rng):
    kc, kop = _split(rng, 2)
    u = _uniform(kc)
    if isinstance(rng, np.random.Generator):
      return ops[min(int(u * len(ops)), len(ops) - 1)](img, kop)
    index = jnp.minimum((u * len(ops)).astype(jnp.int32), len(ops) - 1)
    return jax.lax.switch(index, [lambda x, f=f: f(x, kop).astype(jnp.float32) for f in ops],
                          jnp.asarray(img, jnp.float32))
  op.branches = ops
  return op


# ------------------------------------------------------------------------------------------------
# Real-ESRGAN's second-order degradation (Wang et al., "Real-ESRGAN", ICCV-W 2021), in jnp for the
# device: blur -> resize -> noise -> JPEG, then [blur] -> resize -> noise -> {resize back + sinc,
# JPEG} in random order, each with Real-ESRGAN's probabilities and ranges (realesrgan_defaults).
#
# Shapes inside jit are static, but Real-ESRGAN resizes by random factors. Each intermediate image
# therefore lives in a fixed buffer, the largest its stage's resize range allows (+1 sample), with the
# content in the top-left corner and its size traced (`hw`). Every step reads only the content:
# resizes are [out buffer, in buffer] matrices built from the traced sizes (zero outside), blurs pad
# by reflection at the content's edge (index gathers), the Poisson noise counts levels inside it and
# JPEG replicates its edges out to whole MCUs; so noise and JPEG act at the intermediate resolution,
# as in Real-ESRGAN, at the price of computing on the whole buffer. (jax.image.scale_and_translate
# takes traced scales too, but has no 'area' mode and neither PyTorch's a = -0.75 bicubic nor its
# aliasing, non-antialiased downscaling, which are part of the degradation.)
# ------------------------------------------------------------------------------------------------

KERNEL_KINDS = ('iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso', 'plateau_aniso')
_HIGHEST = jax.lax.Precision.HIGHEST


def realesrgan_defaults():
  """Real-ESRGAN's published degradation settings (options/train_realesrgan_x4plus.yml with its
  RealESRGANDataset options) as the config section data.realesrgan; the suffix 2: second order."""
  kernel_prob = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
  return ml_collections.ConfigDict({
      # first order: blur -> resize -> noise -> JPEG
      'blur_kernel_size': 21,              # kernels are odd 7..21, drawn uniformly, in a 21x21 array
      'kernel_list': KERNEL_KINDS, 'kernel_prob': kernel_prob,
      'sinc_prob': 0.1,                    # a sinc kernel instead of kernel_list's
      'blur_sigma': (0.2, 3.0), 'betag_range': (0.5, 4.0), 'betap_range': (1.0, 2.0),
      'resize_prob': (0.2, 0.7, 0.1),      # up, down, keep
      'resize_range': (0.15, 1.5),
      'gaussian_noise_prob': 0.5,          # else Poisson
      'noise_range': (1.0, 30.0),          # Gaussian sigma, 0..255 scale
      'poisson_scale_range': (0.05, 3.0), 'gray_noise_prob': 0.4,
      'jpeg_range': (30.0, 95.0),          # quality
      # second order: [blur] -> resize -> noise -> {resize back + final sinc, JPEG} in random order
      'second_blur_prob': 0.8,
      'blur_kernel_size2': 21, 'kernel_list2': KERNEL_KINDS, 'kernel_prob2': kernel_prob,
      'sinc_prob2': 0.1, 'blur_sigma2': (0.2, 1.5), 'betag_range2': (0.5, 4.0), 'betap_range2': (1.0, 2.0),
      'resize_prob2': (0.3, 0.4, 0.3),
      'resize_range2': (0.3, 1.2),         # relative to the LR size (HR / scale)
      'gaussian_noise_prob2': 0.5, 'noise_range2': (1.0, 25.0), 'poisson_scale_range2': (0.05, 2.5),
      'gray_noise_prob2': 0.4, 'jpeg_range2': (30.0, 95.0),
      'final_sinc_prob': 0.8})


# Range options (per order): the condition on (low, high) and how to say it.
_RANGES = {
    'blur_sigma': (lambda lo, hi: 0 < lo <= hi, '0 < low <= high'),
    'betag_range': (lambda lo, hi: 0 < lo <= 1 <= hi, '0 < low <= 1 <= high (half the draws each side of 1)'),
    'betap_range': (lambda lo, hi: 0 < lo <= 1 <= hi, '0 < low <= 1 <= high (half the draws each side of 1)'),
    'resize_range': (lambda lo, hi: 0 < lo <= 1 <= hi, '0 < low <= 1 <= high (down to low, up to high)'),
    'noise_range': (lambda lo, hi: 0 <= lo <= hi, '0 <= low <= high'),
    'poisson_scale_range': (lambda lo, hi: 0 <= lo <= hi, '0 <= low <= high'),
    'jpeg_range': (lambda lo, hi: 1 <= lo <= hi <= 100, '1 <= low <= high <= 100'),
}
_PROBS = ('sinc_prob', 'gaussian_noise_prob', 'gray_noise_prob')
_BLUR_KEYS = ('blur_kernel_size', 'kernel_list', 'kernel_prob', 'sinc_prob', 'blur_sigma', 'betag_range',
              'betap_range')
_NOISE_KEYS = ('gaussian_noise_prob', 'noise_range', 'poisson_scale_range', 'gray_noise_prob')


def _is_number(x):
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def _numbers(value, n=None):
  """VALUE as a tuple of numbers (of length N), or None."""
  if not isinstance(value, (tuple, list)) or not all(_is_number(v) for v in value):
    return None
  return tuple(value) if n is None or len(value) == n else None


def _option_error(key, value, need):
  return UserError(f'realesrgan option {key}={value!r}: {need}; set data.realesrgan.{key} (defaults: '
                   'enhance_jax.data.degradations.realesrgan_defaults()).')


def _check_order(o, order):
  """UserError for a bad first (ORDER '') or second ('2') order option of the chain."""
  for name in _PROBS:
    if not (_is_number(o[name + order]) and 0 <= o[name + order] <= 1):
      raise _option_error(name + order, o[name + order], 'must be a probability in [0, 1]')
  for name, (ok, need) in _RANGES.items():
    pair = _numbers(o[name + order], 2)
    if pair is None or not ok(*pair):
      raise _option_error(name + order, o[name + order], f'must be a pair (low, high) with {need}')
  probs = _numbers(o['resize_prob' + order], 3)
  if probs is None or min(probs) < 0 or abs(sum(probs) - 1) > 1e-6:
    raise _option_error('resize_prob' + order, o['resize_prob' + order],
                        'must be three probabilities (up, down, keep) summing to 1')
  size = o['blur_kernel_size' + order]
  if not (isinstance(size, int) and size >= 7 and size % 2):
    raise _option_error('blur_kernel_size' + order, size, 'must be an odd integer >= 7 (kernels are 7..it)')
  kinds, weights = o['kernel_list' + order], _numbers(o['kernel_prob' + order])
  if (not isinstance(kinds, (tuple, list)) or not kinds or len(set(kinds)) != len(kinds)
      or any(k not in KERNEL_KINDS for k in kinds)):
    raise _option_error('kernel_list' + order, kinds, f'must be distinct names of {KERNEL_KINDS}')
  if weights is None or len(weights) != len(kinds) or min(weights) < 0 or sum(weights) <= 0:
    raise _option_error('kernel_prob' + order, o['kernel_prob' + order],
                        f'must be {len(kinds)} weights >= 0, one per kernel_list{order} entry, not all 0')


def _plain(value):
  """A config value as plain Python: ConfigDicts to dicts, lists (JSON) to tuples."""
  if hasattr(value, 'to_dict'):
    value = value.to_dict()
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  return tuple(_plain(v) for v in value) if isinstance(value, (list, tuple)) else value


def realesrgan_options(overrides=None, keys=None):
  """realesrgan_defaults() updated by OVERRIDES, checked (a UserError names the bad key): a plain
  dict. KEYS: the option names a stage op accepts (default: all)."""
  o = _plain(realesrgan_defaults())
  overrides = _plain(overrides or {})
  valid = keys or tuple(o)
  unknown = sorted(set(overrides) - set(valid))
  if unknown:
    raise UserError(f'unknown realesrgan option(s) {", ".join(unknown)}; valid: {", ".join(valid)}.')
  o.update(overrides)
  for order in ('', '2'):
    _check_order(o, order)
  for name in ('second_blur_prob', 'final_sinc_prob'):
    if not (_is_number(o[name]) and 0 <= o[name] <= 1):
      raise _option_error(name, o[name], 'must be a probability in [0, 1]')
  return o


def _uniforms(key, n):
  """N independent U(0, 1) float32 draws from one generator call (each call is a threefry program to
  compile: drawing a stage's scalars at once keeps the chain's compile time down)."""
  return list(jax.random.uniform(key, (n,), jnp.float32))


def _between(u, low, high):
  """A U(0, 1) draw U mapped to U(low, high) (bounds traced ok)."""
  return low + u * (high - low)


def _pick(u, weights):
  """The index drawn with probability proportional to WEIGHTS, by inverting their CDF at U."""
  cdf = np.cumsum(np.asarray(weights, np.float64) / np.sum(weights))[:-1]
  return jnp.sum(u >= cdf.astype(np.float32)).astype(jnp.int32)


# --------------------------------------------------------------------------------- blur kernels


def _kernel_grid(max_size):
  """Column (x) and row (y) offsets from the centre of a max_size x max_size kernel (BasicSR mesh_grid)."""
  r = np.arange(max_size, dtype=np.float32) - max_size // 2
  return np.meshgrid(r, r)


def _windowed(kernel, size, max_size):
  """KERNEL kept on its central SIZE x SIZE window (traced ok) of the max_size grid, summing to 1:
  Real-ESRGAN's kxk kernel zero-padded to 21x21."""
  xx, yy = _kernel_grid(max_size)
  inside = jnp.maximum(jnp.abs(xx), jnp.abs(yy)) <= size // 2
  kernel = jnp.where(inside, kernel, 0.0)
  return kernel / jnp.sum(kernel)


def bivariate_kernel(kind, size, sigma_x, sigma_y, theta, beta, max_size=21):
  """Real-ESRGAN's Gaussian-family kernel of KIND (index into KERNEL_KINDS; traced ok), with
  Q = [x y] Sigma^-1 [x y]^T, Sigma = R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T: Gaussian
  exp(-Q / 2), generalised Gaussian exp(-Q^beta / 2), plateau 1 / (1 + Q^beta). Isotropic kinds use
  sigma_x and no rotation. SIZE x SIZE centred in MAX_SIZE x MAX_SIZE; sums to 1."""
  xx, yy = _kernel_grid(max_size)
  iso = kind % 2 == 0
  sigma_y, theta = jnp.where(iso, sigma_x, sigma_y), jnp.where(iso, 0.0, theta)
  c, s = jnp.cos(theta), jnp.sin(theta)
  q = (c * xx + s * yy) ** 2 / sigma_x ** 2 + (c * yy - s * xx) ** 2 / sigma_y ** 2
  family = kind // 2
  kernel = jnp.select([family == 0, family == 1],
                      [jnp.exp(-0.5 * q), jnp.exp(-0.5 * q ** beta)], 1.0 / (q ** beta + 1.0))
  return _windowed(kernel, size, max_size)


def _bessel_j1(z, n):
  """Bessel J1 by Bessel's integral, the mean of cos(t - z sin t) over a period: the trapezoid rule on
  N points of this periodic integrand is exact to float precision for z < n - 30 or so."""
  t = np.arange(n) * (2 * np.pi / n)
  return jnp.mean(jnp.cos(t - z[..., None] * np.sin(t)), axis=-1)


def sinc_kernel(omega, size, max_size=21):
  """Real-ESRGAN's circular low-pass (2-D sinc) kernel of cutoff OMEGA radians: omega J1(omega r) /
  (2 pi r), omega^2 / (4 pi) at the centre; its ringing and overshoot imitate sharpening artefacts."""
  xx, yy = _kernel_grid(max_size)
  radii, where = np.unique(np.sqrt(xx ** 2 + yy ** 2), return_inverse=True)  # J1 once per radius
  safe = np.where(radii > 0, radii, 1.0)
  j1 = _bessel_j1(omega * safe, int(np.pi * max_size) + 32)
  profile = jnp.where(radii > 0, omega * j1 / (2 * np.pi * safe), omega ** 2 / (4 * np.pi))
  return _windowed(profile[where.reshape(xx.shape)], size, max_size)


def _odd_size(u, max_size):
  """A kernel side drawn uniformly (by U) from the odd 7..max_size (Real-ESRGAN's kernel_range)."""
  choices = max_size // 2 - 2
  return 2 * (3 + jnp.minimum(jnp.floor(u * choices), choices - 1).astype(jnp.int32)) + 1


def draw_blur(key, o, order=''):
  """One of Real-ESRGAN's random blur kernels: size odd 7..blur_kernel_size; with sinc_prob a sinc of
  cutoff U(pi/3, pi) (U(pi/5, pi) from size 13), else a kernel_list kind drawn by kernel_prob, sigmas
  U(blur_sigma), angle U(-pi, pi), beta U(low, 1) or U(1, high) half the time each (betag_range for
  generalised, betap_range for plateau kernels). ORDER '' or '2' picks the option set."""
  u = _uniforms(key, 9)
  max_size = o['blur_kernel_size' + order]
  size = _odd_size(u[0], max_size)
  sinc = u[1] < o['sinc_prob' + order]
  omega = _between(u[2], jnp.where(size < 13, np.pi / 3, np.pi / 5), np.pi)
  kinds = np.array([KERNEL_KINDS.index(name) for name in o['kernel_list' + order]])
  kind = jnp.asarray(kinds)[_pick(u[3], o['kernel_prob' + order])]
  sigma_x, sigma_y = (_between(v, *o['blur_sigma' + order]) for v in u[4:6])
  theta = _between(u[6], -np.pi, np.pi)
  low, high = jnp.where(kind // 2 == 1, jnp.asarray(o['betag_range' + order]),
                        jnp.asarray(o['betap_range' + order]))
  beta = jnp.where(u[7] < 0.5, _between(u[8], low, 1.0), _between(u[8], 1.0, high))
  kernel = jnp.where(sinc, sinc_kernel(omega, size, max_size),
                     bivariate_kernel(kind, size, sigma_x, sigma_y, theta, beta, max_size))
  return {'kernel': kernel, 'sinc': sinc, 'kind': kind, 'size': size, 'omega': omega, 'sigma_x': sigma_x,
          'sigma_y': sigma_y, 'theta': theta, 'beta': beta}


def filter2d(img, kernel, hw=None):
  """Real-ESRGAN's filter2D on one HWC image: each channel correlated with KERNEL (odd, square), the
  image padded by reflection at the edge of its top-left HW content (traced ok; None: all of IMG)."""
  height, width, channels = img.shape
  h, w = (height, width) if hw is None else hw
  p = kernel.shape[0] // 2
  rows = fold_reflect(jnp.arange(-p, height + p), jnp.asarray(h))
  cols = fold_reflect(jnp.arange(-p, width + p), jnp.asarray(w))
  padded = jnp.asarray(img, jnp.float32)[rows][:, cols]
  weights = jnp.broadcast_to(jnp.asarray(kernel, jnp.float32)[:, :, None, None], (*kernel.shape, 1, channels))
  out = jax.lax.conv_general_dilated(padded[None], weights, (1, 1), 'VALID',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                     feature_group_count=channels, precision=_HIGHEST)
  return out[0]


# -------------------------------------------------------------------------------------- resize


def resize_content(img, hw, out_hw, out_shape, method, factor=None):
  """The top-left HW content of an HWC buffer resized to OUT_HW (traced ok) in the top-left of a new
  OUT_SHAPE buffer, zero around it (torch_resize_matrix; FACTOR: map coordinates by 1 / FACTOR)."""
  ratio = None if factor is None else 1.0 / factor
  mh = torch_resize_matrix(hw[0], out_hw[0], img.shape[0], out_shape[0], method, ratio)
  mw = torch_resize_matrix(hw[1], out_hw[1], img.shape[1], out_shape[1], method, ratio)
  return separable(img, mh, mw)


def draw_resize(key, o, order=''):
  """Real-ESRGAN's random resize: direction up/down/keep by resize_prob, factor U(1, high),
  U(low, 1) or 1 from resize_range, method area/bilinear/bicubic uniformly."""
  u = _uniforms(key, 3)
  direction = _pick(u[0], o['resize_prob' + order])
  low, high = o['resize_range' + order]
  factor = jnp.select([direction == 0, direction == 1], [_between(u[1], 1.0, high), _between(u[1], low, 1.0)],
                      1.0)
  return {'direction': direction, 'factor': factor, 'method': _pick(u[2], (1, 1, 1))}


def _scaled_hw(hw, factor, cap):
  """floor(side * factor) for each side (traced), kept in [1, the buffer side CAP]."""
  return tuple(jnp.clip(jnp.floor(s * factor).astype(jnp.int32), 1, c) for s, c in zip(hw, cap))


def _buffer_hw(hw, factor):
  """The static buffer for sides HW resized by factors up to FACTOR (or 1): a sample to spare for
  float32 rounding of the traced sizes."""
  return tuple(math.floor(s * max(factor, 1.0)) + 1 for s in hw)


# --------------------------------------------------------------------------------------- noise


def gaussian_noise(img, key, sigma, gray):
  """Real-ESRGAN's Gaussian noise: N(0, sigma^2) (on the 0..1 scale) per pixel and channel, or one
  map for all channels when GRAY; clipped to [0, 1]."""
  noise = jax.random.normal(key, (*img.shape[:-1], img.shape[-1] + 1))  # colour | gray: one call
  return jnp.clip(img + sigma * jnp.where(gray, noise[..., -1:], noise[..., :-1]), 0.0, 1.0)


def _photon_levels(x, hw):
  """2^ceil(log2(distinct 8-bit values in the top-left HW content of X)): Real-ESRGAN's Poisson
  'vals' (generate_poisson_noise_pt)."""
  levels = jnp.clip(jnp.round(x * 255), 0, 255).astype(jnp.int32)
  inside = (jnp.arange(x.shape[0])[:, None] < hw[0]) & (jnp.arange(x.shape[1]) < hw[1])
  inside = jnp.broadcast_to(inside[..., None], x.shape).astype(jnp.int32)
  count = jnp.sum(jnp.zeros(256, jnp.int32).at[levels.ravel()].add(inside.ravel()) > 0)
  return 2.0 ** jnp.ceil(jnp.log2(jnp.maximum(count, 1).astype(jnp.float32)))


def poisson_noise(img, key, scale, gray, hw=None):
  """Real-ESRGAN's Poisson (shot) noise: the image rounded to 8 bits, counts Poisson(x * vals) / vals
  minus it, times SCALE, added; GRAY: drawn once on the luma (torchvision's weights) for all
  channels. HW: the content counted for vals (None: all). Clipped to [0, 1]."""
  hw = img.shape[:2] if hw is None else hw
  luma = jnp.sum(img * np.array([0.2989, 0.587, 0.114], np.float32), axis=-1, keepdims=True)
  x = jnp.clip(jnp.round(jnp.concatenate([img, luma], axis=-1) * 255), 0, 255) / 255  # colour | gray
  vals = jnp.concatenate([jnp.broadcast_to(_photon_levels(x[..., :-1], hw), img.shape[-1:]),
                          _photon_levels(x[..., -1:], hw)[None]])
  noise = jax.random.poisson(key, x * vals).astype(jnp.float32) / vals - x  # one call for both
  return jnp.clip(img + scale * jnp.where(gray, noise[..., -1:], noise[..., :-1]), 0.0, 1.0)


def draw_noise(key, o, order=''):
  """Real-ESRGAN's noise draws: Gaussian with gaussian_noise_prob (sigma U(noise_range) / 255), else
  Poisson (scale U(poisson_scale_range)); gray (one map for all channels) with gray_noise_prob."""
  ku, kn = jax.random.split(key)
  u = _uniforms(ku, 4)
  return {'gaussian': u[0] < o['gaussian_noise_prob' + order],
          'sigma': _between(u[1], *o['noise_range' + order]) / 255.0,
          'poisson_scale': _between(u[2], *o['poisson_scale_range' + order]),
          'gray': u[3] < o['gray_noise_prob' + order], 'key': kn}


def add_noise(img, p, hw=None):
  """The noise stage with the draws P (draw_noise): Gaussian or Poisson."""
  kg, kp = jax.random.split(p['key'])
  return jnp.where(p['gaussian'], gaussian_noise(img, kg, p['sigma'], p['gray']),
                   poisson_noise(img, kp, p['poisson_scale'], p['gray'], hw))


# --------------------------------------------------------------------------------------- chain


def draw_chain(key, o):
  """Every random decision of one image's degradation, drawn up front: a pytree of per-stage draws
  (blur1, resize1, noise1, jpeg1, blur2 + apply, resize2, noise2, jpeg2, final)."""
  k = jax.random.split(key, 7)
  u = _uniforms(k[6], 8)
  max_size = o['blur_kernel_size']
  final_sinc = u[0] < o['final_sinc_prob']
  pulse = np.zeros((max_size, max_size), np.float32)
  pulse[max_size // 2, max_size // 2] = 1.0
  sinc = sinc_kernel(_between(u[1], np.pi / 3, np.pi), _odd_size(u[2], max_size), max_size)
  return {
      'blur1': draw_blur(k[0], o), 'resize1': draw_resize(k[1], o), 'noise1': draw_noise(k[2], o),
      'jpeg1': _between(u[3], *o['jpeg_range']),
      'blur2': {**draw_blur(k[3], o, '2'), 'apply': u[4] < o['second_blur_prob']},
      'resize2': draw_resize(k[4], o, '2'), 'noise2': draw_noise(k[5], o, '2'),
      'jpeg2': _between(u[5], *o['jpeg_range2']),
      'final': {'sinc': final_sinc, 'kernel': jnp.where(final_sinc, sinc, pulse),
                'resize_first': u[6] < 0.5, 'method': _pick(u[7], (1, 1, 1))}}


def degrade_chain(img, p, o, scale):
  """Real-ESRGAN's second-order degradation of one HWC image in [0, 1] by the draws P (draw_chain):
  an (H // scale) x (W // scale) image on the 1/255 grid. The first resize is by a factor of the
  image, the second of the LR size (H / scale), the last to the LR size."""
  hr_hw = img.shape[:2]
  lr_hw = (hr_hw[0] // scale, hr_hw[1] // scale)
  x = filter2d(img, p['blur1']['kernel'])
  buf = _buffer_hw(hr_hw, o['resize_range'][1])
  hw = _scaled_hw(hr_hw, p['resize1']['factor'], buf)
  x = resize_content(x, hr_hw, hw, buf, p['resize1']['method'], p['resize1']['factor'])
  x = jpeg_lib.jpeg(add_noise(x, p['noise1'], hw), p['jpeg1'], hw)
  x = jnp.where(p['blur2']['apply'], filter2d(x, p['blur2']['kernel'], hw), x)
  base = (hr_hw[0] / scale, hr_hw[1] / scale)
  buf2 = _buffer_hw(base, o['resize_range2'][1])
  hw2 = _scaled_hw(base, p['resize2']['factor'], buf2)
  x = add_noise(resize_content(x, hw, hw2, buf2, p['resize2']['method']), p['noise2'], hw2)
  final, first = p['final'], p['final']['resize_first']

  def back(y):  # [resize back + sinc]: the content of y (hw2) to the LR size
    return filter2d(resize_content(y, hw2, lr_hw, lr_hw, final['method']), final['kernel'])

  # [back, JPEG] or [JPEG, back], with the one JPEG on a buffer that holds either input
  pad = [(0, b - s) for b, s in zip(buf2, lr_hw)] + [(0, 0)]
  x = jnp.where(first, jnp.pad(back(x), pad), x)
  x = jpeg_lib.jpeg(x, p['jpeg2'], tuple(jnp.where(first, s, t) for s, t in zip(lr_hw, hw2)))
  x = jnp.where(first, x[:lr_hw[0], :lr_hw[1]], back(x))
  return jnp.clip(jnp.round(x * 255.0), 0.0, 255.0) / 255.0


def _device_op(fn, out_hw=None):
  """An op written in jnp alone: a jax key traces FN into the caller's program (apply_batch in the
  jitted step); a numpy Generator (validation and evaluation degrade one image with a fixed seed)
  runs FN jitted on the default device, numpy out. Marked device_only (training with it needs
  data.degrade_on_device), with out_hw(hw) giving its output size without running it."""
  jitted = jax.jit(fn)

  def op(img, rng):
    if isinstance(rng, np.random.Generator):
      key = jax.random.key(int(rng.integers(0, 2 ** 31 - 1)))
      return np.asarray(jitted(np.asarray(img, np.float32), key))
    return fn(img, rng)
  op.device_only = True
  op.out_hw = out_hw or tuple
  return op


def device_only(op):
  """Whether OP, a part of it or a branch of a one_of in it runs on the device alone."""
  return any(getattr(part, 'device_only', False) or any(device_only(b) for b in getattr(part, 'branches', ()))
             for part in getattr(op, 'parts', (op,)))


def realesrgan_op(scale=4, **options):
  """Real-ESRGAN's second-order degradation (degrade_chain) to 1/SCALE of the HR size, every draw per
  image. OPTIONS override realesrgan_defaults() (the config's data.realesrgan reaches here through
  parse's options). jnp only: trained with data.degrade_on_device.

  The random intermediate sizes stay static under jit by living in fixed buffers (the largest each
  resize range allows) with the content top-left and its size traced; resizes are matrices built
  from the traced sizes, blur and JPEG pad at the content's edge, so noise and JPEG act at the
  intermediate resolution as in Real-ESRGAN (see the comment above KERNEL_KINDS). The resizes are
  PyTorch's F.interpolate exactly (area, bilinear, a = -0.75 bicubic, no antialias).

  Where this departs from Real-ESRGAN (realesrgan_model.feed_data):
  - its resize direction, factor and mode, Gaussian-or-Poisson, second blur and final order are drawn
    once per batch (it mixes batches through a pool of 180 pairs); here every draw is per image;
  - JPEG is jpeg.jpeg (libjpeg's tables, chroma filters and rounding) instead of DiffJPEG, at the
    drawn quality rounded to an integer, as an encoder takes it;
  - it degrades a 400x400 crop and crops the pair afterwards; here the training patch itself is
    degraded, so its borders see reflect padding;
  - every branch is computed and one selected (vmap turns lax.cond into that anyway).
  """
  _check_factor('realesrgan', scale, integer=True)
  o, scale = realesrgan_options(options), int(scale)

  def chain(img, key):
    return degrade_chain(jnp.asarray(img, jnp.float32), draw_chain(key, o), o, scale)
  op = _device_op(chain, lambda hw: (hw[0] // scale, hw[1] // scale))
  op.options = o
  return op


def random_blur_op(**options):
  """Real-ESRGAN's first-order random blur alone (draw_blur, filter2d); OPTIONS: its blur keys."""
  o = realesrgan_options(options, _BLUR_KEYS)
  return _device_op(lambda img, key: filter2d(jnp.asarray(img, jnp.float32), draw_blur(key, o)['kernel']))


def random_noise_op(**options):
  """Real-ESRGAN's first-order noise alone (Gaussian or Poisson); OPTIONS: its noise keys."""
  o = realesrgan_options(options, _NOISE_KEYS)
  return _device_op(lambda img, key: add_noise(jnp.asarray(img, jnp.float32), draw_noise(key, o)))


def jpeg_compression_op(low=30, high=95):
  """JPEG compression (jpeg.jpeg) at a quality drawn uniformly in [low, high] per image."""
  if not (_is_number(low) and _is_number(high) and 1 <= low <= high <= 100):
    raise UserError(f'jpeg_compression({low!r}, {high!r}): the quality range must satisfy '
                    '1 <= low <= high <= 100.')
  return _device_op(lambda img, key: jpeg_lib.jpeg(img, _between(jax.random.uniform(key), low, high)))


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


OPS = {'bicubic': bicubic_op, 'bicubic_blur': bicubic_blur_op, 'blur': blur_op,
       'down_up': down_up_op, 'salt_pepper': salt_pepper_op, 'color_noise': color_noise_op,
       'darken': darken_op, 'brighten': brighten_op, 'clip': clip_op, 'identity': identity_op,
       'one_of': one_of_op, 'realesrgan': realesrgan_op, 'random_blur': random_blur_op,
       'random_noise': random_noise_op, 'jpeg_compression': jpeg_compression_op, 'usm': usm_op}

# data.<name> config sections that give the ops of that name their keyword defaults (parse's options).
CONFIG_SECTIONS = ('realesrgan',)


def _top_level_split(spec, sep='|'):
  """Splits SPEC on SEP outside brackets and quotes."""
  parts, depth, quote, start = [], 0, None, 0
  for i, ch in enumerate(spec):
    if quote:
      quote = None if ch == quote else quote
    elif ch in '\'"':
      quote = ch
    elif ch in '([':
      depth += 1
    elif ch in ')]':
      depth -= 1
    elif ch == sep and depth == 0:
      parts.append(spec[start:i])
      start = i + 1
  return parts + [spec[start:]]


def _parse_call(text):
  """'name' or 'name(literal args, key=literal)' -> (name, args, kwargs), or UserError."""
  import ast  # pylint: disable=g-import-not-at-top
  try:
    node = ast.parse(text.strip(), mode='eval').body
    if isinstance(node, ast.Name):
      return node.id, (), {}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
      names = [k.arg for k in node.keywords]
      if None not in names and len(set(names)) == len(names):
        return (node.func.id, tuple(ast.literal_eval(a) for a in node.args),
                {k.arg: ast.literal_eval(k.value) for k in node.keywords})
  except (SyntaxError, ValueError, TypeError):
    pass
  raise UserError(f'degradation op {text.strip()!r} is not of the form name or name(args), e.g. '
                  "'bicubic(4)|blur(1.5)'.")


def config_options(data):
  """The op sections of a data config (data.realesrgan, ...) as parse's OPTIONS."""
  return {name: data[name] for name in CONFIG_SECTIONS if data.get(name) is not None}


def parse(spec, options=None):
  """A degradation spec ('op|op(args)|...') -> one op (image, rng) -> image; '' is the identity.
  OPTIONS {op name: {keyword: value}} gives the spec's ops of that name keyword defaults from the
  config (config_options(config.data)); keywords written in the spec win."""
  ops = []
  for part in _top_level_split(spec or 'identity'):
    name, args, kwargs = _parse_call(part)
    if name not in OPS:
      raise UserError(f'unknown degradation op {name!r} in {spec!r}; valid: {", ".join(sorted(OPS))}.')
    kwargs = {**_plain((options or {}).get(name) or {}), **kwargs}
    try:
      ops.append(OPS[name](*args, **kwargs))
    except TypeError as e:
      raise UserError(f'degradation op {part.strip()!r}: {e}.') from None
  if len(ops) == 1:
    return ops[0]

  def composed(img, rng):
    for op, key in zip(ops, _split(rng, len(ops))):
      img = op(img, key)
    return img
  composed.parts = ops
  return composed


def apply_batch(op, images, key):
  """OP on each image of an NHWC jax batch, with its own key (inside jit: on the device)."""
  keys = jax.random.split(key, images.shape[0])
  return jax.vmap(lambda x, k: jnp.asarray(op(x, k), jnp.float32))(images, keys)


def output_hw(op, hw):
  """The (H, W) that OP makes of an H x W image (its out_hw, or run on zeros on the host, cheap);
  every branch of a one_of must agree, else UserError (batches, and lax.switch on the device, need
  one size)."""
  hw = tuple(hw)
  for part in getattr(op, 'parts', (op,)):
    if hasattr(part, 'branches'):
      sizes = {output_hw(b, hw) for b in part.branches}
      if len(sizes) > 1:
        raise UserError(f'the branches of a one_of make images of different sizes '
                        f'({", ".join(f"{h}x{w}" for h, w in sorted(sizes))} from {hw[0]}x{hw[1]}); '
                        'give every branch the same resize.')
      hw = sizes.pop()
    elif hasattr(part, 'out_hw'):
      hw = tuple(part.out_hw(hw))
    else:
      hw = tuple(np.shape(part(np.zeros((*hw, 3), np.float32), np.random.default_rng(0)))[:2])
  return hw
