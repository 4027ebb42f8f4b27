"""HAT (Chen et al. 2023) state dicts (spandrel's HAT keys). SKELETON: being written."""

from collections.abc import Mapping

from enhance_jax.io.weights.converter import Layout

HINT = 'a HAT state_dict'


def detect(sd: Mapping) -> bool:
  """Whether SD's keys are HAT's."""
  del sd
  return False


def layout(sd: Mapping) -> Layout:
  """HAT's sizes read off SD's shapes, and its key table."""
  raise NotImplementedError('HAT layout is being written')
