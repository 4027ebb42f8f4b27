"""Omni-SR x4 (Wang et al. 2023, "Omni Aggregation Networks for Lightweight Image Super-Resolution").

Source: Francis0625/Omni-SR train_yamls/train_OmniSR_X4_DIV2K.yaml (train_OmniSR_X4_DF2K.yaml differs
only in the dataset) with train_scripts/trainer_common.py and data_tools/dataloader_DIV2K_memory.py.
Network: 64 features, 5 OSAGs of 1 OSA block, windows of 8 with relative position bias, biases on
(ffn_bias is accepted but unused by the official OSA block). Data: LR patches 64 (HR 256) from DIV2K's
bicubic x4 pairs, batch 64, a random flip (horizontal, vertical or none) and rot90. AdamW 5e-4 (0.9,
0.999), weight decay 1e-4; L1; no EMA. 1000 epochs of 800 steps (800 images x dataset_enlarge 64 /
batch 64) = 800k steps, the rate halved at epochs 250, 500, 750, 1000 (a step schedule, not cosine):
milestones 200k, 400k, 600k (800k ends the run).

Not reproduced: the official pipeline maps images to [-1, 1] ((x/255 - 0.5) * 2); here they stay in
[0, 1] (model.signed_input=True trains on [-1, 1] like the official code). Data: DIV2K as
`--set data.source=folder:PATH` or tfds:div2k; the embedded photos when none is named; LR = the
MATLAB-style bicubic x4 of each HR patch.
"""

import ml_collections

from enhance_jax.training.config import base_config

REPORT = 'new'


def get_config():
  c = base_config()
  c.name = 'omnisr_x4'
  c.model = ml_collections.ConfigDict({
      'name': 'omnisr',
      'num_feat': 64,
      'res_num': 5,
      'block_num': 1,
      'window_size': 8,
      'pe': True,
      'bias': True,
      'scale': 4,
      'signed_input': False,             # True: the official [-1, 1] image range
      'remat': False,
      'init_from': ''})                  # converted model dir / workdir / weights file; '' = random
  c.discriminator = ml_collections.ConfigDict({'name': 'none'})  # one L1 stage

  c.data.source = 'embedded'
  c.data.patch_size = 256                # lr_patch_size 64 at x4
  c.data.val_patch_size = 256
  c.data.degradation = 'bicubic(4)'
  c.data.augment = True                  # flips and rot90

  c.loss.pretrain = ml_collections.ConfigDict({'pixel': 1.0})  # l1_weight 1.0
  c.loss.gan = ml_collections.ConfigDict({'pixel': 1.0})       # no GAN stage here
  c.loss.pixel_criterion = 'l1'

  t = c.train
  t.batch_size = 64
  t.num_steps = t.pretrain_steps = 800_000
  t.optimizer = 'adamw'
  t.weight_decay = 1e-4
  t.pretrain_lr = 5e-4
  t.b1, t.b2 = 0.9, 0.999
  t.pretrain_milestones = (200_000, 400_000, 600_000)
  t.lr_decay = 0.5
  t.ema_decay = 0.0                      # the official trainer keeps no EMA
  t.eval_every_steps = 5000
  t.checkpoint_every_steps = 5000
  t.early_stopping_patience = 0          # trains its full schedule
  return c.lock()
