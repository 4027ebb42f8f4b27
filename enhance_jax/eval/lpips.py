"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric"),
v0.1 as the `lpips` package 0.1.4 computes it, in JAX: both images scaled to [-1, 1] and shifted by the
package's ScalingLayer, an ImageNet backbone's ReLU outputs (AlexNet, VGG16 or SqueezeNet 1.1, in
torchvision's layout), each unit-normalised over channels, squared differences weighted per channel
by the learned linear heads, averaged over space and summed over layers. Lower is better.
"""

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


def backbone(net: str):
  """The Flax feature extractor of NET ('alex', 'vgg' or 'squeeze'), tapping LPIPS's layers."""
  if net not in NETS:
    raise ValueError(f"LPIPS net must be one of {', '.join(NETS)}, got {net!r}.")
  cls, taps, _, _ = NETS[net]
  return cls(taps=taps)


def unit_normalise(f):
  """F divided by its L2 norm over channels (+1e-10), the package's normalize_tensor."""
  return f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + EPS)


def scaled(x):
  """[0, 1] RGB -> the backbone's input: [-1, 1], then (x - shift) / scale."""
  return (2.0 * x - 1.0 - jnp.asarray(SHIFT, x.dtype)) / jnp.asarray(SCALE, x.dtype)


def distance(net: str, variables, heads, x, y):
  """[N] LPIPS between X and Y [N, H, W, 3] in [0, 1]: VARIABLES are the backbone's ({'params': ...}),
  HEADS the per-layer channel weights ([C] each, the package's lin{k}.model.1.weight)."""
  model = backbone(net)
  fx = model.apply(variables, scaled(jnp.asarray(x, jnp.float32)))
  fy = model.apply(variables, scaled(jnp.asarray(y, jnp.float32)))
  total = 0.0
  for a, b, w in zip(fx, fy, heads):
    d = (unit_normalise(a) - unit_normalise(b)) ** 2
    total = total + jnp.mean(d @ jnp.asarray(w, d.dtype), axis=(1, 2))
  return total
