"""Real-ESRGAN's second-order degradation (Wang et al., "Real-ESRGAN", ICCV-W 2021), in jnp for the
device: blur -> resize -> noise -> JPEG, then [blur] -> resize -> noise -> {resize back + sinc,
JPEG} in random order, each with Real-ESRGAN's probabilities and ranges (realesrgan_defaults).

Shapes inside jit are static, but Real-ESRGAN resizes by random factors. Each intermediate image
therefore lives in a fixed buffer, the largest its stage's resize range allows (+1 sample), with the
content in the top-left corner and its size traced (`hw`). Every step reads only the content:
resizes are [out buffer, in buffer] matrices built from the traced sizes (zero outside), blurs pad
by reflection at the content's edge (index gathers), the Poisson noise counts levels inside it and
JPEG replicates its edges out to whole MCUs; so noise and JPEG act at the intermediate resolution,
as in Real-ESRGAN, at the price of computing on the whole buffer. (jax.image.scale_and_translate
takes traced scales too, but has no 'area' mode and neither PyTorch's a = -0.75 bicubic nor its
aliasing, non-antialiased downscaling, which are part of the degradation.)

In order: the options (realesrgan_defaults, realesrgan_options and their checks), the random draws,
blur kernels, resize, noise, the chain (draw_chain, degrade_chain), and the ops: realesrgan and its
stages alone (random_blur, random_noise, jpeg_compression), all device-only (protocol._device_op).
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from enhance_jax.data.degradations.protocol import _check_factor, _device_op, _is_number, _plain
from enhance_jax.errors import UserError
from enhance_jax.ops import jpeg as jpeg_lib
from enhance_jax.ops.resize import fold_reflect, separable, torch_resize_matrix


KERNEL_KINDS = ('iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso', 'plateau_aniso')
_HIGHEST = jax.lax.Precision.HIGHEST


# ------------------------------------------------------------------------------------- options


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


# --------------------------------------------------------------------------------------- draws


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


# ----------------------------------------------------------------------------------------- ops


def realesrgan_op(scale=4, **options):
  """Real-ESRGAN's second-order degradation (degrade_chain) to 1/SCALE of the HR size, every draw per
  image. OPTIONS override realesrgan_defaults() (the config's data.realesrgan reaches here through
  parse's options). jnp only: trained with data.degrade_on_device.

  The random intermediate sizes stay static under jit by living in fixed buffers (the largest each
  resize range allows) with the content top-left and its size traced; resizes are matrices built
  from the traced sizes, blur and JPEG pad at the content's edge, so noise and JPEG act at the
  intermediate resolution as in Real-ESRGAN (see the module docstring). The resizes are
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
