"""NIQE (Mittal et al. 2013, "Making a 'Completely Blind' Image Quality Analyzer"), as BasicSR's
`calculate_niqe` computes it (basicsr 1.4.2, itself checked against the MATLAB release), in JAX.

No reference image: the Y channel (MATLAB's rgb2ycbcr, rounded) is cropped to whole 96x96 blocks and
normalised by its local mean and deviation (MSCN, a 7x7 Gaussian, edge-replicated); each block gives 18
features (generalised-Gaussian fits of the coefficients and of their products with 4 neighbours), at full
and half size (MATLAB's antialiased bicubic); the features' Gaussian is compared with the one fitted to
pristine photos (`niqe_pris_params.npz`): lower is more natural. Everything up to the final 36x36
distance runs jitted and batched (one compile per grid of whole blocks); the distance (a NaN-aware mean, a
covariance and a 36x36 pseudo-inverse) is computed on the host in float64, as the reference does.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from enhance_jax.ops.resize import imresize_scale

BLOCK = 96  # the official block size (no overlap)
FEATURES = 18  # per block and scale
MIN_BLOCKS = 2  # the features' covariance needs two blocks (BasicSR's pinv fails on one)
MIN_SIDE = 2 * BLOCK  # the smallest square that holds them


@functools.lru_cache(maxsize=1)
def _aggd_tables():
  """The alpha grid (0.2 to 10 by 0.001) and, per alpha, the ratio the fit matches and the gamma-function
  factors of the betas and the mean, in float64 as the reference evaluates them."""
  alpha = np.arange(0.2, 10.001, 0.001)
  r_gam = special.gamma(2 / alpha) ** 2 / (special.gamma(1 / alpha) * special.gamma(3 / alpha))
  beta_factor = np.sqrt(special.gamma(1 / alpha) / special.gamma(3 / alpha))
  mean_factor = special.gamma(2 / alpha) / special.gamma(1 / alpha)
  return tuple(np.asarray(t, np.float32) for t in (alpha, r_gam, beta_factor, mean_factor))


def aggd_fit(x):
  """(alpha, beta_left, beta_right, mean factor) of the asymmetric generalised Gaussian fitted to the
  values X [..., n] by moment matching on the alpha grid (BasicSR's estimate_aggd_param)."""
  alpha, r_gam, beta_factor, mean_factor = (jnp.asarray(t) for t in _aggd_tables())
  sq = x * x
  neg, pos = (x < 0).astype(x.dtype), (x > 0).astype(x.dtype)
  left = jnp.sqrt(jnp.sum(sq * neg, -1) / jnp.sum(neg, -1))
  right = jnp.sqrt(jnp.sum(sq * pos, -1) / jnp.sum(pos, -1))
  g = left / right
  rhat = jnp.mean(jnp.abs(x), -1) ** 2 / jnp.mean(sq, -1)
  rhatnorm = rhat * (g ** 3 + 1) * (g + 1) / (g ** 2 + 1) ** 2
  i = jnp.argmin((r_gam - rhatnorm[..., None]) ** 2, axis=-1)
  return alpha[i], left * beta_factor[i], right * beta_factor[i], mean_factor[i]


def block_features(blocks):
  """[..., b, b] MSCN blocks -> [..., 18]: the coefficients' (alpha, mean beta), then for the
  horizontal, vertical and two diagonal neighbour products (circular within the block, as the
  reference's np.roll) (alpha, mean, beta_left, beta_right)."""
  flat = lambda a: a.reshape(*a.shape[:-2], -1)
  a, bl, br, _ = aggd_fit(flat(blocks))
  feats = [a, (bl + br) / 2]
  for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
    a, bl, br, m = aggd_fit(flat(blocks * jnp.roll(blocks, shift, axis=(-2, -1))))
    feats += [a, (br - bl) * m, bl, br]
  return jnp.stack(feats, -1)


def _two_sum(a, b):
  """a + b as (rounded sum, its exact rounding error) (Knuth's TwoSum)."""
  s = a + b
  bb = s - a
  return s, (a - (s - bb)) + (b - bb)


def _split(x):
  """Float32 X as (high, low) halves of at most 12 significant bits each, so their products are exact:
  the high half by masking the 12 low mantissa bits (Veltkamp's c - (c - x) is undone by FMA
  contraction inside a compiled loop)."""
  bits = jax.lax.bitcast_convert_type(jnp.asarray(x, jnp.float32), jnp.uint32)
  hi = jax.lax.bitcast_convert_type(bits & jnp.uint32(0xFFFFF000), jnp.float32)
  return hi, x - hi


def _smooth(img, window):
  """IMG [H, W] float32 convolved with the 7x7 WINDOW (float64), edges replicated (scipy.ndimage mode
  'nearest'), rounded once to float32 as scipy rounds its double-precision sum. The 49 taps are summed
  in double-float32 arithmetic: the local variance conv(x^2) - mu^2 cancels digits, and a plain float32
  sum changed NIQE in the second decimal."""
  k = window.shape[0]
  r = k // 2
  padded = jnp.pad(img, r, mode='edge')
  h, w = img.shape
  flipped = np.asarray(window, np.float64)[::-1, ::-1]
  hi = flipped.astype(np.float32).reshape(-1)
  lo_w = jnp.asarray((flipped.reshape(-1) - hi).astype(np.float32))
  hi_hi, hi_lo = (jnp.asarray(a) for a in _split(hi))

  def tap(t, carry):  # a loop, not 49 unrolled taps: the program compiles in a fraction of the time
    total, err = carry
    x = jax.lax.dynamic_slice(padded, (t // k, t % k), (h, w))
    (xh, xl), wh, wl = _split(x), hi_hi[t], hi_lo[t]
    for part in (xh * wh, xh * wl, xl * wh):  # exact products, each summed exactly: FMA-proof
      total, e = _two_sum(total, part)
      err = err + e
    return total, err + xl * wl + x * lo_w[t]

  total, err = jax.lax.fori_loop(0, k * k, tap, (jnp.zeros_like(img), jnp.zeros_like(img)))
  return total + err


def _square(x):
  """X * X rounded once to float32, as NumPy rounds it, from exact partial products: a plain x * x
  next to a subtraction is fused into an FMA by the compiler, which changes the cancelling difference."""
  xh, xl = _split(x)
  s, e = _two_sum(xh * xh, 2.0 * xh * xl)
  return s + (e + xl * xl)


def mscn(img, window):
  """Mean-subtracted, contrast-normalised coefficients of IMG [H, W] in [0, 255] (Eq. 1)."""
  mu = _smooth(img, window)
  sigma = jnp.sqrt(jnp.abs(_smooth(_square(img), window) - _square(mu)))
  return (img - mu) / (sigma + 1)


def to_blocks(img, size):
  """[H, W] (multiples of SIZE) -> [H/size * W/size, size, size]."""
  h, w = img.shape
  return img.reshape(h // size, size, w // size, size).transpose(0, 2, 1, 3).reshape(-1, size, size)


def image_features(y, window):
  """[blocks, 36] features of one Y image [H, W] in [0, 255], cropped to whole blocks: full then half size."""
  h, w = (s // BLOCK * BLOCK for s in y.shape)
  y = y[:h, :w]
  full = block_features(to_blocks(mscn(y, window), BLOCK))
  half = imresize_scale(y[:, :, None] / 255.0, 0.5)[:, :, 0] * 255.0
  return jnp.concatenate([full, block_features(to_blocks(mscn(half, window), BLOCK // 2))], -1)


LUMA = (65481, 128553, 24966)  # MATLAB rgb2ycbcr's Y row x 1000, for 8-bit R, G, B
LUMA_DIVISOR = 255_000


def y_255(images, crop_border=0):
  """[N, H, W, 3] RGB in [0, 1] -> [N, H', W'] Y in [16, 235] rounded half to even (BasicSR: to_y_channel,
  crop, round), in exact integer arithmetic on the 8-bit levels: float32 luma with FMA contraction
  rounds a pixel near .5 the other way, and NIQE's flat blocks amplify one such pixel."""
  levels = jnp.round(jnp.clip(images, 0.0, 1.0) * 255.0).astype(jnp.int32)
  n = sum(c * levels[..., i] for i, c in enumerate(LUMA))
  q, r = n // LUMA_DIVISOR, n % LUMA_DIVISOR
  up = (2 * r > LUMA_DIVISOR) | ((2 * r == LUMA_DIVISOR) & (q % 2 == 1))
  y = (16 + q + up.astype(jnp.int32)).astype(jnp.float32)
  if crop_border:
    y = y[:, crop_border:-crop_border, crop_border:-crop_border]
  return y


def _whole_blocks(images, crop_border):
  """IMAGES [N, H, W, 3] cut on the host to the border and then whole blocks (what NIQE scores), so a
  compiled program serves every image size with the same number of blocks."""
  images = images[:, crop_border:images.shape[1] - crop_border, crop_border:images.shape[2] - crop_border]
  return images[:, :images.shape[1] // BLOCK * BLOCK, :images.shape[2] // BLOCK * BLOCK]


def features(images, window, crop_border=0):
  """[N, blocks, 36] NIQE features of a batch of same-size RGB images in [0, 1] (jitted per window and
  block grid)."""
  window = tuple(tuple(float(v) for v in row) for row in np.asarray(window, np.float64))
  return _features(_whole_blocks(jnp.asarray(images, jnp.float32), crop_border), window)


@functools.partial(jax.jit, static_argnames=('window',))
def _features(images, window):
  window = np.asarray(window, np.float64)
  return jax.vmap(lambda y: image_features(y, window))(y_255(images))


def mvg_distance(feats, mu_pris, cov_pris):
  """NIQE of one image from its [blocks, 36] features: the distance between their Gaussian (NaN-aware
  mean; covariance of the rows with no NaN) and the pristine one, in float64."""
  feats = np.asarray(feats, np.float64)
  mu = np.nanmean(feats, axis=0)
  clean = feats[~np.isnan(feats).any(axis=1)]
  if len(clean) < MIN_BLOCKS:  # no covariance to fit: undefined, as BasicSR's failing pinv says
    return float('nan')
  cov = np.cov(clean, rowvar=False)
  d = np.asarray(mu_pris, np.float64) - mu
  return float(np.sqrt(d @ np.linalg.pinv((np.asarray(cov_pris, np.float64) + cov) / 2) @ d))


def too_small(shape, crop_border=0):
  """Whether an image of SHAPE (H, W, ...) holds fewer than two whole 96x96 blocks after the crop."""
  h, w = (max(s - 2 * crop_border, 0) for s in shape[:2])
  return (h // BLOCK) * (w // BLOCK) < MIN_BLOCKS


def niqe(images, params, crop_border=0):
  """NIQE of each image of a batch [N, H, W, 3] (RGB in [0, 1], two 96x96 blocks after the crop) against
  PARAMS (the pristine file's arrays: mu_pris_param, cov_pris_param, gaussian_window). Lower is better."""
  images = jnp.asarray(images, jnp.float32)
  if images.ndim == 3:
    images = images[None]
  if too_small(images.shape[1:], crop_border):
    raise ValueError(f'NIQE needs two whole {BLOCK}x{BLOCK} blocks (e.g. {BLOCK}x{2 * BLOCK}); got '
                     f'{images.shape[1]}x{images.shape[2]} with a border of {crop_border}.')
  feats = features(images, params['gaussian_window'], crop_border)
  return np.asarray([mvg_distance(f, params['mu_pris_param'], params['cov_pris_param'])
                     for f in np.asarray(feats)])
