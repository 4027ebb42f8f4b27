"""DAT (Chen et al. 2023) state dicts (spandrel's DAT keys). SKELETON: being written."""

from collections.abc import Mapping

from enhance_jax.io.weights.converter import Layout

HINT = 'a DAT state_dict'


def detect(sd: Mapping) -> bool:
  """Whether SD's keys are DAT's."""
  del sd
  return False


def layout(sd: Mapping) -> Layout:
  """DAT's sizes read off SD's shapes, and its key table."""
  raise NotImplementedError('DAT layout is being written')
