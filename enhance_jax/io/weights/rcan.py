"""RCAN (Zhang et al. 2018) state dicts (spandrel's RCAN keys). SKELETON: being written."""

from collections.abc import Mapping

from enhance_jax.io.weights.converter import Layout

HINT = 'a RCAN state_dict'


def detect(sd: Mapping) -> bool:
  """Whether SD's keys are RCAN's."""
  del sd
  return False


def layout(sd: Mapping) -> Layout:
  """RCAN's sizes read off SD's shapes, and its key table."""
  raise NotImplementedError('RCAN layout is being written')
