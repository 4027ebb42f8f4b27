"""Degradations and augmentations: pure functions written once for numpy (grain workers) and jnp
(device), composed from a config spec such as 'bicubic(4)|blur(1.5)'.

Where each part is (each module imports only those above it in this list):
  protocol.py    the op protocol `op(image, rng) -> image` (numpy Generator or jax key), the checks the
                 op factories share, device-only ops, apply_batch (an op over a device batch), output_hw
  augment.py     augmentations and crops: flip_rot90, random/center/mod crops, square_resize, affine
  classic.py     the per-image degradation ops (reports 000-004): bicubic, blur, down_up, noises,
                 darken/brighten, clip, identity, and usm (Real-ESRGAN's target sharpening)
  realesrgan.py  Real-ESRGAN's second-order degradation chain: its options, blur kernels, resize,
                 noise, degrade_chain, and the ops realesrgan, random_blur, random_noise, jpeg_compression
  registry.py    the spec language: OPS (op name -> factory), parse, one_of, config_options

A new op is one factory `(*spec args) -> op` and one line in registry.OPS. Below: the names used
outside this package.
"""

from .augment import (affine_matrix, apply_affine, center_crop, flip_rot90, mod_crop, random_affine,
                      random_crop, random_flip_rot90, square_resize)
from .classic import bicubic_down, bicubic_down_blur, gaussian_blur, usm_matrix, usm_sharpen
from .protocol import apply_batch, device_only, output_hw
from .realesrgan import (KERNEL_KINDS, bivariate_kernel, degrade_chain, draw_chain, filter2d, gaussian_noise,
                         poisson_noise, realesrgan_defaults, realesrgan_options, sinc_kernel)
from .registry import OPS, config_options, parse

__all__ = [
    # augment
    'affine_matrix', 'apply_affine', 'center_crop', 'flip_rot90', 'mod_crop', 'random_affine', 'random_crop',
    'random_flip_rot90', 'square_resize',
    # classic
    'bicubic_down', 'bicubic_down_blur', 'gaussian_blur', 'usm_matrix', 'usm_sharpen',
    # protocol
    'apply_batch', 'device_only', 'output_hw',
    # realesrgan
    'KERNEL_KINDS', 'bivariate_kernel', 'degrade_chain', 'draw_chain', 'filter2d', 'gaussian_noise',
    'poisson_noise', 'realesrgan_defaults', 'realesrgan_options', 'sinc_kernel',
    # registry
    'OPS', 'config_options', 'parse',
]
