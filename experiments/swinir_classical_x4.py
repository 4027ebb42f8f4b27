"""SwinIR classical x4 (Liang et al. 2021, "SwinIR: Image Restoration Using Swin Transformer").

Recipe: JingyunLiang/SwinIR, trained with KAIR options/swinir/train_swinir_sr_classical.json (its x2
file; the DF2K s64w8 releases use LR patches of 64): SwinIR-M, embed 180, 6 RSTB x 6 blocks, 6 heads,
window 8, mlp ratio 2, 'pixelshuffle', '1conv'; L1; Adam 2e-4, batch 32 (4 x 8 GPUs), 500k iterations,
MultiStep [250k, 400k, 450k, 475k] x0.5; EMA 0.999 (E_decay); HR patches of 256 (LR 64) with random
flips and rotations; stochastic depth 0.1 (the network's default, not set in the file).

Adam's betas: KAIR's option file names none, and KAIR's default G_optimizer_betas is (0.9, 0.999),
which is what SwinIR was trained with; BasicSR's re-implementation (options/train/SwinIR) uses
(0.9, 0.99): `--set train.b2=0.99`.

The paper's x3/x4/x8 models are fine-tuned from the x2 one with the learning rate and milestones
halved (KAIR's note on pretrained_netG); this file trains x4 from scratch. To follow the paper, train
x2 first (`--set model.scale=2 --set data.degradation='bicubic(2)' --set data.patch_size=128`), then
start x4 from its body: `--set model.init_from=<x2 run>` with `train.pretrain_lr=1e-4` and
`train.pretrain_milestones=(125000,200000,225000,237500)`, `train.num_steps=250000`.

Data: DIV2K (800 images) as `--set data.source=tfds:div2k` or folders (`folder:DIV2K_train_HR`), the
DF2K releases on DIV2K + Flickr2K; the embedded photos when none is named.
"""

import ml_collections

from enhance_jax.training.config import base_config

REPORT = 'new'


def get_config():
  c = base_config()
  c.name = 'swinir_classical_x4'
  c.model = ml_collections.ConfigDict({
      'name': 'swinir',
      'embed_dim': 180,
      'depths': (6, 6, 6, 6, 6, 6),      # Swin Transformer blocks per RSTB
      'num_heads': (6, 6, 6, 6, 6, 6),
      'window_size': 8,                  # inputs are padded to window multiples
      'mlp_ratio': 2.0,
      'upsampler': 'pixelshuffle',       # 'pixelshuffle' | 'pixelshuffledirect' | 'nearest+conv' | ''
      'resi_connection': '1conv',        # '1conv' | '3conv'
      'img_range': 1.0,
      'img_size': 64,                    # the training LR patch (KAIR's img_size); no effect on outputs
      'drop_path_rate': 0.1,             # stochastic depth in training
      'remat': False,                    # rematerialise each transformer block: less memory, ~1.3x time
      'scale': 4,
      'init_from': ''})                  # converted model dir / workdir / weights file; '' = random
  c.discriminator = ml_collections.ConfigDict({'name': 'none'})  # one L1 stage

  c.data.patch_size = 256                # HR (H_size); LR 64
  c.data.val_patch_size = 256
  c.data.degradation = 'bicubic(4)'      # MATLAB-style bicubic, the factor = model.scale
  c.data.augment = True                  # random flips and 90-degree rotations (KAIR augment_img)

  c.loss.pretrain = ml_collections.ConfigDict({'pixel': 1.0})  # G_lossfn_type l1, weight 1
  c.loss.gan = ml_collections.ConfigDict({'pixel': 1.0})       # no GAN stage here
  c.loss.pixel_criterion = 'l1'

  t = c.train
  t.batch_size = 32                      # 4 per GPU x 8 GPUs (global here)
  t.num_steps = t.pretrain_steps = 500_000
  t.pretrain_lr = 2e-4
  t.b1, t.b2 = 0.9, 0.999                # KAIR's default G_optimizer_betas (see above)
  t.pretrain_milestones = (250_000, 400_000, 450_000, 475_000)
  t.lr_decay = 0.5
  t.ema_decay = 0.999                    # E_decay
  t.eval_every_steps = 5000              # checkpoint_test
  t.checkpoint_every_steps = 5000        # checkpoint_save
  t.early_stopping_patience = 0          # trains its full schedule
  return c.lock()
