"""Real-ESRGAN x4plus: Real-ESRNet's RRDBNet fine-tuned against a U-Net discriminator with spectral norm.

xinntao/Real-ESRGAN options/train_realesrgan_x4plus.yml: the generator and data of realesrnet_x4plus
(start it from a Real-ESRNet run: `--set model.init_from=runs/realesrnet_x4plus`), one GAN stage of
400k iterations: L1 1.0 and perceptual 1.0 (VGG19 conv1_2 0.1, conv2_2 0.1, conv3_4, conv4_4, conv5_4 1,
before activation, L1) against the USM-sharpened target, vanilla GAN 0.1 with D shown the unsharpened
target (gan_gt_usm False); D = UNetDiscriminatorSN (64 features, skip connections, per-pixel logits);
Adam 1e-4 (0.9, 0.99) for G and D, MultiStep [400k] x0.5; EMA 0.999.
"""

import ml_collections

from enhance_jax.training.config import load_experiment

# Not one of the reports: listed beside report 004's ESRGAN, which it extends (`--list` and
# describe_experiments show a three-digit report for every experiment).
REPORT = '004'


def get_config():
  c = load_experiment('realesrnet_x4plus')
  c.unlock()
  c.name = 'realesrgan_x4plus'
  # Where G starts from: Real-ESRGAN starts from RealESRNet_x4plus (its EMA weights). A converted
  # model directory, a training workdir or a weights file; '' = random initialisation.
  c.model.init_from = ''
  c.discriminator = ml_collections.ConfigDict({
      'name': 'unet_sn',                 # network_d: UNetDiscriminatorSN
      'num_features': 64,
      'skip_connection': True})

  c.loss.gan = ml_collections.ConfigDict({'pixel': 1.0, 'content': 1.0, 'adversarial': 0.1})
  c.loss.content_layers = ml_collections.ConfigDict({  # perceptual_opt.layer_weights; wins over
      'conv1_2': 0.1, 'conv2_2': 0.1,                  # loss.content_layer
      'conv3_4': 1.0, 'conv4_4': 1.0, 'conv5_4': 1.0})
  c.loss.content_before_activation = True
  c.loss.content_criterion = 'l1'
  c.loss.gan_type = 'vanilla'            # BCE on every pixel's logit
  # c.loss.vgg_weights: a torchvision vgg19 state_dict; without it the perceptual loss is random.

  t = c.train
  t.best_metric = 'auto'                 # LPIPS when loss.lpips_weights is given, else PSNR (said)
  t.pretrain_steps = 0                   # the L1 stage is realesrnet_x4plus
  t.num_steps = 400_000
  t.g_lr = t.d_lr = 1e-4
  t.gan_milestones = (400_000,)          # MultiStepLR [400000], gamma 0.5: no decay within the run
  return c.lock()
