"""Report 001's ResNet-SR, Cats&Dogs 90 -> 360: an upsampling layer, two free convs, and two ResBlocks
of "convolution blocks" (conv, BatchNorm, ReLU, with dropout between the convs); data as
catsdogs_deconv with the input downscaled x4 (enhance_jax/models/autoencoders.py ResNetSR).

Chosen where the report is silent (from the authors' scripts): the SSIM loss (their ResNet runs used
kornia's SSIM loss; here SSIM's 11-pixel Gaussian window), dropout 0.1, width 64, Adam lr 1e-4,
batch 5, 5 epochs.
"""

import ml_collections

from enhance_jax.training.config import load_experiment

REPORT = '001'


def get_config():
  c = load_experiment('catsdogs_deconv')
  c.unlock()
  c.name = 'catsdogs_resnet'
  c.model = ml_collections.ConfigDict({'name': 'resnet_sr', 'num_features': 64, 'num_blocks': 2,
                                       'dropout_rate': 0.1, 'scale': 4})
  c.data.degradation = 'bicubic(4)'      # 360 -> 90
  c.loss.pretrain = ml_collections.ConfigDict({'ssim': 1.0})
  c.loss.gan = ml_collections.ConfigDict({'ssim': 1.0})
  return c.lock()
