"""Report 000's GAN: a generator on a `conv`, `resnet18` or `vgg16` backbone restores CelebA faces
(1/5 down and back up); a `conv` or backbone discriminator; BCE for D, BCE + MSE for G; separate G
and D learning rates.

model.backbone / discriminator.backbone: 'conv' (conv/BN/ReLU encoder, transposed-conv decoder),
'resnet18' or 'vgg16' (torchvision layouts; ImageNet weights from model.backbone_weights /
discriminator.backbone_weights, a torchvision .pth/.safetensors/.npz state_dict, else random and said
so once). train.lr_multipliers.backbone scales the backbones' learning rate; 0 freezes them.

The report's table 2 (default backbone); the defaults here are experiment 3, its best:
  exp 1: --set data.fraction=0.0494 --set train.num_steps=9375 --set train.batch_size=32
         --set train.g_lr=2e-4 --set train.d_lr=5e-5          (10,000 samples, 50 epochs)
  exp 2: --set data.fraction=0.2468 --set train.num_steps=23437 --set train.batch_size=64
         --set train.g_lr=1e-4 --set train.d_lr=1e-4          (50,000 samples, 50 epochs)
  exp 3: data.fraction=0.3455 (70,000 samples), 100 epochs of 60% of them at batch 64, G 1e-4, D 5e-5.
Chosen where the report is silent: G's loss is MSE + BCE with weight 1 each (its plain sum), no
supervised warm-up (pretrain_steps 0), Adam (0.5, 0.999) as DCGAN, vanilla BCE.
"""

import ml_collections

from enhance_jax.training.config import load_experiment

REPORT = '000'


def get_config():
  c = load_experiment('celeba_cnn')
  c.unlock()
  c.name = 'celeba_gan'
  c.model = ml_collections.ConfigDict({'name': 'celeba_gan', 'backbone': 'conv', 'num_features': 64,
                                       'num_layers': 3, 'scale': 1, 'backbone_weights': ''})
  c.discriminator = ml_collections.ConfigDict({'name': 'celeba', 'backbone': 'conv',
                                               'num_features': 64, 'num_layers': 3,
                                               'backbone_weights': ''})
  c.data.fraction = 0.3455
  c.loss.pretrain = ml_collections.ConfigDict({'mse': 1.0})
  c.loss.gan = ml_collections.ConfigDict({'mse': 1.0, 'adversarial': 1.0})
  c.loss.gan_type = 'vanilla'
  steps_per_epoch = int(70_000 * 0.6) // 64
  c.train.batch_size = 64
  c.train.pretrain_steps = 0
  c.train.num_steps = 100 * steps_per_epoch
  c.train.eval_every_steps = steps_per_epoch
  c.train.checkpoint_every_steps = steps_per_epoch
  c.train.g_lr = 1e-4
  c.train.d_lr = 5e-5
  c.train.b1 = 0.5
  c.train.gan_milestones = ()
  c.train.lr_multipliers = ml_collections.ConfigDict({'backbone': 1.0})
  return c.lock()
