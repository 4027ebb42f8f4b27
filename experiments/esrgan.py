"""ESRGAN x4 (report 004; Wang et al. 2018; BasicSR train_ESRNet/ESRGAN_x4 schedules).

Two stages in one run: `train.pretrain_steps` of L1 pixel training (the PSNR-oriented RRDBNet), then
GAN training with VGG19 (before activation) content 1.0 + relativistic-average adversarial 0.005
+ L1 0.01 until `train.num_steps`. Every other field is the schema's default
(`python -m enhance_jax.train --help-config`).
"""

import ml_collections

from enhance_jax.training.config import base_config

REPORT = '004'


def get_config():
  c = base_config()
  c.name = 'esrgan'

  c.model = ml_collections.ConfigDict({
      'name': 'rrdbnet',                 # generator (network_g)
      'num_blocks': 23,                  # RRDB blocks
      'num_features': 64,
      'growth_channels': 32,
      'scale': 4,
      'residual_scale': 0.2,
      'remat': False,                    # rematerialise the RRDB trunk: about half the memory
      'init_from': ''})

  c.discriminator = ml_collections.ConfigDict({
      'name': 'vgg_style',               # network_d: 8 convs 64..512, alternate stride 2
      'num_features': 64,
      'dense_features': 1024,
      'norm': 'batch'})                  # 'batch' | 'none'

  c.data.degradation = 'bicubic_blur(4, 1.5)'  # report 004: bicubic x4 down + Gaussian blur radius 1.5

  c.loss.pretrain = ml_collections.ConfigDict({'pixel': 1.0})
  c.loss.gan = ml_collections.ConfigDict({'pixel': 0.01, 'content': 1.0, 'adversarial': 0.005})

  t = c.train
  t.num_steps = 1_400_000                # total: L1 stage + GAN stage (BasicSR: 1M + 400k)
  t.pretrain_steps = 1_000_000           # L1 pixel stage
  t.pretrain_lr = 2e-4                   # L1 stage (BasicSR ESRNet)
  t.g_lr = t.d_lr = 1e-4                 # GAN stage (BasicSR optim_g, optim_d)
  t.pretrain_milestones = (200_000, 400_000, 600_000, 800_000)
  t.gan_milestones = (50_000, 100_000, 200_000, 300_000)  # steps into the GAN stage
  t.ema_decay = 0.999
  t.early_stopping_patience = 5          # evaluations without a better PSNR, per stage
  return c.lock()
