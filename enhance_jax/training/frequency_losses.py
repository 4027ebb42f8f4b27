"""Focal frequency loss (Jiang et al. 2021, "Focal Frequency Loss for Image Reconstruction and
Synthesis"), as the authors' `focal-frequency-loss` package 0.3.0 computes it: the orthonormal 2-D DFT of
each channel (of each patch), the squared distance between the spectra, weighted per frequency by the
distance itself (^alpha, optionally log(1 + .)), scaled to [0, 1] by its maximum and held constant
(stop-gradient): the frequencies G gets most wrong weigh most.
"""

import jax
import jax.numpy as jnp


def _spectrum(x, patch_factor):
  """[N, H, W, C] -> complex [N, patches, C, h, w]: each patch's per-channel orthonormal DFT."""
  n, h, w, c = x.shape
  ph, pw = h // patch_factor, w // patch_factor
  patches = x.reshape(n, patch_factor, ph, patch_factor, pw, c).transpose(0, 1, 3, 5, 2, 4)
  return jnp.fft.fft2(patches.reshape(n, patch_factor * patch_factor, c, ph, pw), norm='ortho')


def focal_frequency(pred, target, alpha=1.0, patch_factor=1, ave_spectrum=False, log_matrix=False,
                    batch_matrix=False):
  """The focal frequency loss between images PRED and TARGET [N, H, W, C] (H, W multiples of
  PATCH_FACTOR), with the package's options and defaults."""
  h, w = pred.shape[1:3]
  if h % patch_factor or w % patch_factor:
    raise ValueError(f'focal frequency loss: patch_factor {patch_factor} must divide {h}x{w}.')
  fp = _spectrum(pred.astype(jnp.float32), patch_factor)
  ft = _spectrum(target.astype(jnp.float32), patch_factor)
  if ave_spectrum:
    fp, ft = fp.mean(0, keepdims=True), ft.mean(0, keepdims=True)
  distance = jnp.real(fp - ft) ** 2 + jnp.imag(fp - ft) ** 2
  weight = jnp.sqrt(distance) ** alpha
  if log_matrix:
    weight = jnp.log(weight + 1.0)
  peak = weight.max() if batch_matrix else weight.max(axis=(-2, -1), keepdims=True)
  weight = jnp.clip(jnp.nan_to_num(weight / peak, nan=0.0), 0.0, 1.0)
  return jnp.mean(jax.lax.stop_gradient(weight) * distance)
