"""SRGAN with 6 residual blocks on report 004's data: Flickr2K, HR 640 / LR 160.

Report 004 (phase 2): SRResNet of 6 blocks (9x9 head + PReLU, conv-BN-PReLU blocks, skip, conv + BN,
pixel-shuffle upsampling, 9x9 tail); discriminator [conv + BN + LeakyReLU 0.2] x 8 (64..512,
alternate stride 2) -> global average pool -> dense -> logit. LQ = bicubic x4 down + Gaussian blur
radius 1.5; Keras-style augmentation (rotation 90, shift 0.2, shear 0.2, zoom 0.2, horizontal flip,
nearest fill) on the fly; 150 epochs with early stopping after 4 epochs without a better validation
score; best and last checkpoints. The report leaves the loss weights and optimiser open: SRGAN's
(VGG19 content + 1e-3 adversarial, Adam 1e-4).

Flickr2K: `--set data.source=folder:/data/Flickr2K` (or records: from data/prepare.py without crops).
"""

from enhance_jax.training.config import load_experiment

REPORT = '004'


def get_config():
  c = load_experiment('srgan')
  c.unlock()
  c.name = 'srgan6'
  c.model.num_blocks = 6
  c.discriminator.pool = 'mean'          # report 004: AdaptiveAvgPool2d(1) before the dense layers

  c.data.hr_resize = 640                 # HR resized to 640 x 640 (centre square), LR 160
  c.data.patch_size = 640
  c.data.val_patch_size = 640
  c.data.degradation = 'bicubic_blur(4, 1.5)'
  c.data.affine.rotation = 90.0
  c.data.affine.shift = 0.2
  c.data.affine.shear = 0.2
  c.data.affine.zoom = 0.2
  c.data.affine.hflip = True

  c.train.batch_size = 16
  c.train.pretrain_steps = 0             # report 004 trains the GAN directly
  c.train.steps_per_epoch = 0            # one pass over the training images
  c.train.eval_every_steps = 4000 // 16  # report 004 validates once an epoch
  c.train.checkpoint_every_steps = 4000 // 16
  c.train.num_steps = 150 * 4000 // 16   # 150 epochs of ~4000 (augmented) images
  c.train.early_stopping_patience = 4
  return c.lock()
