"""DISTS (Ding et al. 2020, "Image Quality Assessment: Unifying Structure and Texture Similarity"), as
DISTS_pytorch 0.1 computes it, in JAX: ImageNet-normalised images through VGG16 with L2 pooling in place
of its max-pools; at the image itself and the five ReLU stages, per channel, a texture term (means) and
a structure term (variances and covariance), weighted by the learned alpha and beta (normalised by
their sum). DISTS = 1 - the weighted sum: lower is better.
"""

import jax.numpy as jnp
import numpy as np

from enhance_jax.models import backbones
from enhance_jax.models.vgg import IMAGENET_MEAN, IMAGENET_STD

TAPS = (3, 8, 15, 22, 29)  # relu1_2 .. relu5_3
CHANNELS = (3, 64, 128, 256, 512, 512)  # the image, then each tap
C1 = C2 = 1e-6


def backbone():
  return backbones.VGG16Features(taps=TAPS, pool='l2')


def split_weights(alpha, beta):
  """The file's alpha and beta ([1, 1475, 1, 1] or [1475]), divided by their joint sum and split per
  stage: two lists of [C] arrays."""
  alpha, beta = (np.asarray(a, np.float32).reshape(-1) for a in (alpha, beta))
  total = alpha.sum() + beta.sum()
  edges = np.cumsum(CHANNELS)[:-1]
  return np.split(alpha / total, edges), np.split(beta / total, edges)


def distance(variables, alpha, beta, x, y):
  """[N] DISTS between X and Y [N, H, W, 3] in [0, 1]: VARIABLES the VGG16's ({'params': ...}), ALPHA
  and BETA the per-stage weights of `split_weights`."""
  x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
  norm = lambda a: (a - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
  model = backbone()
  fx = [x] + model.apply(variables, norm(x))
  fy = [y] + model.apply(variables, norm(y))
  texture = structure = 0.0
  for a, b, wa, wb in zip(fx, fy, alpha, beta):
    ma, mb = a.mean(axis=(1, 2)), b.mean(axis=(1, 2))
    s1 = (2 * ma * mb + C1) / (ma ** 2 + mb ** 2 + C1)
    va, vb = ((a - ma[:, None, None]) ** 2).mean(axis=(1, 2)), ((b - mb[:, None, None]) ** 2).mean(axis=(1, 2))
    cov = (a * b).mean(axis=(1, 2)) - ma * mb
    s2 = (2 * cov + C2) / (va + vb + C2)
    texture = texture + s1 @ jnp.asarray(wa)
    structure = structure + s2 @ jnp.asarray(wb)
  return 1.0 - (texture + structure)
