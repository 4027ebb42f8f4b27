"""VGG19 `features` trunk (torchvision layout) as a linen module, for perceptual losses.

Layer names follow BasicSR: `convX_Y` are the 16 convolutions, `reluX_Y` their activations. Parameters
import from torchvision's `vgg19` state_dict through `enhance_jax.io.weights.load_vgg19`.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from enhance_jax.errors import UserError
from enhance_jax.ops.conv import Conv

# Convolutions in execution order; a 2x2 max-pool follows the last conv of each block.
VGG19_LAYERS = (
    'conv1_1', 'conv1_2',
    'conv2_1', 'conv2_2',
    'conv3_1', 'conv3_2', 'conv3_3', 'conv3_4',
    'conv4_1', 'conv4_2', 'conv4_3', 'conv4_4',
    'conv5_1', 'conv5_2', 'conv5_3', 'conv5_4',
)
# Index of each conv in torchvision's `vgg19().features` Sequential (keys `features.{i}.weight`).
VGG19_TORCH_INDEX = dict(zip(
    VGG19_LAYERS, (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)))
# Output channels of each conv; the input of conv1_1 is RGB.
VGG19_CHANNELS = dict(zip(
    VGG19_LAYERS, (64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512)))
_POOL_AFTER = frozenset({'conv1_2', 'conv2_2', 'conv3_4', 'conv4_4', 'conv5_4'})
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg19_in_channels(name: str) -> int:
  """Input channels of conv `name` (3 for conv1_1, else the previous conv's outputs)."""
  i = VGG19_LAYERS.index(name)
  return 3 if i == 0 else VGG19_CHANNELS[VGG19_LAYERS[i - 1]]


def conv_name(layer: str) -> str:
  """Maps a feature name (`conv3_4` or `relu3_4`) to its conv; unknown names raise UserError."""
  conv = 'conv' + layer[4:] if layer.startswith('relu') else layer
  if conv not in VGG19_TORCH_INDEX:
    valid = ', '.join(VGG19_LAYERS)
    raise UserError(f"Unknown VGG19 layer '{layer}'; use one of {valid} (or the same with 'relu').")
  return conv


def convs_needed(layers: Sequence[str] | str) -> tuple[str, ...]:
  """The convs to run (in order) to produce every layer in `layers`."""
  layers = (layers,) if isinstance(layers, str) else tuple(layers)
  if not layers:
    raise UserError('No VGG19 layers requested; name at least one, e.g. `conv5_4`.')
  last = max(VGG19_LAYERS.index(conv_name(layer)) for layer in layers)
  return VGG19_LAYERS[:last + 1]


class VGG19Features(nn.Module):
  """torchvision VGG19 `features`, returning {name: NHWC features} and stopping at the last one asked.

  `convX_Y` names give pre-ReLU features when `before_activation` (ESRGAN) and post-ReLU otherwise
  (SRGAN); `reluX_Y` names are always post-ReLU.
  """
  layers: Sequence[str] = ('conv5_4',)
  before_activation: bool = True
  use_input_norm: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> dict[str, jnp.ndarray]:
    layers = (self.layers,) if isinstance(self.layers, str) else tuple(self.layers)
    convs = convs_needed(layers)
    if self.use_input_norm:
      x = (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
    x = x.astype(self.dtype)
    out = {}
    for name in convs:
      x = Conv(VGG19_CHANNELS[name], (3, 3), padding=1, dtype=self.dtype,
               param_dtype=jnp.float32, name=name)(x)
      pre, x = x, nn.relu(x)
      for layer in layers:
        if layer == name:
          out[layer] = pre if self.before_activation else x
        elif layer == 'relu' + name[4:]:
          out[layer] = x
      if name in _POOL_AFTER and name != convs[-1]:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    return out
