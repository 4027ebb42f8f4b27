"""DAT x4 (Chen et al. 2023, "Dual Aggregation Transformer for Image Super-Resolution").

Recipe: zhengchen1999/DAT options/Train/train_DAT_x4.yml (BasicSR), trained from scratch as its x2
file (train_DAT_x2.yml) and the x4 file's commented-out lines give it: DAT, embed 180, 6 residual
groups x 6 blocks, 6 heads, split size (8, 32), expansion factor 4, '1conv', 'pixelshuffle', img_range
1; L1 (weight 1); Adam 2e-4 (0.9, 0.99), no weight decay; batch 32 (8 per GPU x 4 GPUs); 500k
iterations, MultiStep [250k, 400k, 450k, 475k] x0.5, no warm-up; HR patches of 256 (LR 64) with
random flips and rotations; no EMA (the file sets no ema_decay); stochastic depth 0.1 (the
network's default, not set in the file). Validation and checkpoints every 5k (val_freq,
save_checkpoint_freq).

The released x4 (and x3) models are fine-tuned from the x2 one: the x4 file's active lines start from
DAT_x2.pth (pretrain_network_g, strict_load_g False: the upsampler differs) with lr 1e-4, milestones
[125k, 200k, 225k, 237.5k] and 250k iterations. To follow that, train x2 first (`--set
model.scale=2 --set data.degradation='bicubic(2)' --set data.patch_size=128`), then start x4 from it
with `--set model.init_from=<x2 run> --set train.pretrain_lr=1e-4 --set
train.pretrain_milestones='(125000,200000,225000,237500)' --set train.num_steps=250000 --set
train.pretrain_steps=250000`.

Other published sizes (models.dat.VARIANTS): DAT-S `--set model.split_size='(8,16)' --set
model.expansion_factor=2.0`; DAT-2 `--set model.expansion_factor=2.0`; DAT-light `model.embed_dim=60,
model.depths='(18,)', model.num_heads='(6,)', model.expansion_factor=2.0, model.resi_connection=3conv,
model.upsampler=pixelshuffledirect`.

Data: DF2K upstream (DIV2K + Flickr2K, bicubic LR); here DIV2K as `--set data.source=tfds:div2k` or
folders (`folder:DIV2K_train_HR`); the embedded photos when none is named.
"""

import ml_collections

from enhance_jax.training.config import base_config

REPORT = 'new'


def get_config():
  c = base_config()
  c.name = 'dat_x4'
  c.model = ml_collections.ConfigDict({
      'name': 'dat',
      'embed_dim': 180,
      'depths': (6, 6, 6, 6, 6, 6),      # blocks per residual group (spatial and channel alternate)
      'num_heads': (6, 6, 6, 6, 6, 6),
      'split_size': (8, 32),             # spatial window (h, w); half the channels use (w, h)
      'expansion_factor': 4.0,           # SGFN hidden width / embed_dim
      'qkv_bias': True,
      'resi_connection': '1conv',        # '1conv' | '3conv'
      'upsampler': 'pixelshuffle',       # 'pixelshuffle' | 'pixelshuffledirect'
      'img_size': 64,                    # the training LR patch; no effect on outputs
      'img_range': 1.0,
      'drop_path_rate': 0.1,             # stochastic depth in training
      'remat': False,                    # rematerialise each block: less memory, more time
      'scale': 4,
      'init_from': ''})                  # converted model dir / workdir / weights file; '' = random
  c.discriminator = ml_collections.ConfigDict({'name': 'none'})  # one L1 stage

  c.data.patch_size = 256                # gt_size (LR 64)
  c.data.val_patch_size = 256
  c.data.degradation = 'bicubic(4)'      # MATLAB-style bicubic, the factor = model.scale
  c.data.augment = True                  # use_hflip, use_rot

  c.loss.pretrain = ml_collections.ConfigDict({'pixel': 1.0})  # pixel_opt: L1Loss 1.0
  c.loss.gan = ml_collections.ConfigDict({'pixel': 1.0})       # no GAN stage here
  c.loss.pixel_criterion = 'l1'

  t = c.train
  t.batch_size = 32                      # 8 per GPU x 4 GPUs (global here)
  t.num_steps = t.pretrain_steps = 500_000
  t.pretrain_lr = 2e-4
  t.b1, t.b2 = 0.9, 0.99
  t.pretrain_milestones = (250_000, 400_000, 450_000, 475_000)
  t.lr_decay = 0.5
  t.ema_decay = 0.0                      # no ema_decay in the option file
  t.eval_every_steps = 5000              # val_freq
  t.checkpoint_every_steps = 5000        # save_checkpoint_freq
  t.early_stopping_patience = 0          # trains its full schedule
  return c.lock()
