"""Report 000's CNN baseline: CelebA faces restored after a 1/5 downscale and back, same size out.

Encoder-decoder: 3 strided convs, transposed convs back, ReLU, sigmoid output (BaselineCNN in
enhance_jax/models/restoration_baselines.py); MSE; Adam lr 1e-3, batch 32, 100 epochs (the report's
table 1 configuration).

Data as the report: CelebA (`--set data.source=tfds:celeb_a` or `folder:PATH`), whole 218x178
images, degraded by bicubic downscaling to 1/5 and back up to size, min-max normalised, 60/40
train/test split of a folder (data.val_fraction=0.4), `data.fraction` of the dataset. With no dataset
named, 218x178 crops of the embedded photos. Chosen where the report is silent: 10,000 images
(data.fraction 0.05 of CelebA's 202,599, its GAN experiment 1's sample count), no flips.
"""

import ml_collections

from enhance_jax.training.config import base_config, supervised_run

REPORT = '000'
CELEBA_IMAGES = 202_599


def get_config():
  c = base_config()
  c.unlock()
  c.name = 'celeba_cnn'
  c.model = ml_collections.ConfigDict({'name': 'celeba_cnn', 'num_features': 64, 'num_layers': 3,
                                       'scale': 1})
  c.discriminator = ml_collections.ConfigDict({'name': 'none'})

  c.data = ml_collections.ConfigDict({**c.data.to_dict(),  # patch_size becomes an (h, w) pair
                                      'patch_size': (218, 178)})  # whole CelebA images
  c.data.val_patch_size = 0              # validate on centre crops of the training size
  c.data.degradation = 'down_up(5)'      # 1/5 bicubic downscale, then back up to the original size
  c.data.normalize = 'minmax'
  c.data.augment = False
  c.data.val_fraction = 0.4              # the report's 60/40 split
  c.data.fraction = 0.05                 # ~10,000 of CelebA's images

  c.loss.pretrain = ml_collections.ConfigDict({'mse': 1.0})
  c.loss.gan = ml_collections.ConfigDict({'mse': 1.0})

  supervised_run(c, batch_size=32, lr=1e-3, epochs=100,
                 steps_per_epoch=int(CELEBA_IMAGES * 0.05 * 0.6) // 32)
  return c.lock()
