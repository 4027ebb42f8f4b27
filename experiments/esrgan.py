"""ESRGAN x4 (report 004; Wang et al. 2018; BasicSR train_ESRNet/ESRGAN_x4 schedules).

Two stages in one run: `train.pretrain_steps` of L1 pixel training (the PSNR-oriented RRDBNet), then
GAN training with VGG19 (before activation) content 1.0 + relativistic-average adversarial 0.005
+ L1 0.01 until `train.num_steps`.
"""

import ml_collections

REPORT = '004'


def get_config():
  c = ml_collections.ConfigDict()
  c.name = 'esrgan'
  c.seed = 0

  c.model = ml_collections.ConfigDict()
  c.model.name = 'rrdbnet'               # generator (network_g)
  c.model.num_blocks = 23                # RRDB blocks
  c.model.num_features = 64
  c.model.growth_channels = 32
  c.model.scale = 4
  c.model.residual_scale = 0.2
  c.model.remat = False                  # rematerialise the RRDB trunk: about half the memory

  c.discriminator = ml_collections.ConfigDict()
  c.discriminator.name = 'vgg_style'     # network_d: 8 convs 64..512, alternate stride 2; 'none' = no GAN
  c.discriminator.num_features = 64
  c.discriminator.dense_features = 1024
  c.discriminator.norm = 'batch'         # 'batch' | 'none'

  c.data = ml_collections.ConfigDict()
  c.data.source = 'embedded'             # 'embedded' | 'folder:PATH' | 'records:PATH' | 'tfds:NAME'
  c.data.val_source = ''                 # '' = held-out split of `source`
  c.data.val_fraction = 0.1              # held-out fraction for folder sources
  c.data.val_max_images = 64             # images validated during training (evaluate scores all)
  c.data.data_dir = ''                   # tfds data_dir ('' = tfds default)
  c.data.patch_size = 128                # HR patch side (LR = patch_size / scale)
  c.data.val_patch_size = 256            # HR centre crop used for in-training validation
  # Ops 'name(args)|...' of enhance_jax.data.degradations.OPS, each with its own factor (not model.scale):
  c.data.degradation = 'bicubic_blur(4, 1.5)'  # report 004: bicubic x4 down + Gaussian blur radius 1.5
  c.data.train_on = 'degraded'           # model input in training: 'degraded' (= 'noisy') | 'clean'
  c.data.degrade_on_device = False      # True: the pipeline ships HR only, the step computes LR
  c.data.augment = True                  # random flips and rot90 (BasicSR use_hflip/use_rot)
  c.data.hr_resize = 0                   # >0: fit each image to this square side, then crop patches
  c.data.hr_resize_mode = 'resize'       # 'resize' (centre square, resized) | 'crop_or_resize'
  c.data.normalize = 'none'              # 'none' | 'minmax' (each HR stretched to span [0, 1])
  c.data.fraction = 1.0                  # share of the training images used
  c.data.affine = ml_collections.ConfigDict({  # Keras ImageDataGenerator-style (report 004); 0 = off
      'rotation': 0.0,                   # degrees: angle uniform in [-rotation, rotation]
      'shift': 0.0,                      # fraction of the side: shift uniform in [-shift, shift]
      'shear': 0.0,                      # degrees (Keras shear_range)
      'zoom': 0.0,                       # per-axis scale uniform in [1 - zoom, 1 + zoom]
      'hflip': False})                   # horizontal flip with probability 1/2; fill is 'nearest'
  c.data.num_workers = 0                 # grain worker processes (0 = in process)
  c.data.prefetch = 2                    # batches staged on device ahead of the step

  c.loss = ml_collections.ConfigDict()
  c.loss.pretrain = ml_collections.ConfigDict({'pixel': 1.0})
  c.loss.gan = ml_collections.ConfigDict({'pixel': 0.01, 'content': 1.0, 'adversarial': 0.005})
  c.loss.pixel_criterion = 'l1'          # 'l1' | 'l2' | 'charbonnier'
  c.loss.content_layer = 'conv5_4'       # VGG19 layer of the perceptual loss
  c.loss.content_before_activation = True
  c.loss.content_criterion = 'l1'        # 'l1' (BasicSR/ESRGAN) | 'l2' (SRGAN's MSE on VGG features)
  c.loss.vgg_weights = ''                # torchvision vgg19 .pth / .npz / .safetensors; '' = random
  c.loss.gan_type = 'relativistic'       # 'relativistic' (RaGAN) | 'vanilla' (BCE)

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 16
  c.train.num_steps = 1_400_000          # total: L1 stage + GAN stage (BasicSR: 1M + 400k)
  c.train.pretrain_steps = 1_000_000     # L1 pixel stage
  c.train.g_lr = 1e-4                    # GAN stage (BasicSR optim_g)
  c.train.d_lr = 1e-4
  c.train.pretrain_lr = 2e-4             # L1 stage (BasicSR ESRNet)
  c.train.optimizer = 'adam'             # 'adam' | 'adamw' (decoupled weight decay)
  c.train.weight_decay = 0.0             # adamw only
  c.train.b1 = 0.9
  c.train.b2 = 0.99
  c.train.pretrain_milestones = (200_000, 400_000, 600_000, 800_000)
  c.train.gan_milestones = (50_000, 100_000, 200_000, 300_000)  # steps into the GAN stage
  c.train.lr_decay = 0.5
  c.train.ema_decay = 0.999              # 0 disables the EMA generator
  c.train.precision = 'fp32'             # 'fp32' | 'bf16' compute; params stay float32
  c.train.steps_per_epoch = 0            # epoch length for reporting; 0 = len(train images) // batch
  c.train.log_every_steps = 100
  c.train.eval_every_steps = 5000        # validation + samples (BasicSR val_freq)
  c.train.checkpoint_every_steps = 5000  # besides every improvement of best_metric and each stage end
  c.train.best_metric = 'psnr'           # val metric of the best checkpoint: psnr, ssim, mse, loss, ...
  c.train.early_stopping_patience = 5    # evaluations without a better best_metric, per stage; 0 = off
  c.train.keep_checkpoints = 3           # latest N; the best is kept apart
  c.train.progress = True
  c.train.nan_policy = 'stop'            # a NaN/Inf loss or gradient: 'stop' (named) | 'skip' the step
  c.data.stall_timeout_s = 600.0         # no batch for this long: the run stops, checkpointed
  return c.lock()
