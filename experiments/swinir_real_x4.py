"""Real-world SwinIR x4 (SwinIR-M, 'nearest+conv'; Liang et al. 2021): a PSNR stage on synthetic
real-world degradations, then a GAN stage against a U-Net discriminator, in one run.

Recipe: KAIR options/swinir/train_swinir_sr_realworld_x4_psnr.json then _gan.json. Network: embed 180,
6 RSTB x 6 blocks, 6 heads, window 8, mlp ratio 2, 'nearest+conv' (fewer artifacts), '1conv' (the
larger 003_realSR_..._SwinIR-L release: `--set model.embed_dim=240 --set model.depths='(6,6,6,6,6,6,6,6,6)'
--set model.num_heads='(8,8,8,8,8,8,8,8,8)' --set model.resi_connection=3conv`). Data: HR patches of
256 (LR 64) with KAIR's 8 flips/rotations, batch 32, the target sharpened (use_sharp). KAIR degrades
with BSRGAN's shuffled chain; here Real-ESRGAN's second-order chain (`realesrgan(4)`, degraded on the
device, as realesrnet_x4plus) stands in for it.
  PSNR stage (train.pretrain_steps = 1M): L1, Adam 2e-4, MultiStep [500k, 800k, 900k, 950k] x0.5.
  GAN stage (600k): L1 1 + perceptual 1 (VGG19 conv1_2 0.1, conv2_2 0.1, conv3_4, conv4_4, conv5_4 1,
  before activation, L1: F_feature_layer [2,7,16,25,34]) + vanilla GAN 0.1; D = UNetDiscriminatorSN
  (64 features, spectral norm); Adam 1e-4 for G and D, MultiStep [400k, 500k, 550k, 575k] x0.5.
Both stages keep an EMA of G at 0.999 (E_decay). Adam's betas are KAIR's defaults, (0.9, 0.999).
"""

import ml_collections

from enhance_jax.training.config import load_experiment

REPORT = 'new'


def get_config():
  c = load_experiment('realesrgan_x4plus')  # its data (realesrgan(4) on device, USM target), D, losses
  c.unlock()
  c.name = 'swinir_real_x4'
  c.model = ml_collections.ConfigDict({
      'name': 'swinir',
      'embed_dim': 180,
      'depths': (6, 6, 6, 6, 6, 6),
      'num_heads': (6, 6, 6, 6, 6, 6),
      'window_size': 8,
      'mlp_ratio': 2.0,
      'upsampler': 'nearest+conv',       # real-world SR: nearest x2 + conv stages
      'resi_connection': '1conv',        # '3conv' for SwinIR-L
      'img_range': 1.0,
      'img_size': 64,
      'drop_path_rate': 0.1,
      'remat': False,
      'scale': 4,
      'init_from': ''})
  c.discriminator = ml_collections.ConfigDict({
      'name': 'unet_sn',                 # netD discriminator_unet, spectral norm
      'num_features': 64,
      'skip_connection': True})

  c.data.patch_size = 256                # H_size (lq_patchsize 64)
  c.data.val_patch_size = 256
  c.data.augment = True                  # KAIR blindsr: one of 8 flips/rotations
  c.data.affine.hflip = False

  c.loss.pretrain = ml_collections.ConfigDict({'pixel': 1.0})
  c.loss.gan = ml_collections.ConfigDict({'pixel': 1.0, 'content': 1.0, 'adversarial': 0.1})
  c.loss.gan_type = 'vanilla'            # gan_type 'gan'

  t = c.train
  t.best_metric = 'auto'                 # LPIPS when loss.lpips_weights is given, else PSNR (said)
  t.batch_size = 32
  t.pretrain_steps = 1_000_000
  t.num_steps = 1_600_000                # + 600k GAN steps
  t.pretrain_lr = 2e-4
  t.g_lr = t.d_lr = 1e-4
  t.b1, t.b2 = 0.9, 0.999
  t.pretrain_milestones = (500_000, 800_000, 900_000, 950_000)
  t.gan_milestones = (400_000, 500_000, 550_000, 575_000)
  t.lr_decay = 0.5
  t.ema_decay = 0.999
  t.eval_every_steps = 5000
  t.checkpoint_every_steps = 5000
  t.early_stopping_patience = 0
  return c.lock()
