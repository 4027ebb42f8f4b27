"""enhance_jax: image-enhancement networks (ESRGAN, SRGAN, EDSR, ...) trained with JAX/Flax."""

__version__ = "0.1.0"
