"""torchvision's ResNet18 and VGG16 feature extractors (no classifier) as linen modules, for report 000's
backbone generator and discriminator.

Submodule names are torchvision's state_dict keys with '.' written '_' (`layer1.0.downsample.1` ->
`layer1_0/downsample_1`, `features.28` -> `features_28`), so `enhance_jax.io.weights.load_backbone` is a
key table. Input: NHWC, already ImageNet-normalised by the caller; output: [N, H/32, W/32, 512] features
(ceil for ResNet's strided convs, floor for VGG's max-pools, as in torchvision).
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from enhance_jax.models.layers import batch_norm
from enhance_jax.ops.conv import Conv

# torchvision resnet18: (layer, output channels, stride of its first block); two BasicBlocks each.
RESNET18_LAYERS = (('layer1', 64, 1), ('layer2', 128, 2), ('layer3', 256, 2), ('layer4', 512, 2))
RESNET18_BLOCKS = 2
# torchvision vgg16 (cfg 'D') `features`: conv widths with 'M' for a 2x2 max-pool; the index of each
# entry (a conv is followed by its ReLU) is its key `features.{i}`.
VGG16_CFG = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M')


def vgg16_conv_indices():
  """[(torchvision index i of `features.{i}`, in channels, out channels)] for the 13 convs."""
  convs, index, c_in = [], 0, 3
  for v in VGG16_CFG:
    if v == 'M':
      index += 1
    else:
      convs.append((index, c_in, v))
      index, c_in = index + 2, v
  return convs


class BasicBlock(nn.Module):
  """torchvision BasicBlock: conv3x3(stride)-BN-ReLU-conv3x3-BN + identity (or 1x1 conv-BN), ReLU."""
  features: int
  strides: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = lambda f, k, s, p, name: Conv(f, (k, k), strides=s, padding=p, use_bias=False, dtype=self.dtype,
                                         param_dtype=jnp.float32, name=name)
    y = conv(self.features, 3, self.strides, 1, 'conv1')(x)
    y = nn.relu(batch_norm(train, self.dtype, 'bn1')(y))
    y = batch_norm(train, self.dtype, 'bn2')(conv(self.features, 3, 1, 1, 'conv2')(y))
    if self.strides != 1 or x.shape[-1] != self.features:
      x = batch_norm(train, self.dtype, 'downsample_1')(conv(self.features, 1, self.strides, 0,
                                                             'downsample_0')(x))
    return nn.relu(x + y)


class ResNet18Features(nn.Module):
  """torchvision resnet18 up to layer4 (no avgpool/fc): conv1 7x7/2, bn1, ReLU, max-pool 3x3/2, layer1..4.

  BatchNorm keeps its running statistics in `batch_stats` (used when train=False). 11,176,512 params.
  """
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = Conv(64, (7, 7), strides=2, padding=3, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
             name='conv1')(x.astype(self.dtype))
    x = nn.relu(batch_norm(train, self.dtype, 'bn1')(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for layer, features, strides in RESNET18_LAYERS:
      for i in range(RESNET18_BLOCKS):
        x = BasicBlock(features, strides if i == 0 else 1, self.dtype, name=f'{layer}_{i}')(x, train)
    return x


def _tapped(outputs, taps, index, x):
  """Appends X to OUTPUTS when torchvision index INDEX is one of TAPS; whether all taps are taken."""
  if index in taps:
    outputs.append(x)
  return bool(taps) and len(outputs) == len(taps)


class VGG16Features(nn.Module):
  """torchvision vgg16 `features`: 13 conv3x3+ReLU, 5 max-pools 2x2 (the last included). 14,714,688 params.

  `taps`: torchvision `features` indices whose outputs to return (a list, stopping after the last; LPIPS
  takes the ReLUs 3, 8, 15, 22, 29); empty: the last output. `pool`: 'max', or 'l2' (DISTS: each max-pool
  replaced by an L2 pooling, `l2_pool`). `train` is accepted for a uniform call signature (there is no
  BatchNorm or dropout here).
  """
  dtype: Any = jnp.float32
  taps: tuple = ()
  pool: str = 'max'

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    x, outputs = x.astype(self.dtype), []
    layers = [layer for v in VGG16_CFG for layer in ((('pool',),) if v == 'M' else (('conv', v), ('relu',)))]
    for index, layer in enumerate(layers):
      if layer[0] == 'pool':
        x = l2_pool(x) if self.pool == 'l2' else nn.max_pool(x, (2, 2), strides=(2, 2))
      elif layer[0] == 'conv':
        x = Conv(layer[1], (3, 3), padding=1, dtype=self.dtype, param_dtype=jnp.float32,
                 name=f'features_{index}')(x)
      else:
        x = nn.relu(x)
      if _tapped(outputs, self.taps, index, x):
        return outputs
    return outputs or x


def l2_pool(x):
  """DISTS's L2 pooling: sqrt of x^2 blurred by a normalised 3x3 Hann window ([1, 2, 1] / 4 squared),
  stride 2, padding 1, per channel (+1e-12 inside the root)."""
  taps = (0.25, 0.5, 0.25)
  sq = jnp.pad(x * x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  h, w = (sq.shape[1] - 3) // 2 + 1, (sq.shape[2] - 3) // 2 + 1
  out = sum(taps[i] * taps[j] * sq[:, i:i + 2 * h - 1:2, j:j + 2 * w - 1:2]
            for i in range(3) for j in range(3))
  return jnp.sqrt(out + 1e-12)


def _max_pool_ceil(x, window=3, stride=2):
  """torch's MaxPool2d(3, 2, ceil_mode=True): a last partial window is kept (padded with -inf)."""
  pads = []
  for size in x.shape[1:3]:
    out = -(-(size - window) // stride) + 1
    pads.append((0, max(0, (out - 1) * stride + window - size)))
  return nn.max_pool(x, (window, window), strides=(stride, stride), padding=pads)


# torchvision alexnet `features`: (index, out channels, kernel, stride, padding); max-pools 3x3/2 at 2, 5, 12.
ALEXNET_CONVS = ((0, 64, 11, 4, 2), (3, 192, 5, 1, 2), (6, 384, 3, 1, 1), (8, 256, 3, 1, 1),
                 (10, 256, 3, 1, 1))
ALEXNET_POOLS = (2, 5, 12)


class AlexNetFeatures(nn.Module):
  """torchvision alexnet `features` (5 convs with ReLUs, 3 max-pools 3x3/2); `taps` as VGG16Features'
  (LPIPS: the ReLUs 1, 4, 7, 9, 11)."""
  dtype: Any = jnp.float32
  taps: tuple = ()

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    x, outputs, convs = x.astype(self.dtype), [], {c[0]: c for c in ALEXNET_CONVS}
    for index in range(13):
      if index in convs:
        _, features, k, stride, pad = convs[index]
        x = Conv(features, (k, k), strides=stride, padding=pad, dtype=self.dtype,
                 param_dtype=jnp.float32, name=f'features_{index}')(x)
      elif index in ALEXNET_POOLS:
        x = nn.max_pool(x, (3, 3), strides=(2, 2))
      else:
        x = nn.relu(x)
      if _tapped(outputs, self.taps, index, x):
        return outputs
    return outputs or x


class Fire(nn.Module):
  """SqueezeNet's Fire module: 1x1 squeeze + ReLU, then 1x1 and 3x3 expands (+ ReLU) concatenated."""
  squeeze: int
  expand: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = lambda f, k, name: Conv(f, (k, k), padding=k // 2, dtype=self.dtype, param_dtype=jnp.float32,
                                   name=name)
    x = nn.relu(conv(self.squeeze, 1, 'squeeze')(x))
    return jnp.concatenate([nn.relu(conv(self.expand, 1, 'expand1x1')(x)),
                            nn.relu(conv(self.expand, 3, 'expand3x3')(x))], axis=-1)


# torchvision squeezenet1_1 `features`: index -> (squeeze, expand) of each Fire; ceil-mode pools at 2, 5, 8.
SQUEEZENET_FIRES = {3: (16, 64), 4: (16, 64), 6: (32, 128), 7: (32, 128), 9: (48, 192), 10: (48, 192),
                    11: (64, 256), 12: (64, 256)}
SQUEEZENET_POOLS = (2, 5, 8)


class SqueezeNetFeatures(nn.Module):
  """torchvision squeezenet1_1 `features` (a 3x3/2 conv, 8 Fire modules, 3 ceil-mode max-pools);
  `taps` as VGG16Features' (LPIPS: 1, 4, 7, 9, 10, 11, 12)."""
  dtype: Any = jnp.float32
  taps: tuple = ()

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    x, outputs = x.astype(self.dtype), []
    for index in range(13):
      if index == 0:
        x = Conv(64, (3, 3), strides=2, padding=0, dtype=self.dtype, param_dtype=jnp.float32,
                 name='features_0')(x)
      elif index == 1:
        x = nn.relu(x)
      elif index in SQUEEZENET_POOLS:
        x = _max_pool_ceil(x)
      else:
        x = Fire(*SQUEEZENET_FIRES[index], self.dtype, name=f'features_{index}')(x)
      if _tapped(outputs, self.taps, index, x):
        return outputs
    return outputs or x


BACKBONES = {'resnet18': ResNet18Features, 'vgg16': VGG16Features}
