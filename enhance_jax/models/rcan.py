"""RCAN (Zhang et al. 2018). SKELETON: being written."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class RCAN(nn.Module):
  """Not written yet."""
  scale: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    raise NotImplementedError('RCAN is being written')
