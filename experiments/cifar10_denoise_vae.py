"""Report 001's variational autoencoder on noisy CIFAR-10: cifar10_denoise_ae's encoder giving the
mean and log-variance of an 8x8x2 latent, a reparameterised sample (z = mean + exp(logvar / 2) eps,
a fresh key every step), the same decoder; loss MSE + loss.pretrain.kl x KL(q(z|x) || N(0, I)).

The report names the VAE and finds it worse than the plain autoencoder; it gives no sizes. Chosen
here: the autoencoder's layers (the report's bottleneck), and KL weight 0.04: the authors' notebook
summed BCE over 3,072 pixel values and KL over its latent, weight 1; with both terms averaged per
element, 128 latent units against 3,072 values weigh KL by 128 / 3072 ~ 0.04. 20 epochs, batch 128,
Adam lr 1e-3 as that notebook.
"""

import ml_collections

from enhance_jax.training.config import load_experiment, supervised_run

REPORT = '001'


def get_config():
  c = load_experiment('cifar10_denoise_ae')
  c.unlock()
  c.name = 'cifar10_denoise_vae'
  c.model.name = 'denoise_vae'
  c.loss.pretrain = ml_collections.ConfigDict({'mse': 1.0, 'kl': 0.04})
  c.loss.gan = ml_collections.ConfigDict({'mse': 1.0, 'kl': 0.04})
  supervised_run(c, batch_size=128, lr=1e-3, epochs=20, steps_per_epoch=50_000 // 128)
  return c.lock()
