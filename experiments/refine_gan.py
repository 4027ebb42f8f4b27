"""Report 004's vanilla GAN, 160 -> 640: a pixel-shuffle generator (convs, PReLU, tanh) against a
BatchNorm/LeakyReLU discriminator with global pooling and a sigmoid; BCE for both; Adam 1e-4.

The report gives no sizes, epochs or batch (chosen in enhance_jax/models/refine.py and here: batch 16,
5 epochs like its autoencoder). It names BCE alone for G, which ties nothing to the input; here G also
minimises MSE to the HR image (weight 1.0, adversarial 1e-3 as SRGAN): set loss.gan.pixel=0 and
loss.gan.adversarial=1 for the report's pure adversarial objective.
"""

import ml_collections

from enhance_jax.training.config import load_experiment

REPORT = '004'


def get_config():
  c = load_experiment('refine_ae')
  c.unlock()
  c.name = 'refine_gan'
  c.model = ml_collections.ConfigDict({
      'name': 'refine_gan', 'num_features': 64, 'num_layers': 4, 'scale': 4})
  c.discriminator = ml_collections.ConfigDict({'name': 'refine', 'num_features': 64})
  c.loss.gan = ml_collections.ConfigDict({'pixel': 1.0, 'adversarial': 1e-3})
  c.loss.gan_type = 'vanilla'
  c.train.optimizer = 'adam'
  c.train.weight_decay = 0.0
  c.train.pretrain_steps = 0
  c.train.g_lr = 1e-4
  c.train.d_lr = 1e-4
  c.train.gan_milestones = ()
  return c.lock()
