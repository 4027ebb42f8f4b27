"""SwinIR (Liang et al. 2021) state dicts (spandrel's SwinIR keys). SKELETON: being written."""

from collections.abc import Mapping

from enhance_jax.io.weights.converter import Layout

HINT = 'a SwinIR state_dict'


def detect(sd: Mapping) -> bool:
  """Whether SD's keys are SwinIR's."""
  del sd
  return False


def layout(sd: Mapping) -> Layout:
  """SwinIR's sizes read off SD's shapes, and its key table."""
  raise NotImplementedError('SwinIR layout is being written')
