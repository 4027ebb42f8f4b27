"""SwinIR (Liang et al. 2021). SKELETON: being written."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class SwinIR(nn.Module):
  """Not written yet."""
  scale: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    raise NotImplementedError('SwinIR is being written')
