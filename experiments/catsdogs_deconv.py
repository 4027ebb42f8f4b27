"""Report 001's deconvolution network, Cats&Dogs 180 -> 360: transposed convs k3 s1 (10 channels),
k3 s2 (20), k4 s1 (3); MSE (enhance_jax/models/autoencoders.py DeconvSR).

Data as the report: each image fitted to 360x360, by a centre crop when both sides are larger and a
bicubic rescale when not (data.hr_resize_mode='crop_or_resize'), the input its bicubic downscale to
180. `--set data.source=tfds:cats_vs_dogs` or `folder:PATH`; with none named, the embedded photos at
360. Chosen where the report is silent (from the authors' training script): Adam lr 1e-4, batch 5,
5 epochs of 80 % of the 23,262 Cats&Dogs images.
"""

import ml_collections

from enhance_jax.training.config import base_config, supervised_run

REPORT = '001'


def get_config():
  c = base_config()
  c.unlock()
  c.name = 'catsdogs_deconv'
  c.model = ml_collections.ConfigDict({'name': 'deconv_sr', 'features': (10, 20), 'scale': 2})
  c.discriminator = ml_collections.ConfigDict({'name': 'none'})

  c.data.hr_resize = 360
  c.data.hr_resize_mode = 'crop_or_resize'
  c.data.patch_size = 360
  c.data.val_patch_size = 360
  c.data.degradation = 'bicubic(2)'      # 360 -> 180
  c.data.augment = False
  c.data.val_fraction = 0.2

  c.loss.pretrain = ml_collections.ConfigDict({'mse': 1.0})
  c.loss.gan = ml_collections.ConfigDict({'mse': 1.0})

  supervised_run(c, batch_size=5, lr=1e-4, epochs=5, steps_per_epoch=int(23_262 * 0.8) // 5)
  return c.lock()
