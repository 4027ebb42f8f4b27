"""NIMA (Talebi & Milanfar 2018): an ImageNet backbone whose classifier is replaced by global average
pooling, dropout and a dense 10-way softmax over the rating buckets 1..10 (report 002 trains it on
MnasNet; the paper on MobileNet, dropout 0.75).

Backbones (field `backbone`), each described once by `layer_specs` and built from that description by
both the module and the weight importer:
  - 'mobilenet_v2': torchvision mobilenet_v2 `features.{i}` (inverted residuals, ReLU6, BatchNorm).
  - 'mnasnet': torchvision mnasnet1_0 `layers.{i}` (ReLU, BatchNorm momentum 3e-4 as torchvision's).
  - 'mobilenet': MobileNet v1 (width 1.0, ReLU6), the NIMA paper's; no torchvision layout exists, so its
    names are this module's own (`stem.conv`, `block{i}.dw_conv`, `block{i}.pw_bn`, ...) and it has
    no importer: it starts from random weights.
Every conv and BatchNorm is a child of the `backbone` submodule named by its torchvision state_dict
prefix with '.' written '_' (`features.2.conv.1.0.weight` -> params backbone/features_2_conv_1_0/kernel,
`features.2.conv.1.1.running_mean` -> batch_stats backbone/features_2_conv_1_1/mean). The head is the
Dense `head` (torchvision's replaced `classifier.1`, weight [10, C] -> kernel [C, 10]).

Input: float images in [0, 1], NHWC, any size (fully convolutional up to the pooling); the ImageNet
mean/std normalisation happens inside. Output: the 10 bucket probabilities [N, 10] (float32). The mean
score (`mean_score`) is differentiable with respect to the pixels, for report 002's aesthetic loss.
"""

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from enhance_jax.ops.conv import Conv

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NUM_BUCKETS = 10
NIMA_DROPOUT = 0.75  # the NIMA paper's dropout before the head (report 002 does not restate it)


class Layer(NamedTuple):
  """conv(k x k, stride, groups, no bias) -> BatchNorm -> activation; names are torch key prefixes."""
  conv: str
  bn: str
  c_in: int
  c_out: int
  kernel: int = 1
  stride: int = 1
  groups: int = 1
  act: str | None = None  # 'relu', 'relu6' or None (a linear bottleneck)


class Block(NamedTuple):
  layers: tuple[Layer, ...]
  residual: bool = False


class Spec(NamedTuple):
  blocks: tuple[Block, ...]
  features: int  # channels into the pooling
  bn_momentum: float  # PyTorch's BatchNorm momentum (flax's is 1 - this)
  namespace: tuple[str, ...]  # the torch key prefixes the backbone owns


# torchvision mobilenet_v2: (expansion t, channels c, repeats n, first stride s).
MOBILENET_V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                         (6, 160, 3, 2), (6, 320, 1, 1))
# torchvision mnasnet1_0 stacks layers.8..13: (out channels, kernel, first stride, expansion, repeats).
MNASNET_STACKS = ((24, 3, 2, 3, 3), (40, 5, 2, 3, 3), (80, 5, 2, 6, 3), (96, 3, 1, 6, 2),
                  (192, 5, 2, 6, 4), (320, 3, 1, 6, 1))
