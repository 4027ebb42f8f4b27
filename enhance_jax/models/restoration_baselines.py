"""Report 000 (CelebA enhancement): the CNN and RBF baselines and the GAN's generator/discriminator with a
conv, ResNet18 or VGG16 backbone. Same-size restoration: the input is the 1/5-downscaled-and-upscaled-back
image (218x178 for CelebA), the output an image in [0, 1] of the same size, so `scale` must be 1.

Sizes the report gives: CNN = 3 convs then transposed convs, ReLU, sigmoid output; RBF = one hidden layer
of RBF units (learnable centres and widths) then a fully connected layer back to the image; GAN conv
backbone = conv/BatchNorm/ReLU up to 256 channels (512 the alternative: num_layers=4), transposed convs to
upsample; ResNet18/VGG16 backbones give 512-channel maps at 1/32 of the input. Chosen here (report silent):
- every encoder conv is 4x4 stride 2 padding 1 and every decoder transposed conv 4x4 stride 2 (torch's
  ConvTranspose2d(k=4, s=2, p=1), exact x2), widths num_features * 2**i: 64, 128, 256;
- inputs of any size: edge-padded at the bottom/right to the multiple the strides need (8 for three
  stride-2 layers, 32 for the backbones, the patch for RBF), the output cropped back; input_multiple = 1;
- backbone generators: ImageNet normalisation, the backbone, then 5 transposed convs 512 -> 256 -> 128 ->
  64 -> 32 (BN + ReLU) -> 3, sigmoid;
- the discriminator: conv 64 (LeakyReLU 0.2, no BN), convs 128, 256 with BN + LeakyReLU 0.2, or a backbone
  (ImageNet-normalised, padded to 32); global average pooling; one dense logit per image (the report's
  sigmoid is in the BCE loss);
- RBF: 8x8 patches, 256 units (see BaselineRBF). Convs followed by BatchNorm have no bias.
Nothing is ImageNet-normalised except the backbones' inputs (the report min-max normalises to [0, 1]).
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from enhance_jax.models.backbones import BACKBONES
from enhance_jax.models.layers import batch_norm, imagenet_normalize
from enhance_jax.ops.conv import Conv

BACKBONE_NAMES = ('conv', *BACKBONES)
BACKBONE_STRIDE = 32  # ResNet18 and VGG16 both reduce by 2**5


def check_scale(module):
  if module.scale != 1:
    raise ValueError(f'{type(module).__name__} restores images at their own size; it needs scale=1, '
                     f'got {module.scale} (set model.scale=1).')


def check_backbone(module):
  if module.backbone not in BACKBONE_NAMES:
    raise ValueError(f'{type(module).__name__}: unknown backbone {module.backbone!r}; use one of '
                     f'{", ".join(BACKBONE_NAMES)}.')


def pad_to_multiple(x, multiple):
  """Edge-pads NHWC x at the bottom and right so H and W are multiples of `multiple`."""
  pad_h, pad_w = -x.shape[1] % multiple, -x.shape[2] % multiple
  if pad_h or pad_w:
    x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode='edge')
  return x


def down(features, use_bias, dtype, name):
  """4x4 stride-2 conv, padding 1: halves an even size exactly."""
  return Conv(features, (4, 4), strides=2, padding=1, use_bias=use_bias, dtype=dtype,
              param_dtype=jnp.float32, name=name)


def up(features, use_bias, dtype, name):
  """torch ConvTranspose2d(k=4, stride=2, padding=1) (kernel [kh, kw, out, in]): doubles the size."""
  return nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)), transpose_kernel=True,
                          use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32, name=name)


class BaselineCNN(nn.Module):
  """Baseline encoder-decoder: num_layers convs 4x4/2 + ReLU, num_layers transposed convs 4x4/2 (ReLU
  between), sigmoid. [N,H,W,3] -> [N,H,W,3], any H, W."""
  num_features: int = 64
  num_layers: int = 3
  scale: int = 1
  dtype: Any = jnp.float32

  def __post_init__(self):
    super().__post_init__()
    check_scale(self)

  @property
  def input_multiple(self) -> int:
    return 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no BatchNorm or dropout
    h, w = x.shape[1:3]
    x = pad_to_multiple(x.astype(self.dtype), 2 ** self.num_layers)
    widths = [self.num_features * 2 ** i for i in range(self.num_layers)]
    for i, features in enumerate(widths):
      x = nn.relu(down(features, True, self.dtype, f'encoder_{i}')(x))
    for i, features in enumerate([*widths[-2::-1], 3]):
      x = up(features, True, self.dtype, f'decoder_{i}')(x)
      x = nn.relu(x) if i < self.num_layers - 1 else x
    return nn.sigmoid(x[:, :h, :w].astype(jnp.float32))


class BaselineRBF(nn.Module):
  """Baseline RBF network on non-overlapping patch x patch tiles (the image is edge-padded to the patch
  multiple and cropped back, so any size works).

  Each tile, flattened to D = patch*patch*3 values v, gives num_units activations
  phi_k = exp(-||v - c_k||^2 / (2 D s_k^2)): centres c_k (`centres` [K, D], init uniform in [0, 1], the
  pixel range) and widths s_k (per-pixel RMS distance, stored as `log_widths` [K], init s = 0.25) are both
  learned. A dense layer maps phi back to D values; a sigmoid makes them pixels in [0, 1]. Not residual:
  the report maps the RBF outputs "back to the image space" with the fully connected layer and adds no
  skip. Distances are computed in float32 whatever `dtype`.
  """
  patch: int = 8
  num_units: int = 256
  scale: int = 1
  dtype: Any = jnp.float32

  def __post_init__(self):
    super().__post_init__()
    check_scale(self)

  @property
  def input_multiple(self) -> int:
    return 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    n, h, w, c = x.shape
    p = self.patch
    x = pad_to_multiple(x.astype(jnp.float32), p)
    gh, gw = x.shape[1] // p, x.shape[2] // p
    dim = p * p * c
    v = x.reshape(n, gh, p, gw, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(-1, dim)
    centres = self.param('centres', nn.initializers.uniform(1.0), (self.num_units, dim), jnp.float32)
    log_widths = self.param('log_widths', nn.initializers.constant(jnp.log(0.25)), (self.num_units,),
                            jnp.float32)
    d2 = (jnp.sum(v * v, axis=1, keepdims=True) - 2 * v @ centres.T
          + jnp.sum(centres * centres, axis=1)[None])
    phi = jnp.exp(-jnp.maximum(d2, 0) / (2 * dim * jnp.exp(2 * log_widths)))
    out = nn.Dense(dim, dtype=self.dtype, param_dtype=jnp.float32, name='dense')(phi.astype(self.dtype))
    out = nn.sigmoid(out.astype(jnp.float32))
    out = out.reshape(n, gh, gw, p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, gh * p, gw * p, c)
    return out[:, :h, :w]


class BackboneGenerator(nn.Module):
  """The GAN generator: [N,H,W,3] in [0,1] -> [N,H,W,3] in [0,1], any H, W.

  backbone='conv': num_layers x (conv 4x4/2 no bias, BN, ReLU), widths num_features * 2**i, then
  transposed convs mirroring them (BN + ReLU) and a last one to RGB, sigmoid.
  backbone='resnet18'|'vgg16': ImageNet normalisation, the torchvision feature extractor (submodule
  `backbone`, 512 channels at 1/32), then 5 transposed convs to 4, 2, 1, 1/2 x num_features (BN + ReLU)
  and RGB, sigmoid. num_layers is unused there.
  """
  backbone: str = 'conv'
  num_features: int = 64
  num_layers: int = 3
  scale: int = 1
  dtype: Any = jnp.float32

  def __post_init__(self):
    super().__post_init__()
    check_scale(self)
    check_backbone(self)

  @property
  def input_multiple(self) -> int:
    return 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    h, w = x.shape[1:3]
    nf = self.num_features
    x = x.astype(self.dtype)
    if self.backbone == 'conv':
      x = pad_to_multiple(x, 2 ** self.num_layers)
      widths = [nf * 2 ** i for i in range(self.num_layers)]
      for i, features in enumerate(widths):
        x = down(features, False, self.dtype, f'encoder_{i}')(x)
        x = nn.relu(batch_norm(train, self.dtype, f'encoder_bn_{i}')(x))
      decoder = widths[-2::-1]
    else:
      x = pad_to_multiple(imagenet_normalize(x), BACKBONE_STRIDE)
      x = BACKBONES[self.backbone](dtype=self.dtype, name='backbone')(x, train)
      decoder = [nf * 4, nf * 2, nf, max(nf // 2, 1)]
    for i, features in enumerate(decoder):
      x = up(features, False, self.dtype, f'decoder_{i}')(x)
      x = nn.relu(batch_norm(train, self.dtype, f'decoder_bn_{i}')(x))
    x = up(3, True, self.dtype, f'decoder_{len(decoder)}')(x)
    return nn.sigmoid(x[:, :h, :w].astype(jnp.float32))


class BackboneDiscriminator(nn.Module):
  """The GAN discriminator: [N,H,W,3] in [0,1] -> logits [N] (BCE's sigmoid is in the loss), any H, W.

  backbone='conv': conv 4x4/2 to num_features + LeakyReLU 0.2, then num_layers - 1 x (conv 4x4/2 no
  bias, BN, LeakyReLU 0.2) doubling the width; backbone='resnet18'|'vgg16': ImageNet normalisation, edge
  padding to a multiple of 32, the feature extractor (submodule `backbone`). Then global average pooling
  and one dense logit.
  """
  backbone: str = 'conv'
  num_features: int = 64
  num_layers: int = 3
  scale: int = 1
  dtype: Any = jnp.float32

  def __post_init__(self):
    super().__post_init__()
    check_scale(self)
    check_backbone(self)

  @property
  def input_multiple(self) -> int:
    return 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.astype(self.dtype)
    if self.backbone == 'conv':
      for i in range(self.num_layers):
        x = down(self.num_features * 2 ** i, i == 0, self.dtype, f'conv_{i}')(x)
        x = x if i == 0 else batch_norm(train, self.dtype, f'bn_{i}')(x)
        x = nn.leaky_relu(x, 0.2)
    else:
      x = pad_to_multiple(imagenet_normalize(x), BACKBONE_STRIDE)
      x = BACKBONES[self.backbone](dtype=self.dtype, name='backbone')(x, train)
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return nn.Dense(1, dtype=self.dtype, param_dtype=jnp.float32, name='dense')(x)[:, 0].astype(jnp.float32)
