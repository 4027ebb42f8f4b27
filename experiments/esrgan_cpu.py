"""ESRGAN sized for a 2-core CPU: the README quickstart; minutes on the embedded photos.

Without a VGG19 weights file (none can be downloaded here) the content loss runs on random features
and anchors nothing, so this demo weights L1 at 1.0 in the GAN stage (ESRGAN's 0.01 assumes a real
VGG19): with loss.vgg_weights set, put it back with --set loss.gan.pixel=0.01.
"""

from enhance_jax.training.config import load_experiment

REPORT = '004'


def get_config():
  c = load_experiment('esrgan')
  c.unlock()
  c.name = 'esrgan_cpu'
  c.model.num_blocks = 2
  c.model.num_features = 32
  c.model.growth_channels = 16
  c.discriminator.num_features = 32
  c.discriminator.dense_features = 256
  c.data.patch_size = 64
  c.data.val_patch_size = 192
  c.train.batch_size = 8
  c.train.pretrain_steps = 600
  c.train.num_steps = 750
  c.loss.gan.pixel = 1.0
  c.train.pretrain_lr = 5e-4
  c.train.pretrain_milestones = (400,)
  c.train.gan_milestones = (150,)
  c.train.ema_decay = 0.0
  c.train.eval_every_steps = 100
  c.train.checkpoint_every_steps = 300
  c.train.log_every_steps = 25
  c.train.early_stopping_patience = 0
  return c