# MobileNet v1 after its stem: (channels of the pointwise conv, stride of the depthwise conv).
MOBILENET_V1_SETTINGS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1),
                         (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


def _mobilenet_v2() -> Spec:
  blocks = [Block((Layer('features.0.0', 'features.0.1', 3, 32, 3, 2, 1, 'relu6'),))]
  c_in, index = 32, 1
  for t, c, n, s in MOBILENET_V2_SETTINGS:
    for i in range(n):
      stride, hidden, p = (s if i == 0 else 1), int(round(c_in * t)), f'features.{index}.conv'
      layers = [Layer(f'{p}.0.0', f'{p}.0.1', c_in, hidden, 1, 1, 1, 'relu6')] if t != 1 else []
      j = len(layers)
      layers += [Layer(f'{p}.{j}.0', f'{p}.{j}.1', hidden, hidden, 3, stride, hidden, 'relu6'),
                 Layer(f'{p}.{j + 1}', f'{p}.{j + 2}', hidden, c, 1, 1, 1, None)]
      blocks.append(Block(tuple(layers), stride == 1 and c_in == c))
      c_in, index = c, index + 1
  blocks.append(Block((Layer(f'features.{index}.0', f'features.{index}.1', c_in, 1280, 1, 1, 1,
                             'relu6'),)))
  return Spec(tuple(blocks), 1280, 0.1, ('features.',))


def _mnasnet() -> Spec:
  blocks = [Block((Layer('layers.0', 'layers.1', 3, 32, 3, 2, 1, 'relu'),
                   Layer('layers.3', 'layers.4', 32, 32, 3, 1, 32, 'relu'),
                   Layer('layers.6', 'layers.7', 32, 16, 1, 1, 1, None)))]
  c_in = 16
  for index, (c, k, s, e, n) in enumerate(MNASNET_STACKS, start=8):
    for j in range(n):
      stride, mid, p = (s if j == 0 else 1), c_in * e, f'layers.{index}.{j}.layers'
      blocks.append(Block((Layer(f'{p}.0', f'{p}.1', c_in, mid, 1, 1, 1, 'relu'),
                           Layer(f'{p}.3', f'{p}.4', mid, mid, k, stride, mid, 'relu'),
                           Layer(f'{p}.6', f'{p}.7', mid, c, 1, 1, 1, None)),
                          stride == 1 and c_in == c))
      c_in = c
  blocks.append(Block((Layer('layers.14', 'layers.15', c_in, 1280, 1, 1, 1, 'relu'),)))
  return Spec(tuple(blocks), 1280, 1.0 - 0.9997, ('layers.',))


def _mobilenet_v1() -> Spec:
  blocks = [Block((Layer('stem.conv', 'stem.bn', 3, 32, 3, 2, 1, 'relu6'),))]
  c_in = 32
  for i, (c, s) in enumerate(MOBILENET_V1_SETTINGS):
    blocks.append(Block((Layer(f'block{i}.dw_conv', f'block{i}.dw_bn', c_in, c_in, 3, s, c_in, 'relu6'),
                         Layer(f'block{i}.pw_conv', f'block{i}.pw_bn', c_in, c, 1, 1, 1, 'relu6'))))
    c_in = c
  return Spec(tuple(blocks), c_in, 0.01, ('stem.', 'block'))


SPECS = {'mobilenet_v2': _mobilenet_v2, 'mnasnet': _mnasnet, 'mobilenet': _mobilenet_v1}
IMPORTABLE = ('mobilenet_v2', 'mnasnet')  # backbones with a torchvision layout


def layer_specs(backbone: str) -> Spec:
  """The description of BACKBONE (one of SPECS); ValueError listing the valid names otherwise."""
  if backbone not in SPECS:
    raise ValueError(f"Unknown NIMA backbone '{backbone}'; use one of {', '.join(SPECS)}.")
  return SPECS[backbone]()


def flax_name(torch_prefix: str) -> str:
  """'features.2.conv.1.0' -> 'features_2_conv_1_0': the child's name inside the backbone."""
  return torch_prefix.replace('.', '_')


_ACTS = {'relu': nn.relu, 'relu6': jax.nn.relu6, None: lambda x: x}


class Backbone(nn.Module):
  """The feature extractor `layer_specs(arch)` describes: [N, H, W, 3] (normalised) -> [N, h, w, C]."""
  arch: str = 'mnasnet'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    spec = layer_specs(self.arch)
    x = x.astype(self.dtype)
    for block in spec.blocks:
      y = x
      for layer in block.layers:
        y = Conv(layer.c_out, (layer.kernel, layer.kernel), strides=layer.stride,
                 padding=layer.kernel // 2, feature_group_count=layer.groups, use_bias=False,
                 dtype=self.dtype, param_dtype=jnp.float32, name=flax_name(layer.conv))(y)
        y = nn.BatchNorm(use_running_average=not train, momentum=1.0 - spec.bn_momentum,
                         epsilon=1e-5, dtype=self.dtype, name=flax_name(layer.bn))(y)
        y = _ACTS[layer.act](y)
      x = x + y if block.residual else y
    return x


class NIMA(nn.Module):
  """Backbone -> global average pool -> dropout -> Dense(10) -> softmax: [N, H, W, 3] -> [N, 10].

  Dropout needs the 'dropout' rng when train=True; BatchNorm statistics live in `batch_stats`.
  Trained as a model (the `nima` experiment), it rates: its batches are {'image', 'histogram'}.
  """
  backbone: str = 'mnasnet'
  dropout: float = NIMA_DROPOUT
  dtype: Any = jnp.float32
  scale: int = 1  # always 1 (models.check_config): shared code reads every model section's scale

  makes = 'histogram'  # what it makes (models.output_key): a rating distribution, not an image

  @nn.compact
  def __call__(self, x, train: bool = False):
    mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
    std = jnp.asarray(IMAGENET_STD, jnp.float32)
    x = (jnp.asarray(x, jnp.float32) - mean) / std
    x = Backbone(self.backbone, self.dtype, name='backbone')(x, train)
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    logits = nn.Dense(NUM_BUCKETS, dtype=jnp.float32, param_dtype=jnp.float32, name='head')(x)
    return jax.nn.softmax(logits, axis=-1)


def buckets(dtype=jnp.float32):
  """The rating of each bucket: [1, 2, ..., 10]."""
  return jnp.arange(1, NUM_BUCKETS + 1, dtype=dtype)


def mean_score(probs):
  """NIMA score sum_k k * p_k (k = 1..10) per row of [..., 10] probabilities."""
  return jnp.sum(probs * buckets(probs.dtype), axis=-1)


def std_score(probs):
  """Standard deviation of the rating, sqrt(sum_k (k - mean)^2 p_k), per row of [..., 10]."""
  d = buckets(probs.dtype) - mean_score(probs)[..., None]
  return jnp.sqrt(jnp.maximum(jnp.sum(probs * d * d, axis=-1), 0.0))


def torch_table(backbone: str, head: bool = False, prefix: str = '') -> dict:
  """{(collection, Flax path): (torch key, torch shape)} for BACKBONE's torchvision layout, in module
  order, Flax paths relative to the `Backbone` module (with head=True: relative to NIMA, backbone keys
  under `backbone/`, plus `head/kernel`, `head/bias` from `classifier.1.weight` [10, C] and `.bias`).
  PREFIX is put before every torch key of the backbone (e.g. 'backbone.')."""
  spec = layer_specs(backbone)
  scope, table = ('backbone/' if head else ''), {}
  for block in spec.blocks:
    for layer in block.layers:
      conv, bn = scope + flax_name(layer.conv), scope + flax_name(layer.bn)
      shape = (layer.c_out, layer.c_in // layer.groups, layer.kernel, layer.kernel)
      table['params', f'{conv}/kernel'] = (f'{prefix}{layer.conv}.weight', shape)
      for collection, leaf, key in (('params', 'scale', 'weight'), ('params', 'bias', 'bias'),
                                    ('batch_stats', 'mean', 'running_mean'),
                                    ('batch_stats', 'var', 'running_var')):
        table[collection, f'{bn}/{leaf}'] = (f'{prefix}{layer.bn}.{key}', (layer.c_out,))
  if head:
    table['params', 'head/kernel'] = ('classifier.1.weight', (NUM_BUCKETS, spec.features))
    table['params', 'head/bias'] = ('classifier.1.bias', (NUM_BUCKETS,))
  return table
