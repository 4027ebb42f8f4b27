"""Separable resize and blur matrices: [out, in] matrices applied along H and W, so one tensordot
per axis serves numpy (grain workers) and jnp (the device) alike, boundaries folded into them.

MATLAB imresize's conventions (`resize`, `resize_matrix`, a = -0.5 bicubic, antialiased downscaling)
for the reports' degradations and refinement models; PyTorch's F.interpolate (`torch_resize_matrix`,
a = -0.75 bicubic, no antialias; sizes may be traced) for Real-ESRGAN's chain and the animevideov3
x2/x3 releases; a Gaussian blur matrix (`gaussian_matrix`).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np


def xp_of(x):
  """The array namespace of `x`: jnp for jax arrays and tracers, numpy otherwise."""
  return jnp if isinstance(x, jax.Array) else np


def _cubic(x, a=-0.5):
  """Keys' cubic convolution kernel; a = -0.5 is MATLAB imresize's bicubic."""
  x = np.abs(x)
  near = ((a + 2) * x - (a + 3)) * x * x + 1
  far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
  return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _triangle(x):
  """The bilinear (tent) kernel."""
  return np.maximum(1.0 - np.abs(x), 0.0)


_KERNELS = {'bicubic': (_cubic, 4.0), 'bilinear': (_triangle, 2.0)}  # kernel, support width


def _fold_symmetric(idx, size):
  """Maps any integer index into [0, size) by mirroring with the edge repeated (MATLAB 'symmetric')."""
  idx = np.mod(idx, 2 * size)
  return np.where(idx < size, idx, 2 * size - 1 - idx)


def fold_reflect(idx, size):
  """Maps any integer index into [0, size) by mirroring about the edge pixels (numpy/PyTorch 'reflect');
  numpy or jnp, size traced ok."""
  xp = jnp if isinstance(idx, jax.Array) or isinstance(size, jax.Array) else np
  period = xp.maximum(2 * size - 2, 1)
  idx = xp.mod(idx, period)
  return xp.where(idx < size, idx, period - idx)


def to_matrix(rows, cols, weights, in_size, out_size, fold=_fold_symmetric):
  """Scatters (row, col, weight) taps into a dense [out, in] float32 read-only matrix; FOLD maps
  out-of-range columns inside (symmetric: edge repeated, as MATLAB)."""
  m = np.zeros((out_size, in_size), np.float64)
  np.add.at(m, (rows, fold(cols, in_size)), weights)
  m = m.astype(np.float32)
  m.setflags(write=False)
  return m


def _nearest_matrix(in_size, out_size):
  """One-hot rows picking source pixel floor((i + 0.5) * in / out)."""
  src = np.minimum(np.floor((np.arange(out_size) + 0.5) * in_size / out_size), in_size - 1)
  return to_matrix(np.arange(out_size), src.astype(np.int64), 1.0, in_size, out_size)


@functools.lru_cache(maxsize=256)
def resize_matrix(in_size: int, out_size: int, method: str = 'bicubic',
                  antialias: bool = True) -> np.ndarray:
  """The [out_size, in_size] matrix of a 1-D resize with MATLAB imresize semantics; rows sum to 1.

  Pixel centres map as x_in = (x_out + 0.5) * in / out - 0.5; on downscaling with `antialias` the kernel
  is stretched by in / out. Out-of-range taps are mirrored (symmetric padding) into the matrix.
  """
  if in_size < 1 or out_size < 1:
    raise ValueError(f'resize sizes must be positive, got {in_size} -> {out_size}.')
  if method == 'nearest':
    return _nearest_matrix(in_size, out_size)
  if method not in _KERNELS:
    raise ValueError(f"Unknown resize method {method!r}; use one of {['nearest', *_KERNELS]}.")
  kernel, support = _KERNELS[method]
  scale = out_size / in_size
  stretch = 1.0 / scale if (antialias and scale < 1) else 1.0
  centre = (np.arange(out_size) + 0.5) / scale - 0.5
  taps = int(math.ceil(support * stretch)) + 2
  cols = np.floor(centre - support * stretch / 2)[:, None].astype(np.int64) + np.arange(taps)
  weights = kernel((centre[:, None] - cols) / stretch)
  weights /= weights.sum(axis=1, keepdims=True)
  rows = np.broadcast_to(np.arange(out_size)[:, None], cols.shape)
  return to_matrix(rows, cols, weights, in_size, out_size)


@functools.lru_cache(maxsize=256)
def gaussian_matrix(size: int, sigma: float) -> np.ndarray:
  """The [size, size] matrix of a 1-D Gaussian blur (radius ceil(3 sigma), reflect boundary)."""
  if sigma < 0:
    raise ValueError(f'Gaussian sigma must be >= 0, got {sigma}.')
  radius = int(math.ceil(3 * sigma))
  offsets = np.arange(-radius, radius + 1)
  taps = np.exp(-0.5 * (offsets / sigma) ** 2) if sigma > 0 else np.ones(1)
  taps /= taps.sum()
  rows = np.broadcast_to(np.arange(size)[:, None], (size, offsets.size))
  return to_matrix(rows, rows + offsets, np.broadcast_to(taps, rows.shape), size, size)


def _apply_along(m, x, axis):
  """Contracts matrix `m` [out, in] with axis `axis` of `x`, keeping the axis in place."""
  xp = xp_of(x)
  extra = {'precision': jax.lax.Precision.HIGHEST} if xp is jnp else {}  # no TF32/bf16 on GPU/TPU
  y = xp.tensordot(m, x, axes=([1], [axis]), **extra)
  return xp.moveaxis(y, 0, axis)


def image_hw(img):
  """Height and width of an HWC or NHWC image; other ranks are a ValueError."""
  if img.ndim not in (3, 4):
    raise ValueError(f'Expected an HWC or NHWC image, got shape {img.shape}.')
  return img.shape[-3:-1]


def separable(img, mh, mw):
  """Applies mh along H and mw along W of an HWC or NHWC image, as float32."""
  x = xp_of(img).asarray(img, dtype=np.float32)
  return _apply_along(mw, _apply_along(mh, x, -3), -2)


def resize(img, out_hw, method: str = 'bicubic', antialias: bool = True):
  """Resizes an HWC or NHWC image (numpy or jax) to `out_hw`; float32, not clipped."""
  h, w = image_hw(img)
  oh, ow = (int(s) for s in out_hw)
  return separable(img, resize_matrix(h, oh, method, antialias), resize_matrix(w, ow, method, antialias))


def imresize_scale(img, scale: float, method: str = 'bicubic', antialias: bool = True):
  """Resizes by a factor to round(h * scale) x round(w * scale) (halves round up), like MATLAB imresize."""
  h, w = image_hw(img)
  return resize(img, (math.floor(h * scale + 0.5), math.floor(w * scale + 0.5)), method, antialias)


# ---------------------------------------------------------------- PyTorch's F.interpolate

METHODS = ('area', 'bilinear', 'bicubic')  # the method index each matrix takes


def _torch_cubic(t, a=-0.75):
  """PyTorch's bicubic convolution kernel (a = -0.75; MATLAB's is -0.5)."""
  t = jnp.abs(t)
  return jnp.where(t <= 1, ((a + 2) * t - (a + 3)) * t * t + 1,
                   jnp.where(t < 2, ((a * t - 5 * a) * t + 8 * a) * t - 4 * a, 0.0))


def _taps_to_matrix(index, weights, n_in, in_size):
  """[out, in_size] matrix of per-row taps (index, weight: [out, taps]); indices clamped to the first
  n_in samples, as PyTorch reads out-of-range ones."""
  hit = jnp.clip(index, 0, n_in - 1)[..., None] == jnp.arange(in_size)
  return jnp.sum(weights[..., None] * hit, axis=1)


def torch_resize_matrix(n_in, n_out, in_size, out_size, method, ratio=None):
  """[out_size, in_size] matrix of F.interpolate(mode=METHODS[method], align_corners=False,
  no antialias) from the first N_IN samples to N_OUT (sizes and method traced ok); rows past N_OUT
  are zero. RATIO: the in/out coordinate scale, n_in / n_out by default (interpolate(size=...));
  interpolate(scale_factor=f) maps by 1 / f. 'area' is adaptive average pooling."""
  n_in, n_out = jnp.asarray(n_in, jnp.int32), jnp.asarray(n_out, jnp.int32)
  ratio = n_in / n_out if ratio is None else ratio
  i = jnp.arange(out_size)
  start, end = (i * n_in) // n_out, ((i + 1) * n_in + n_out - 1) // n_out
  j = jnp.arange(in_size)
  area = ((j >= start[:, None]) & (j < end[:, None])) / jnp.maximum(end - start, 1)[:, None]
  src = jnp.maximum((i + 0.5) * ratio - 0.5, 0.0)
  j0 = jnp.floor(src)
  linear = _taps_to_matrix(j0.astype(jnp.int32)[:, None] + jnp.arange(2),
                           jnp.stack([1 - (src - j0), src - j0], axis=1), n_in, in_size)
  src = (i + 0.5) * ratio - 0.5
  j0 = jnp.floor(src)
  t = src - j0
  cubic = _taps_to_matrix(j0.astype(jnp.int32)[:, None] + jnp.arange(-1, 3),
                          _torch_cubic(jnp.stack([t + 1, t, 1 - t, 2 - t], axis=1)), n_in, in_size)
  m = jnp.select([method == 0, method == 1], [area, linear], cubic)
  return jnp.where((i < n_out)[:, None], m, 0.0).astype(jnp.float32)
