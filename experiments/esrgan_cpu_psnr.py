"""The README quickstart: esrgan_cpu's RRDBNet trained by ESRGAN's PSNR stage (L1) alone, minutes on a
2-core CPU with the embedded photos.

Why no GAN stage: its content loss needs real VGG19 features, which cannot be downloaded here; against
a random VGG19 on 11 photos the GAN stage paints worm-like textures over fur and eyes. `--exp
esrgan_cpu` keeps both stages, and `--exp esrgan` the full schedule, for users who give
loss.vgg_weights (a torchvision vgg19 state_dict).
Why a mix of blurs: trained on report 004's bicubic + blur 1.5 alone, the model learns to undo a
blur every input has, and rings on a sharp photo (9.3x bicubic's high-frequency energy on a crop of
chelsea's eye); trained on no blur, 0.75 and 1.5 drawn per image, it sharpens by 1.8x, cleanly.
"""

import ml_collections

from enhance_jax.training.config import load_experiment

REPORT = '004'


def get_config():
  c = load_experiment('esrgan_cpu')
  c.unlock()
  c.name = 'esrgan_cpu_psnr'
  c.discriminator = ml_collections.ConfigDict({'name': 'none'})  # L1 only: one supervised stage
  c.loss.gan = ml_collections.ConfigDict({})
  c.train.pretrain_steps = c.train.num_steps
  c.train.gan_milestones = ()
  c.data.degradation = ("one_of('bicubic(4)', 'bicubic_blur(4, 0.75)', "
                        "'bicubic_blur(4, 1.5)')")
  c.lock()
  return c
