"""Resize matrices in PyTorch's conventions (F.interpolate, align_corners=False, no antialias; a = -0.75
bicubic), as jnp: sizes and method may be traced. Real-ESRGAN's degradations resize with them, and
the animevideov3 x2/x3 releases end with such a bicubic downscale of their x4 network's output.
"""

import jax.numpy as jnp

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
