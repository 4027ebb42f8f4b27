"""RealPLKSR x4 (traiNNer-redux's RealPLKSR; PLKSR: Lee et al. 2024, "Partial Large Kernel CNNs for
Efficient Super-Resolution"), its fidelity (PSNR) recipe on bicubic x4.

Source: the-database/traiNNer-redux options/_templates/train/RealPLKSR/RealPLKSR_fidelity.yml (the
template that replaced options/train/RealPLKSR/RealPLKSR_fromscratch.yml; the older
options/train/RealPLKSR/RealPLKSR.yml, until 2024-09, was a GAN fine-tune template: see
realplksr_gan_x4). Network: 64 features, 28 PLK blocks, 17x17 partial kernels over a quarter of the
channels, element-wise attention, pixel-shuffle upsampler and layer_norm true (the template's "better
quality" setting; GroupNorm(4) otherwise). Data: LR patches 96 (HR 384), batch 16 (its note: the
paper's is 64), flips and rotations. AdamW 2e-4 (0.9, 0.99), weight decay 0; MultiStep [1e5, 2e5,
3e5, 4e5, 4.25e5] x0.5; 450k iterations; Charbonnier 1.0; EMA 0.999.

Not reproduced: the EMA warm-up (ema_power 0.75), AMP fp16 (`--set train.precision=bf16` is the
analogue here), the Charbonnier epsilon (traiNNer's 1e-12, this schema's 1e-3), validation off by
default there. Data: DIV2K/DF2K as `--set data.source=folder:PATH`; the embedded photos when none is
named; LR = the MATLAB-style bicubic x4 of each HR patch (traiNNer reads paired LR files).
"""

import ml_collections

from enhance_jax.training.config import base_config

REPORT = 'new'


def get_config():
  c = base_config()
  c.name = 'realplksr_x4'
  c.model = ml_collections.ConfigDict({
      'name': 'realplksr',
      'dim': 64,
      'n_blocks': 28,
      'kernel_size': 17,
      'split_ratio': 0.25,
      'use_ea': True,
      'norm_groups': 4,                  # GroupNorm groups when layer_norm is False
      'dropout': 0.0,                    # Dropout2d before the tail (traiNNer-redux: 0)
      'upsampler': 'pixelshuffle',       # 'dysample': DySample's learned sampling
      'layer_norm': True,
      'scale': 4,
      'init_from': ''})                  # converted model dir / workdir / weights file; '' = random
  c.discriminator = ml_collections.ConfigDict({'name': 'none'})  # one fidelity stage

  c.data.source = 'embedded'
  c.data.patch_size = 384                # lq_size 96 at x4
  c.data.val_patch_size = 384
  c.data.degradation = 'bicubic(4)'
  c.data.augment = True                  # use_hflip, use_rot

  c.loss.pretrain = ml_collections.ConfigDict({'pixel': 1.0})  # charbonnierloss 1.0
  c.loss.gan = ml_collections.ConfigDict({'pixel': 1.0})       # no GAN stage here
  c.loss.pixel_criterion = 'charbonnier'

  t = c.train
  t.batch_size = 16
  t.num_steps = t.pretrain_steps = 450_000
  t.optimizer = 'adamw'
  t.weight_decay = 0.0
  t.pretrain_lr = 2e-4
  t.b1, t.b2 = 0.9, 0.99
  t.pretrain_milestones = (100_000, 200_000, 300_000, 400_000, 425_000)
  t.lr_decay = 0.5
  t.ema_decay = 0.999
  t.eval_every_steps = 5000
  t.checkpoint_every_steps = 5000
  t.early_stopping_patience = 0          # trains its full schedule
  return c.lock()
