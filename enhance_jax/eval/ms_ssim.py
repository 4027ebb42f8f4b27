"""MS-SSIM (Wang, Simoncelli and Bovik 2003), as `piq.multi_scale_ssim` computes it: per channel, an
11x11 Gaussian (sigma 1.5) without padding, five scales with the paper's weights, each scale halved
by a 2x2 mean after replicating one row/column at the top/left of an odd side; contrast-structure at
the first four scales, full SSIM at the last, clipped at 0, raised to the weights and multiplied;
the mean over channels. Higher is better; differentiable (the `ms_ssim` loss is 1 - MS-SSIM).
"""

import jax.numpy as jnp
import numpy as np

WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
KERNEL_SIZE, SIGMA = 11, 1.5
K1, K2 = 0.01, 0.03


def min_side(levels: int = len(WEIGHTS), kernel_size: int = KERNEL_SIZE) -> int:
  """The smallest side MS-SSIM takes: the window must fit the coarsest scale (161 by default)."""
  return (kernel_size - 1) * 2 ** (levels - 1) + 1


def gaussian_taps(size: int = KERNEL_SIZE, sigma: float = SIGMA) -> np.ndarray:
  """The normalised 1-D Gaussian whose outer product is piq's 2-D window."""
  coords = np.arange(size, dtype=np.float64) - (size - 1) / 2
  taps = np.exp(-coords ** 2 / (2 * sigma ** 2))
  return (taps / taps.sum()).astype(np.float32)


def _blur(x, taps):
  """Each channel of X [N, H, W, C] filtered by the separable window, 'valid' (no padding)."""
  k = len(taps)
  h, w = x.shape[1] - k + 1, x.shape[2] - k + 1
  rows = sum(taps[i] * x[:, i:i + h] for i in range(k))
  return sum(taps[j] * rows[:, :, j:j + w] for j in range(k))


def ssim_and_cs(x, y, taps, max_val=1.0):
  """([N, C] mean SSIM, [N, C] mean contrast-structure) of X and Y at one scale."""
  c1, c2 = (K1 * max_val) ** 2, (K2 * max_val) ** 2
  mu_x, mu_y = _blur(x, taps), _blur(y, taps)
  sxx = _blur(x * x, taps) - mu_x ** 2
  syy = _blur(y * y, taps) - mu_y ** 2
  sxy = _blur(x * y, taps) - mu_x * mu_y
  cs = (2 * sxy + c2) / (sxx + syy + c2)
  ssim = (2 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1) * cs
  return ssim.mean(axis=(1, 2)), cs.mean(axis=(1, 2))


def halve(x):
  """2x2 mean, after replicating the first row and column when either side is odd (as piq)."""
  pad = max(x.shape[1] % 2, x.shape[2] % 2)
  if pad:
    x = jnp.pad(x, ((0, 0), (pad, 0), (pad, 0), (0, 0)), mode='edge')
  n, h, w, c = x.shape
  return x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def ms_ssim(x, y, max_val: float = 1.0, weights=WEIGHTS, floor: float = 0.0):
  """[N] MS-SSIM of images X and Y [N, H, W, C] in [0, max_val] (sides >= min_side(len(weights))).
  Each scale's term is clipped at FLOOR (0: piq's relu; a loss passes a small positive one, where the
  gradient of t ** 0.0448 is finite)."""
  x, y = jnp.asarray(x, jnp.float32) / max_val, jnp.asarray(y, jnp.float32) / max_val
  if min(x.shape[1:3]) < min_side(len(weights)):
    raise ValueError(f'MS-SSIM needs sides of at least {min_side(len(weights))} pixels, got '
                     f'{x.shape[1]}x{x.shape[2]}.')
  taps = gaussian_taps()
  values = []
  for level in range(len(weights)):
    if level:
      x, y = halve(x), halve(y)
    ssim, cs = ssim_and_cs(x, y, taps)
    values.append(ssim if level == len(weights) - 1 else cs)
  stacked = jnp.maximum(jnp.stack(values), floor)  # [levels, N, C]
  w = jnp.asarray(weights, jnp.float32)[:, None, None]
  return jnp.prod(stacked ** w, axis=0).mean(axis=-1)
