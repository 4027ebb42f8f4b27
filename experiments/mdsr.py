"""MDSR (report 002; Lim et al. 2017): one multi-scale EDSR trained on x2, x3 and x4 at once.

The shared body (16 residual blocks of 64 features: the paper's 3.2M baseline MDSR; `--set
model.num_blocks=80` is its 8.0M MDSR) with per-scale pre-processing blocks and upsamplers. Each
batch trains one scale, cycling deterministically: batch `step` at model.scales[step % 3], so x2, x3,
x4, x2, ... (trainer.step_scale; a resumed run continues the cycle). The scale is a static argument:
one compiled train step per scale, each compiled once.

Data: the pipeline makes HR patches only (data.degrade_on_device); the train step degrades each batch
on the device by its scale's degradation, data.scale_degradations['x{S}'] (bicubic(S)), so every
batch has one HR shape whatever the scale. data.patch_size (HR) must be a multiple of 12 (the least
common multiple of 2, 3, 4): 96 gives LR patches of 48 / 32 / 24 at x2 / x3 / x4 (the EDSR paper's
LR 48 at x2). EDSR-PyTorch's MDSR instead keeps LR 48 at every scale (HR 48 * S), which needs an HR
shape per scale; one HR shape keeps the pipeline unchanged.

Validation and `python -m enhance_jax.evaluate` score every scale: the held-out images (cropped to a
multiple of 12) degraded at x2, x3 and x4. Validation logs each metric's mean over the scales (what
train.best_metric reads) and `psnr_x2`, `psnr_x3`, ...; evaluate's metrics.json has the model.scale
(x2) result at the top level as for other models and every scale's under 'scales'.
"""

import ml_collections

from enhance_jax.training.config import load_experiment

REPORT = '002'


def get_config():
  c = load_experiment('edsr')
  c.unlock()
  c.name = 'mdsr'
  c.model = ml_collections.ConfigDict({
      'name': 'mdsr',
      'num_blocks': 16,                  # shared residual blocks (80: the paper's MDSR)
      'num_features': 64,
      'res_scale': 1.0,
      'scales': (2, 3, 4),               # trained in turn, one batch each
      'scale': 2,                        # the default scale (apply without scale=, enhance, samples)
      'init_from': ''})
  c.data.patch_size = 96                 # HR side, a multiple of 12: LR 48 / 32 / 24
  c.data.val_patch_size = 192            # a multiple of 12
  c.data.degrade_on_device = True        # HR patches from the pipeline, LR made per scale in the step
  c.data.degradation = 'bicubic(2)'      # model.scale's (the default-scale validation LR)
  c.data.scale_degradations = ml_collections.ConfigDict(
      {'x2': 'bicubic(2)', 'x3': 'bicubic(3)', 'x4': 'bicubic(4)'})
  return c.lock()
