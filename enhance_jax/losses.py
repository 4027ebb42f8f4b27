"""Losses: pixel (L1, L2, Charbonnier), VGG19 perceptual content, and GAN losses (vanilla BCE and
relativistic average). All take float32 NHWC images in [0, 1] or logits [N] and return scalars."""

import jax.numpy as jnp
import optax


def l1(pred, target):
  return jnp.mean(jnp.abs(pred - target))


def l2(pred, target):
  return jnp.mean(jnp.square(pred - target))


def charbonnier(pred, target, eps=1e-3):
  return jnp.mean(jnp.sqrt(jnp.square(pred - target) + eps * eps))


PIXEL_CRITERIA = {'l1': l1, 'l2': l2, 'mse': l2, 'charbonnier': charbonnier}
GAN_TYPES = ('vanilla', 'relativistic')
LOSS_TERMS = ('pixel', 'content', 'adversarial')  # the keys of loss.pretrain / loss.gan


def content(sr_features, hr_features, criterion='l1'):
  """Perceptual loss between VGG feature maps, summed over layers: L1 (BasicSR, ESRGAN) or 'l2'
  (SRGAN's MSE). Compared in float32 whatever dtype the VGG computed in."""
  f32 = lambda a: a.astype(jnp.float32)
  return sum(PIXEL_CRITERIA[criterion](f32(sr_features[k]), f32(hr_features[k])) for k in sr_features)


def bce(logits, target):
  """Binary cross-entropy from logits against a constant target, numerically stable."""
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target)))


def generator_adversarial(real_logits, fake_logits, gan_type):
  """G's adversarial loss. Relativistic average (ESRGAN): real should look less real than fake."""
  if gan_type == 'vanilla':
    return bce(fake_logits, 1.0)
  if gan_type == 'relativistic':
    return 0.5 * (bce(real_logits - jnp.mean(fake_logits), 0.0) +
                  bce(fake_logits - jnp.mean(real_logits), 1.0))
  raise ValueError(f'unknown loss.gan_type {gan_type!r}')


def discriminator_adversarial(real_logits, fake_logits, gan_type):
  """D's loss: vanilla BCE (real -> 1, fake -> 0) or its relativistic average form."""
  if gan_type == 'vanilla':
    return bce(real_logits, 1.0) + bce(fake_logits, 0.0)
  if gan_type == 'relativistic':
    return 0.5 * (bce(real_logits - jnp.mean(fake_logits), 1.0) +
                  bce(fake_logits - jnp.mean(real_logits), 0.0))
  raise ValueError(f'unknown loss.gan_type {gan_type!r}')
