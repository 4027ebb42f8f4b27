"""RealPLKSR x4 GAN (traiNNer-redux's RealPLKSR OTF recipes): a fidelity stage, then a GAN stage
against a U-Net discriminator with spectral norm, on Real-ESRGAN's second-order degradations.

Sources: the-database/traiNNer-redux options/_templates/train/RealPLKSR/RealPLKSR_OTF_fidelity.yml
(stage 1) and RealPLKSR_OTF_gan.yml (stage 2; formerly options/train/RealPLKSR/RealPLKSR_OTF.yml).
Network as realplksr_x4 (64 features, 28 blocks, 17x17 kernels, pixel shuffle, layer_norm true).
Data: LR patches 96 (HR 384), batch 16, flips and rotations, degraded on the device by the
`realesrgan(4)` chain. Stage 1: Charbonnier 1.0, AdamW 2e-4 (0.9, 0.99), MultiStep [1e5, 2e5, 3e5,
4e5, 4.25e5] x0.5, 450k iterations. Stage 2: AdamW 1e-4 (0.9, 0.99) for G and D, MultiStep [1e5] x0.5,
250k iterations; losses as experiments/realesrgan_x4plus (pixel L1 1.0, VGG19 perceptual 1.0 on
conv1_2 0.1, conv2_2 0.1, conv3_4, conv4_4, conv5_4 1, vanilla GAN 0.1); D = UNetDiscriminatorSN
(64 features, skip connections). EMA 0.999 throughout.

Not reproduced: the templates' GAN-stage losses (MS-SSIM 0.5, perceptual 0.01 with Charbonnier, HSLuv
1.0: no such terms here; the Real-ESRGAN mix stands in), their default `dunet` discriminator, their
milder OTF chain (no blur or noise, JPEG 75-95, four resize modes; data.realesrgan holds Real-ESRGAN's
published ranges instead), the training-pair queue (queue_size 120), the EMA warm-up and AMP fp16.
"""

import ml_collections

from enhance_jax.training.config import load_experiment

REPORT = 'new'


def get_config():
  c = load_experiment('realplksr_x4')
  c.unlock()
  c.name = 'realplksr_gan_x4'
  c.discriminator = ml_collections.ConfigDict({
      'name': 'unet_sn',                 # network_d: UNetDiscriminatorSN
      'num_features': 64,
      'skip_connection': True})

  c.data.degradation = 'realesrgan(4)'   # the second-order chain, x4 overall
  c.data.degrade_on_device = True        # the pipeline ships HR patches; the step degrades them

  c.loss.pretrain = ml_collections.ConfigDict({'pixel': 1.0})  # stage 1: charbonnierloss 1.0
  c.loss.pixel_criterion = 'charbonnier'
  c.loss.gan = ml_collections.ConfigDict({'pixel': 1.0, 'content': 1.0, 'adversarial': 0.1})
  c.loss.content_layers = ml_collections.ConfigDict({
      'conv1_2': 0.1, 'conv2_2': 0.1, 'conv3_4': 1.0, 'conv4_4': 1.0, 'conv5_4': 1.0})
  c.loss.content_before_activation = True
  c.loss.content_criterion = 'l1'
  c.loss.gan_type = 'vanilla'
  # c.loss.vgg_weights: a torchvision vgg19 state_dict; without it the perceptual loss is random.

  t = c.train
  t.best_metric = 'auto'                 # LPIPS when loss.lpips_weights is given, else PSNR (said)
  t.pretrain_steps = 450_000             # RealPLKSR_OTF_fidelity: total_iter 450000
  t.num_steps = 450_000 + 250_000        # RealPLKSR_OTF_gan: total_iter 250000
  t.g_lr = t.d_lr = 1e-4
  t.gan_milestones = (100_000,)
  return c.lock()
