"""EDSR for report 002's de-blurring task: x2 super-resolution of a blurred LR image.

Report 002 "generated blurred images by applying a gaussian blur to the LR images", then trained as
for super-resolution; it gives no sigma or kernel. Chosen here: sigma 1.5 LR pixels (report 004's
blur on the LR, so the repository's two blurred-LR tasks share one value). The `blur` op takes no
kernel size: its Gaussian is truncated at 3 sigma, a kernel of 2 * ceil(3 sigma) + 1 taps (11 at
sigma 1.5, about 6 sigma + 1), with reflected borders. Another blur: `--set data.degradation=
'bicubic(2)|blur(SIGMA)'`. Everything else is the `edsr` experiment (baseline, L1, Adam 1e-4).

With the NIMA term (report 002's NIMA-guided de-blurring, gamma 0.1): the preset keys are here at
weight 0, so `--set loss.pretrain.nima=0.1 --set loss.nima_from=NIMA_DIR` turns it on (and
`--set loss.pretrain.pixel=0 --set loss.pretrain.mse=1` gives the report's L2 base).
"""

from enhance_jax.training.config import load_experiment, with_nima_term

REPORT = '002'
BLUR_SIGMA = 1.5


def get_config():
  c = load_experiment('edsr')
  c.unlock()
  c.name = 'edsr_deblur'
  c.data.degradation = f'bicubic(2)|blur({BLUR_SIGMA})'  # bicubic x2 down, then blur the LR
  with_nima_term(c, 0.0, base=(('pixel', 1.0), ('mse', 0.0)))  # report's gamma: 0.1
  return c.lock()
