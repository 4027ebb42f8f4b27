"""RCAN x4 (Zhang et al. 2018, "Image Super-Resolution Using Very Deep Residual Channel Attention
Networks").

RCAN: 10 residual groups of 20 RCABs, 64 features, channel-attention reduction 16, x4, the DIV2K mean
shift at rgb_range 255. The paper's and the official code's recipe (yulunzhang/RCAN
RCAN_TrainCode/code/option.py and its README's BIX4 command): DIV2K's 800 training images, LR patches
of 48 (patch_size 192 = HR), batch 16, flips and 90-degree rotations, L1, Adam 1e-4 (0.9, 0.999, eps
1e-8, optax's default), the rate halved every 200 epochs of 1000 batches (2e5 updates), 1000 epochs =
1M updates; no EMA. The official x4 model starts from the trained x2 one (`--pre_train RCAN_BIX2.pt`):
`--set model.init_from=PATH` does that; '' starts from random weights. Its MeanShift convs were trained
with the rest (as in the official code); `--set train.lr_multipliers.sub_mean=0 --set
train.lr_multipliers.add_mean=0` keeps them at the mean.

Data: DIV2K as `--set data.source=tfds:div2k` or `folder:DIV2K_train_HR` (`records:PATH`); the embedded
photos when none is named. The LR is the MATLAB-style bicubic x4 of each HR patch.
"""

import ml_collections

from enhance_jax.training.config import base_config

REPORT = 'new'


def get_config():
  c = base_config()
  c.name = 'rcan_x4'
  c.model = ml_collections.ConfigDict({
      'name': 'rcan',
      'num_groups': 10,                  # residual groups
      'num_blocks': 20,                  # RCABs per group
      'num_features': 64,
      'reduction': 16,                   # channel attention's squeeze ratio
      'kernel_size': 3,
      'norm': True,                      # DIV2K mean shift at rgb_range 255
      'unshuffle': False,
      'scale': 4,
      'init_from': ''})                  # the official x4 starts from the x2 model; '' = random
  c.discriminator = ml_collections.ConfigDict({'name': 'none'})  # one L1 stage

  c.data.source = 'embedded'
  c.data.patch_size = 192                # HR side: LR 48 at x4
  c.data.val_patch_size = 192
  c.data.degradation = 'bicubic(4)'
  c.data.augment = True                  # random flips and 90-degree rotations

  c.loss.pretrain = ml_collections.ConfigDict({'pixel': 1.0})
  c.loss.gan = ml_collections.ConfigDict({'pixel': 1.0})  # no GAN stage here
  c.loss.pixel_criterion = 'l1'

  t = c.train
  t.batch_size = 16
  t.num_steps = t.pretrain_steps = 1_000_000
  t.optimizer = 'adam'
  t.pretrain_lr = 1e-4
  t.b1, t.b2 = 0.9, 0.999
  t.pretrain_milestones = (200_000, 400_000, 600_000, 800_000)  # halved every 200 epochs
  t.lr_decay = 0.5
  t.ema_decay = 0.0
  t.steps_per_epoch = 1000               # the official epoch (--test_every 1000)
  t.eval_every_steps = 1000
  t.checkpoint_every_steps = 10_000
  t.early_stopping_patience = 0          # trains its full schedule
  return c.lock()
