"""RealPLKSR (traiNNer-redux) / PLKSR (Lee et al. 2024) state dicts (spandrel's PLKSR keys). SKELETON: being written."""

from collections.abc import Mapping

from enhance_jax.io.weights.converter import Layout

HINT = 'a RealPLKSR state_dict'


def detect(sd: Mapping) -> bool:
  """Whether SD's keys are RealPLKSR's."""
  del sd
  return False


def layout(sd: Mapping) -> Layout:
  """RealPLKSR's sizes read off SD's shapes, and its key table."""
  raise NotImplementedError('RealPLKSR layout is being written')
