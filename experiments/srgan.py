"""SRGAN x4 on faces (report 003; Ledig et al. 2017): CelebA 16 -> 64.

Generator SRResNet: 9x9 conv 64 + PReLU, 16 residual blocks (conv-BN-PReLU-conv-BN), conv-BN + long
skip, two pixel-shuffle x2 upsample blocks (256 filters, PReLU), 9x9 conv to 3 with tanh; ImageNet
mean/std normalisation inside the model. Discriminator: 8 convs 64..512 (strides 1,2,1,2,...),
LeakyReLU 0.2, BatchNorm, flatten, dense 1024, one logit. Loss: VGG19 content (conv5_4 after its
ReLU, MSE) + 1e-3 BCE adversarial.

Report 003 trains 20 epochs of 1021 batches and leaves the optimiser open: Adam 1e-4 (0.9, 0.999)
as in the SRGAN paper, batch 16. As BasicSR and the paper do, G starts from an MSE-trained SRResNet
(`train.pretrain_steps`, shortened from the paper's 10^6). With no dataset named it trains on 64x64
crops of the embedded photos; for CelebA: `--set data.source=tfds:celeb_a --set data.hr_resize=64`
(each face centre-cropped to a square and resized to 64; LR 16 by bicubic).
"""

import ml_collections

from enhance_jax.training.config import base_config

REPORT = '003'


def get_config():
  c = base_config()
  c.unlock()
  c.name = 'srgan'
  c.model = ml_collections.ConfigDict({
      'name': 'srresnet', 'num_blocks': 16, 'num_features': 64, 'scale': 4,
      'output': 'tanh',                  # tanh mapped to [0, 1]; 'none' = linear
      'input_norm': True})               # ImageNet mean/std on the LR input
  c.discriminator = ml_collections.ConfigDict({
      'name': 'vgg_style', 'num_features': 64, 'dense_features': 1024, 'norm': 'batch',
      'pool': 'flatten'})                # SRGAN's D flattens its 4x4x512 map (fixed 64x64 input)

  c.data.patch_size = 64                 # HR 64, LR 16
  c.data.val_patch_size = 128
  c.data.degradation = 'bicubic(4)'      # report 003: LR by resizing
  c.data.augment = False                 # report 003 names no augmentation
  c.data.hr_resize = 0                   # 64 for CelebA (whole faces); 0 = crops of larger photos

  c.loss.pretrain = ml_collections.ConfigDict({'pixel': 1.0})     # SRResNet (MSE) initialisation
  # SRGAN has no pixel term in its GAN stage; without real VGG19 weights (loss.vgg_weights) the
  # content loss anchors nothing, so CPU demos and tests set loss.gan.pixel=1.0.
  c.loss.gan = ml_collections.ConfigDict({'content': 1.0, 'adversarial': 1e-3, 'pixel': 0.0})
  c.loss.pixel_criterion = 'l2'
  c.loss.content_layer = 'conv5_4'       # phi_5,4
  c.loss.content_before_activation = False
  c.loss.content_criterion = 'l2'
  c.loss.gan_type = 'vanilla'            # BCE: -log D(G(z)) for G

  c.train.batch_size = 16
  c.train.pretrain_steps = 10_000
  c.train.num_steps = 10_000 + 20 * 1021  # report 003: 20 epochs of 1021 batches in the GAN stage
  c.train.steps_per_epoch = 1021
  c.train.eval_every_steps = 1021        # once an epoch
  c.train.checkpoint_every_steps = 1021
  c.train.pretrain_lr = 1e-4
  c.train.g_lr = 1e-4
  c.train.d_lr = 1e-4
  c.train.b2 = 0.999
  c.train.pretrain_milestones = ()
  c.train.gan_milestones = ()
  c.train.ema_decay = 0.0
  c.train.early_stopping_patience = 0    # report 003 trains a fixed 20 epochs
  return c.lock()
