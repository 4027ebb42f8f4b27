"""SPAN (Wan et al. 2024) state dicts (spandrel's SPAN keys). SKELETON: being written."""

from collections.abc import Mapping

from enhance_jax.io.weights.converter import Layout

HINT = 'a SPAN state_dict'


def detect(sd: Mapping) -> bool:
  """Whether SD's keys are SPAN's."""
  del sd
  return False


def layout(sd: Mapping) -> Layout:
  """SPAN's sizes read off SD's shapes, and its key table."""
  raise NotImplementedError('SPAN layout is being written')
