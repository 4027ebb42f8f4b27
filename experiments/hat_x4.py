"""HAT x4 (Chen et al. 2023, "Activating More Pixels in Image Super-Resolution Transformer").

Network (XPixelGroup/HAT options, network_g): embed 180, 6 RHAG x 6 HAB, 6 heads, window 16,
compress_ratio 3, squeeze_factor 30, conv_scale 0.01, overlap_ratio 0.5, mlp ratio 2, 'pixelshuffle',
'1conv'; HAT-S is `--set model.embed_dim=144 --set model.compress_ratio=24 --set model.squeeze_factor=24`,
HAT-L 12 RHAGs (`model.depths`, `model.num_heads` of 12).
Recipe: options/train/train_HAT_SRx2_from_scratch.yml's schedule at x4: L1, Adam 2e-4 (0.9, 0.99),
batch 32 (4 x 8 GPUs), 500k iterations, MultiStep [250k, 400k, 450k, 475k] x0.5, EMA 0.999
(ema_decay), HR patches of 256 (gt_size; LR 64) with flips and rotations, DF2K; stochastic depth 0.1
(the network's default). The released x4 models are fine-tuned: from x2
(train_HAT_SRx4_finetune_from_SRx2: lr 1e-4, milestones [125k, 200k, 225k, 240k], 250k) or from an
ImageNet pre-training (train_HAT_SRx4_ImageNet_from_scratch, 800k, then
train_HAT_SRx4_finetune_from_ImageNet_pretrain: lr 1e-5, 250k); start them with model.init_from.
"""

import ml_collections

from enhance_jax.training.config import base_config

REPORT = 'new'


def get_config():
  c = base_config()
  c.name = 'hat_x4'
  c.model = ml_collections.ConfigDict({
      'name': 'hat',
      'embed_dim': 180,
      'depths': (6, 6, 6, 6, 6, 6),      # HABs per RHAG
      'num_heads': (6, 6, 6, 6, 6, 6),
      'window_size': 16,                 # inputs are padded to window multiples
      'compress_ratio': 3,               # CAB's conv width: embed_dim // compress_ratio
      'squeeze_factor': 30,              # channel attention's squeeze: embed_dim // squeeze_factor
      'conv_scale': 0.01,                # weight of the CAB branch in each HAB
      'overlap_ratio': 0.5,              # OCAB's key/value windows: (1 + ratio) x window
      'mlp_ratio': 2.0,
      'resi_connection': '1conv',        # '1conv' | 'identity'
      'num_feat': 64,                    # features of the pixel-shuffle head
      'img_range': 1.0,
      'drop_path_rate': 0.1,             # stochastic depth in training
      'remat': False,                    # rematerialise each HAB/OCAB: less memory, more time
      'scale': 4,
      'init_from': ''})                  # converted model dir / workdir / weights file; '' = random
  c.discriminator = ml_collections.ConfigDict({'name': 'none'})  # one L1 stage

  c.data.patch_size = 256                # gt_size; LR 64
  c.data.val_patch_size = 256
  c.data.degradation = 'bicubic(4)'
  c.data.augment = True                  # use_hflip, use_rot

  c.loss.pretrain = ml_collections.ConfigDict({'pixel': 1.0})  # pixel_opt: L1Loss 1.0
  c.loss.gan = ml_collections.ConfigDict({'pixel': 1.0})       # no GAN stage here
  c.loss.pixel_criterion = 'l1'

  t = c.train
  t.batch_size = 32                      # 4 per GPU x 8 GPUs (global here)
  t.num_steps = t.pretrain_steps = 500_000
  t.pretrain_lr = 2e-4
  t.b1, t.b2 = 0.9, 0.99
  t.pretrain_milestones = (250_000, 400_000, 450_000, 475_000)
  t.lr_decay = 0.5
  t.ema_decay = 0.999
  t.eval_every_steps = 5000              # val_freq
  t.checkpoint_every_steps = 5000        # save_checkpoint_freq
  t.early_stopping_patience = 0          # trains its full schedule
  return c.lock()
