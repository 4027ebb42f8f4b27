"""enhance_jax: image-enhancement networks (ESRGAN, SRGAN, EDSR, ...) trained with JAX/Flax."""

from enhance_jax import stops as _stops

__version__ = "0.1.0"

if _stops.launched_command() is not None:  # `python -m enhance_jax.train ...`: before JAX is imported,
  _stops.install()                          # so a Ctrl-C while starting is a clean stop too
