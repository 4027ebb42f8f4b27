"""Omni-SR (Wang et al. 2023) state dicts (spandrel's OmniSR keys). SKELETON: being written."""

from collections.abc import Mapping

from enhance_jax.io.weights.converter import Layout

HINT = 'a OmniSR state_dict'


def detect(sd: Mapping) -> bool:
  """Whether SD's keys are OmniSR's."""
  del sd
  return False


def layout(sd: Mapping) -> Layout:
  """OmniSR's sizes read off SD's shapes, and its key table."""
  raise NotImplementedError('OmniSR layout is being written')
