"""EDSR (report 002's super-resolution baseline; Lim et al. 2017, "Enhanced Deep Residual Networks").

EDSR baseline: 16 residual blocks of 64 features without BatchNorm, residual scaling 1.0, DIV2K mean
shift, pixel-shuffle tail; `--set model.size=large` is the large EDSR (32 blocks of 256 features,
res_scale 0.1). One supervised stage, no discriminator: L1 (the EDSR paper; `loss.pixel_criterion=l2`
is report 002's L2), Adam 1e-4 (0.9, 0.999, eps 1e-8: optax's default), batch 16, the learning rate
halved every 2e5 updates, 3e5 updates (EDSR-PyTorch: 300 epochs of 1000 batches, decay at epoch 200).

Scale: x2 by default with report 002's patches, LR 24 -> HR 48 (data.patch_size is the HR side; the
EDSR paper itself trains on LR 48 patches: data.patch_size=96 at x2). The degradation's factor is
its own argument, not model.scale (DESIGN: the degradation factor is not the model's scale), so a
scale change names both, and the patch too; input_pipeline.check_config rejects a mismatch:
  --set model.scale=3 --set data.degradation='bicubic(3)' --set data.patch_size=72   # LR 24 -> 72
  --set model.scale=4 --set data.degradation='bicubic(4)' --set data.patch_size=96   # LR 24 -> 96

Data: DIV2K as `--set data.source=tfds:div2k` (a prepared TFDS DIV2K, array_record: its `hr` photos,
800 train / 100 validation; the LR is made by data.degradation as for every source), as folders
`--set data.source=folder:DIV2K_train_HR --set data.val_source=folder:DIV2K_valid_HR`, or a
data/prepare.py `records:PATH`; the embedded photos when none is named.
"""

import ml_collections

from enhance_jax.training.config import base_config

REPORT = '002'


def get_config():
  c = base_config()
  c.unlock()
  c.name = 'edsr'
  c.model = ml_collections.ConfigDict({
      'name': 'edsr',
      'size': 'baseline',                # 'baseline' (the fields below) | 'large' (32 x 256, 0.1)
      'num_blocks': 16,                  # residual blocks
      'num_features': 64,
      'res_scale': 1.0,                  # residual scaling (0.1 in the large EDSR)
      'scale': 2,                        # 2 | 3 | 4: set data.degradation and data.patch_size with it
      'init_from': ''})                  # converted model dir / workdir / weights file; '' = random
  c.discriminator = ml_collections.ConfigDict({'name': 'none'})  # one L1 stage

  c.data.patch_size = 48                 # HR side: report 002's LR 24 -> HR 48 at x2
  c.data.val_patch_size = 192            # a multiple of 2, 3 and 4
  c.data.degradation = 'bicubic(2)'      # MATLAB-style antialiased bicubic, factor = model.scale
  c.data.augment = True                  # random flips and 90-degree rotations (EDSR)

  c.loss.pretrain = ml_collections.ConfigDict({'pixel': 1.0})
  c.loss.gan = ml_collections.ConfigDict({'pixel': 1.0})  # no GAN stage here
  c.loss.pixel_criterion = 'l1'          # 'l1' (EDSR) | 'l2' (report 002's pixel term)

  t = c.train
  t.batch_size = 16
  t.num_steps = t.pretrain_steps = 300_000
  t.pretrain_lr = 1e-4
  t.b1, t.b2 = 0.9, 0.999
  t.pretrain_milestones = tuple(range(200_000, 1_000_001, 200_000))  # halved every 2e5 updates
  t.lr_decay = 0.5
  t.ema_decay = 0.0                      # EDSR keeps no EMA of the weights
  t.steps_per_epoch = 1000               # EDSR-PyTorch's epoch (--test_every 1000)
  t.eval_every_steps = 1000
  t.checkpoint_every_steps = 10_000
  t.early_stopping_patience = 0          # trains its full schedule
  return c.lock()
