"""LDL, the locally discriminative learning loss (Liang et al. 2022, "Details or Artifacts").

Pixels where G's output is further from the target than the EMA generator's, in a region whose
residual varies (locally and over the patch), are taken for GAN artifacts: the loss is L1 between
output and target, both weighted by that artifact map. As in BasicSR's RealESRGANModel the map is
not detached, and the residual is summed over channels.
"""

import jax.numpy as jnp


def local_variance(x, size):
  """Unbiased variance of X [N, H, W, 1] over each SIZE x SIZE window (reflect-padded, stride 1)."""
  pad = (size - 1) // 2
  padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode='reflect')
  h, w = x.shape[1:3]
  taps = jnp.concatenate([padded[:, i:i + h, j:j + w] for i in range(size) for j in range(size)], axis=-1)
  return jnp.var(taps, axis=-1, ddof=1, keepdims=True)


def artifact_map(target, image, ema_image, size=7):
  """The LDL weight [N, H, W, 1]: var(residual over the patch)^(1/5) * its local variance, zero
  where the EMA generator's residual is larger than G's (there G is not the one making artifacts)."""
  residual = jnp.sum(jnp.abs(target - image), axis=-1, keepdims=True)
  residual_ema = jnp.sum(jnp.abs(target - ema_image), axis=-1, keepdims=True)
  patch = jnp.var(residual, axis=(1, 2, 3), ddof=1, keepdims=True) ** 0.2
  weight = patch * local_variance(residual, size)
  return jnp.where(residual < residual_ema, 0.0, weight)


def ldl(image, target, ema_image, size=7):
  """Mean |w * image - w * target| with w the artifact map (BasicSR's cri_ldl, an L1 loss)."""
  w = artifact_map(target, image, ema_image, size)
  return jnp.mean(jnp.abs(w * image - w * target))
