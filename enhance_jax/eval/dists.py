"""DISTS (Ding et al. 2020, "Image Quality Assessment: Unifying Structure and Texture Similarity"), as
DISTS_pytorch 0.1 computes it, in JAX: ImageNet-normalised images through VGG16 with L2 pooling in place
of its max-pools; at the image itself and the five ReLU stages, per channel, a texture term (means) and
a structure term (variances and covariance), weighted by the learned alpha and beta (normalised by
their sum). DISTS = 1 - the weighted sum: lower is better.
"""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from enhance_jax.models import backbones
from enhance_jax.models.vgg import IMAGENET_MEAN, IMAGENET_STD

TAPS = (3, 8, 15, 22, 29)  # relu1_2 .. relu5_3
CHANNELS = (3, 64, 128, 256, 512, 512)  # the image, then each tap
C1 = C2 = 1e-6


class DISTS(nn.Module):
  """(x, y) [N, H, W, 3] in [0, 1] -> [N] DISTS. Params: `backbone` (VGG16, torchvision layout) and
  `alpha`, `beta` ([1475] each, as the file holds them; normalised by their joint sum here)."""

  @nn.compact
  def __call__(self, x, y):
    alpha = self.param('alpha', nn.initializers.constant(0.1), (sum(CHANNELS),))
    beta = self.param('beta', nn.initializers.constant(0.1), (sum(CHANNELS),))
    total = alpha.sum() + beta.sum()
    edges = np.cumsum(CHANNELS)[:-1].tolist()
    alpha, beta = jnp.split(alpha / total, edges), jnp.split(beta / total, edges)
    x, y = x.astype(jnp.float32), y.astype(jnp.float32)
    norm = lambda a: (a - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
    feats = backbones.VGG16Features(taps=TAPS, pool='l2', name='backbone')(norm(jnp.concatenate([x, y])))
    texture = structure = 0.0
    for f, wa, wb in zip([jnp.concatenate([x, y])] + feats, alpha, beta):
      a, b = jnp.split(f, 2)
      ma, mb = a.mean(axis=(1, 2)), b.mean(axis=(1, 2))
      s1 = (2 * ma * mb + C1) / (ma ** 2 + mb ** 2 + C1)
      va = ((a - ma[:, None, None]) ** 2).mean(axis=(1, 2))
      vb = ((b - mb[:, None, None]) ** 2).mean(axis=(1, 2))
      cov = (a * b).mean(axis=(1, 2)) - ma * mb
      s2 = (2 * cov + C2) / (va + vb + C2)
      texture = texture + s1 @ wa
      structure = structure + s2 @ wb
    return 1.0 - (texture + structure)


def variables_of(backbone_variables, alpha, beta):
  """DISTS's variables from VGG16's ({'params': ...}) and the file's alpha and beta."""
  return {'params': {'backbone': backbone_variables['params'],
                     'alpha': jnp.asarray(np.reshape(alpha, -1), jnp.float32),
                     'beta': jnp.asarray(np.reshape(beta, -1), jnp.float32)}}


def distance(variables, alpha, beta, x, y):
  """[N] DISTS between X and Y [N, H, W, 3] in [0, 1]: VARIABLES the VGG16's ({'params': ...}), ALPHA
  and BETA the file's weights ([1475] each)."""
  return DISTS().apply(variables_of(variables, alpha, beta), jnp.asarray(x), jnp.asarray(y))
