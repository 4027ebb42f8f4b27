"""Report 004's refinement autoencoder, 160 -> 640: encoder of 5 convs and 2 max-pools, decoder of
5 convs and 2 bicubic x4 upsamplings; MSE; AdamW lr 1e-4; 5 epochs.

Data as report 004: Flickr2K with HR resized to 640 and LR 160 by bicubic x4 + Gaussian blur radius
1.5 (`--set data.source=folder:/data/Flickr2K`); the embedded photos otherwise. No discriminator: the
whole run is the supervised stage. Open in the report, chosen here: AdamW weight decay 0.01
(PyTorch's default), batch 16, widths in enhance_jax/models/refine.py.
"""

import ml_collections

from enhance_jax.training.config import base_config

REPORT = '004'


def get_config():
  c = base_config()
  c.unlock()
  c.name = 'refine_ae'
  c.model = ml_collections.ConfigDict({'name': 'refine_ae', 'num_features': 64, 'scale': 4})
  c.discriminator = ml_collections.ConfigDict({'name': 'none'})

  c.data.hr_resize = 640
  c.data.patch_size = 640
  c.data.val_patch_size = 640
  c.data.degradation = 'bicubic_blur(4, 1.5)'
  c.data.augment = False

  c.loss.pretrain = ml_collections.ConfigDict({'pixel': 1.0})
  c.loss.gan = ml_collections.ConfigDict({'pixel': 1.0})
  c.loss.pixel_criterion = 'l2'

  c.train.optimizer = 'adamw'
  c.train.weight_decay = 0.01
  c.train.batch_size = 16
  c.train.pretrain_lr = 1e-4
  c.train.b2 = 0.999
  c.train.pretrain_milestones = ()
  c.train.num_steps = 5 * 2560 // 16     # 5 epochs of Flickr2K's 2,560 images
  c.train.steps_per_epoch = 0
  c.train.eval_every_steps = 2560 // 16  # once an epoch
  c.train.checkpoint_every_steps = 2560 // 16
  c.train.ema_decay = 0.0
  c.train.early_stopping_patience = 4
  return c.lock()
