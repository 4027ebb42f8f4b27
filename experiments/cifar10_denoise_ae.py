"""Report 001's denoising autoencoder on CIFAR-10: kernel-4 stride-2 convs, a max-pool, an 8x8x2
bottleneck, a mirrored decoder of transposed convs and upsampling (enhance_jax/models/autoencoders.py).

Noise as the report: each image gets one of salt and pepper, random colour noise, darkening or
brightening, at a proportion drawn per image from 30-60 %. data.train_on='noisy' is the report's
model B (noisy in, clean target); 'clean' is its model A (trained to reproduce clean images, scored
on noisy ones). Data: `--set data.source=tfds:cifar10` or `folder:PATH`; with none named, 32x32
crops of the embedded photos. Chosen where the report is silent (from the authors' code where it
says): MSE, Adam lr 1e-3, batch 32 (their notebook used 1), 3 epochs of CIFAR-10's 50,000 images.
"""

import ml_collections

from enhance_jax.training.config import base_config, supervised_run

REPORT = '001'
NOISE = ("one_of('salt_pepper(0.3, 0.6)', 'color_noise(0.3, 0.6)', 'darken(0.3, 0.6)', "
         "'brighten(0.3, 0.6)')")


def get_config():
  c = base_config()
  c.unlock()
  c.name = 'cifar10_denoise_ae'
  c.model = ml_collections.ConfigDict({'name': 'denoise_ae', 'features': (32, 16),
                                       'latent_channels': 2, 'inner_stride': 1, 'scale': 1})
  c.discriminator = ml_collections.ConfigDict({'name': 'none'})

  c.data.patch_size = 32
  c.data.val_patch_size = 32
  c.data.degradation = NOISE
  c.data.train_on = 'noisy'              # 'noisy' (model B) | 'clean' (model A)
  c.data.augment = True

  c.loss.pretrain = ml_collections.ConfigDict({'mse': 1.0})
  c.loss.gan = ml_collections.ConfigDict({'mse': 1.0})

  supervised_run(c, batch_size=32, lr=1e-3, epochs=3, steps_per_epoch=50_000 // 32)
  return c.lock()
