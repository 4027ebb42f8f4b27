"""Real-ESRNet x4plus: RRDBNet trained with L1 on Real-ESRGAN's second-order synthetic degradations.

The PSNR-oriented first half of Real-ESRGAN (Wang et al. 2021; xinntao/Real-ESRGAN
options/train_realesrnet_x4plus.yml), the start of realesrgan_x4plus. One supervised stage: RRDBNet
23 blocks, 64 features, growth 32, x4; L1 against the USM-sharpened target (gt_usm); Adam 2e-4
(0.9, 0.99), 1M iterations, MultiStep [1M] x0.5 (no decay in practice); EMA 0.999. HR patches of 256
(gt_size) with horizontal flips only, degraded on the device by the `realesrgan(4)` chain (blur, resize,
noise, JPEG, twice, then a sinc filter) with data.realesrgan's ranges. Real-ESRGAN trained on DF2K+OST
(`--set data.source=folder:PATH`); its training-pair pool (queue_size 180) is not reproduced: each
batch is degraded as it comes.
"""

import ml_collections

from enhance_jax.training.config import base_config, load_experiment

# Not one of the reports: listed beside report 004's ESRGAN, which it extends (`--list` and
# describe_experiments show a three-digit report for every experiment).
REPORT = '004'


def get_config():
  c = base_config()
  c.name = 'realesrnet_x4plus'
  # network_g as ESRGAN's (23 RRDB, 64 features, growth 32, x4). Where G starts from: model.init_from,
  # a converted model directory, a training workdir or a weights file (Real-ESRNet starts from
  # ESRGAN's ESRGAN_SRx4_DF2KOST_official weights); '' = random initialisation.
  c.model = load_experiment('esrgan').model
  c.discriminator = ml_collections.ConfigDict({'name': 'none'})  # L1 only: one supervised stage

  c.data.patch_size = 256                # gt_size
  c.data.val_patch_size = 256
  c.data.degradation = 'realesrgan(4)'   # the second-order chain, x4 overall
  c.data.degrade_on_device = True        # the pipeline ships HR patches; the step degrades them
  # the chain's probabilities and ranges: data.realesrgan, Real-ESRGAN's published ones by default
  # gt_usm: L1 against the HR sharpened by Real-ESRGAN's USMSharp (weight 0.5, radius 50, threshold
  # 10); the on-device degradation starts from the sharpened HR too, as in Real-ESRGAN.
  c.data.target_sharpen = 'usm(0.5, radius=50, threshold=10)'
  c.data.augment = False                 # use_hflip True, use_rot False: flips only ...
  c.data.affine.hflip = True             # ... as a horizontal flip with probability 1/2

  c.loss.pretrain = ml_collections.ConfigDict({'pixel': 1.0})  # pixel_opt: L1Loss 1.0
  c.loss.gan = ml_collections.ConfigDict({'pixel': 1.0})       # no GAN stage here
  c.loss.pixel_criterion = 'l1'

  t = c.train
  # Real-ESRGAN: 12 per GPU on 4 GPUs. train.batch_size is global (split over the mesh's devices),
  # so the recipe's total of 48 keeps its learning rate and schedule meaning the same.
  t.batch_size = 48
  t.num_steps = t.pretrain_steps = 1_000_000
  t.pretrain_lr = 2e-4
  t.b1, t.b2 = 0.9, 0.99
  t.pretrain_milestones = (1_000_000,)   # MultiStepLR [1000000], gamma 0.5: no decay within the run
  t.lr_decay = 0.5
  t.ema_decay = 0.999
  t.eval_every_steps = 5000              # Real-ESRGAN validates nothing by default; we do at 5e3
  t.checkpoint_every_steps = 5000        # save_checkpoint_freq
  t.early_stopping_patience = 0          # trains its full schedule
  return c.lock()
