"""RealPLKSR (traiNNer-redux) / PLKSR (Lee et al. 2024). SKELETON: being written."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class RealPLKSR(nn.Module):
  """Not written yet."""
  scale: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    raise NotImplementedError('RealPLKSR is being written')
