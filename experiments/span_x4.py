"""SPAN x4 (Wan et al. 2024, "Swift Parameter-free Attention Network for Efficient Super-Resolution").

SPAN of 48 features (six SPABs, Conv3XC convs trained as their 1x1-3x3-1x1 branches and evaluated
fused), x4, without the mean shift of hongyuanyu/SPAN's span_arch.py (below). The
official repository publishes no training options, so the recipe is traiNNer-redux's SPAN template
(the-database/traiNNer-redux options/train/SPAN/SPAN_fromscratch.yml): LR patches of 64 (HR 256), batch
16 (its note: the paper's is 64), flips and rotations, Adam 5e-4 (0.9, 0.99; AdamW with weight decay
0 there), MultiStep [2e5, 4e5, 6e5, 8e5] x0.5, 1M iterations, EMA 0.999. The loss is L1 (the
template's MS-SSIM+L1 has no term here). Like the template it trains with norm off; the official
code's mean shift (`--set model.norm=True`: input (x - DIV2K mean) * 255, output left unshifted) is
what the released spanx4_ch48 file holds, and the importer reads it from the file.

Data: DIV2K/DF2K as `--set data.source=folder:PATH` (or tfds:div2k, records:PATH); the embedded photos
when none is named. The LR is the MATLAB-style bicubic x4 of each HR patch.
"""

import ml_collections

from enhance_jax.training.config import base_config

REPORT = 'new'


def get_config():
  c = base_config()
  c.name = 'span_x4'
  c.model = ml_collections.ConfigDict({
      'name': 'span',
      'num_features': 48,                # 48 (SPAN); the released files also come in 52
      # the template's norm off: the official code's (x - DIV2K mean) * 255 input with an
      # un-shifted [0, 1] output trains far slower (10 dB after 500 steps where this has 31)
      'norm': False,
      'img_range': 255.0,
      'scale': 4,
      'init_from': ''})                  # converted model dir / workdir / weights file; '' = random
  c.discriminator = ml_collections.ConfigDict({'name': 'none'})  # one L1 stage

  c.data.source = 'embedded'
  c.data.patch_size = 256                # gt_size: lq_size 64 at x4
  c.data.val_patch_size = 256
  c.data.degradation = 'bicubic(4)'
  c.data.augment = True                  # use_hflip, use_rot

  c.loss.pretrain = ml_collections.ConfigDict({'pixel': 1.0})
  c.loss.gan = ml_collections.ConfigDict({'pixel': 1.0})  # no GAN stage here
  c.loss.pixel_criterion = 'l1'

  t = c.train
  t.batch_size = 16
  t.num_steps = t.pretrain_steps = 1_000_000
  t.optimizer = 'adam'
  t.pretrain_lr = 5e-4
  t.b1, t.b2 = 0.9, 0.99
  t.pretrain_milestones = (200_000, 400_000, 600_000, 800_000)
  t.lr_decay = 0.5
  t.ema_decay = 0.999
  t.eval_every_steps = 5000
  t.checkpoint_every_steps = 5000
  t.early_stopping_patience = 0          # trains its full schedule
  return c.lock()
