"""MDSR for report 002's de-blurring task: x2, x3 and x4 super-resolution of a blurred LR image.

As `edsr_deblur`: each scale's LR is the bicubic downscale blurred by a Gaussian of sigma 1.5 LR
pixels (the report gives no sigma or kernel; truncated at 3 sigma, 11 taps, reflected borders), per
scale in data.scale_degradations. Everything else is the `mdsr` experiment (L1, Adam 1e-4).

With the NIMA term (report 002's NIMA-guided de-blurring, gamma 0.1): the preset keys are here at
weight 0, so `--set loss.pretrain.nima=0.1 --set loss.nima_from=runs/nima` turns it on (and
`--set loss.pretrain.pixel=0 --set loss.pretrain.mse=1` gives the report's L2 base).
"""

import ml_collections

from enhance_jax.training.config import load_experiment, with_nima_term

REPORT = '002'
BLUR_SIGMA = 1.5  # as edsr_deblur


def get_config():
  c = load_experiment('mdsr')
  c.unlock()
  c.name = 'mdsr_deblur'
  c.data.degradation = f'bicubic(2)|blur({BLUR_SIGMA})'  # the default scale's (validation samples)
  c.data.scale_degradations = ml_collections.ConfigDict(
      {f'x{s}': f'bicubic({s})|blur({BLUR_SIGMA})' for s in (2, 3, 4)})
  with_nima_term(c, 0.0, base=(('pixel', 1.0), ('mse', 0.0)))  # report's gamma: 0.1
  return c.lock()
