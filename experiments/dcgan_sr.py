"""DCGAN-SR x4 on faces (report 003, section V): CelebA 16 -> 64.

Generator: conv 128 k4 + ReLU, 5 residual upsampling blocks (conv-BN-ReLU-conv-BN-ReLU, upsample,
BN-ReLU, transposed conv), convs 128 and 64, 3x3 conv with sigmoid. Discriminator: conv 64, four
stride-2 convs 64..512 with BN and LeakyReLU 0.2, two 512 convs with BN and ReLU, dense 1024, one
logit. Loss: 0.9 L1 + 0.1 BCE adversarial.

The report's author never trained it and leaves most sizes open; chosen here (see
enhance_jax/models/dcgan_sr.py): SAME padding everywhere (16 stays 16 after the k4 head), only the
last two residual blocks upsample x2 (x4 in all, not x32), Adam 2e-4 (0.5, 0.999) as DCGAN, batch 16,
no pre-training, 20 epochs of 1021 batches like the report's SRGAN.
"""

import ml_collections

from enhance_jax.training.config import load_experiment

REPORT = '003'


def get_config():
  c = load_experiment('srgan')
  c.unlock()
  c.name = 'dcgan_sr'
  c.model = ml_collections.ConfigDict({
      'name': 'dcgan_sr', 'num_features': 128, 'num_blocks': 5, 'scale': 4})
  c.discriminator = ml_collections.ConfigDict({
      'name': 'dcgan_sr', 'num_features': 64, 'dense_features': 1024})
  c.loss.pretrain = ml_collections.ConfigDict({'pixel': 1.0})
  c.loss.gan = ml_collections.ConfigDict({'pixel': 0.9, 'adversarial': 0.1})
  c.loss.pixel_criterion = 'l1'
  c.loss.gan_type = 'vanilla'
  c.train.pretrain_steps = 0
  c.train.num_steps = 20 * 1021
  c.train.g_lr = 2e-4
  c.train.d_lr = 2e-4
  c.train.b1 = 0.5
  c.train.b2 = 0.999
  return c.lock()
