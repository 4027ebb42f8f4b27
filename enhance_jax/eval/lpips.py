"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric"),
v0.1 as the `lpips` package 0.1.4 computes it, in JAX: both images scaled to [-1, 1] and shifted by the
package's ScalingLayer, an ImageNet backbone's ReLU outputs (AlexNet, VGG16 or SqueezeNet 1.1, in
torchvision's layout), each unit-normalised over channels, squared differences weighted per channel
by the learned linear heads, averaged over space and summed over layers. Lower is better.
"""

import flax.linen as nn
import jax.numpy as jnp

from enhance_jax.models import backbones

# net: (feature extractor, torchvision `features` indices it taps, channels per tap, torchvision name)
NETS = {
    'alex': (backbones.AlexNetFeatures, (1, 4, 7, 9, 11), (64, 192, 384, 256, 256), 'alexnet'),
    'vgg': (backbones.VGG16Features, (3, 8, 15, 22, 29), (64, 128, 256, 512, 512), 'vgg16'),
    'squeeze': (backbones.SqueezeNetFeatures, (1, 4, 7, 9, 10, 11, 12),
                (64, 128, 256, 384, 384, 512, 512), 'squeezenet1_1'),
}
SHIFT = (-0.030, -0.088, -0.188)  # the package's ScalingLayer, on [-1, 1] inputs
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10


def unit_normalise(f):
  """F divided by its L2 norm over channels (+1e-10), the package's normalize_tensor."""
  return f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + EPS)


def scaled(x):
  """[0, 1] RGB -> the backbone's input: [-1, 1], then (x - shift) / scale."""
  return (2.0 * x - 1.0 - jnp.asarray(SHIFT, x.dtype)) / jnp.asarray(SCALE, x.dtype)


class LPIPS(nn.Module):
  """(x, y) [N, H, W, 3] in [0, 1] -> [N] LPIPS. Params: `backbone` (the torchvision-layout features)
  and `lin{k}` ([C] channel weights of layer k, the package's lin{k}.model.1.weight)."""
  net: str = 'alex'

  @nn.compact
  def __call__(self, x, y):
    heads = [self.param(f'lin{k}', nn.initializers.constant(1.0 / c), (c,))
             for k, c in enumerate(NETS[self.net][2])]
    model = NETS[self.net][0](taps=NETS[self.net][1], name='backbone')
    both = model(scaled(jnp.concatenate([x, y]).astype(jnp.float32)))
    total = 0.0
    for f, w in zip(both, heads):
      a, b = jnp.split(f, 2)
      d = (unit_normalise(a) - unit_normalise(b)) ** 2
      total = total + jnp.mean(d @ w.astype(d.dtype), axis=(1, 2))
    return total


def variables_of(net: str, backbone_variables, heads):
  """LPIPS(net)'s variables from the backbone's ({'params': ...}) and the per-layer heads."""
  return {'params': {'backbone': backbone_variables['params'],
                     **{f'lin{k}': jnp.asarray(h, jnp.float32) for k, h in enumerate(heads)}}}


def distance(net: str, variables, heads, x, y):
  """[N] LPIPS between X and Y [N, H, W, 3] in [0, 1]: VARIABLES are the backbone's ({'params': ...}),
  HEADS the per-layer channel weights ([C] each, the package's lin{k}.model.1.weight)."""
  if net not in NETS:
    raise ValueError(f"LPIPS net must be one of {', '.join(NETS)}, got {net!r}.")
  return LPIPS(net).apply(variables_of(net, variables, heads), jnp.asarray(x), jnp.asarray(y))
