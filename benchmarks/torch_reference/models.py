"""PyTorch twins of enhance_jax's ESRGAN modules (torch only): same functions, NCHW, BasicSR names.

RRDBNet keys match BasicSR's rrdbnet_arch, VGG19Features holds torchvision's `features` Sequential,
and VGGStyleDiscriminator mirrors enhance_jax.models.discriminator (conv{i}, bn{i}, dense1, dense2).
"""

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's vgg19 `features` config: output widths, 'M' for a 2x2 max-pool.
VGG19_CFG = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M',
             512, 512, 512, 512, 'M', 512, 512, 512, 512, 'M')


def conv3x3(c_in, c_out, bias=True, stride=1):
  return nn.Conv2d(c_in, c_out, 3, stride, 1, bias=bias)


def lrelu(x):
  """LeakyReLU(0.2) in place, as BasicSR; only ever applied to a fresh conv/BN/linear output."""
  return F.leaky_relu(x, 0.2, inplace=True)


# ---------------------------------------------------------------- RRDBNet


class ResidualDenseBlock(nn.Module):
  """Five densely connected 3x3 convs; output scaled by `residual_scale` and added to the input."""

  def __init__(self, num_feat=64, num_grow_ch=32, residual_scale=0.2):
    super().__init__()
    self.residual_scale = residual_scale
    for k in range(1, 5):
      setattr(self, f'conv{k}', conv3x3(num_feat + (k - 1) * num_grow_ch, num_grow_ch))
    self.conv5 = conv3x3(num_feat + 4 * num_grow_ch, num_feat)

  def forward(self, x):
    features = [x]
    for k in range(1, 5):
      features.append(lrelu(getattr(self, f'conv{k}')(torch.cat(features, 1))))
    return x + self.residual_scale * self.conv5(torch.cat(features, 1))


class RRDB(nn.Module):
  """Residual in Residual Dense Block: three dense blocks inside one more scaled residual."""

  def __init__(self, num_feat=64, num_grow_ch=32, residual_scale=0.2):
    super().__init__()
    self.residual_scale = residual_scale
    self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch, residual_scale)
    self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch, residual_scale)
    self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch, residual_scale)

  def forward(self, x):
    return x + self.residual_scale * self.rdb3(self.rdb2(self.rdb1(x)))


class RRDBNet(nn.Module):
  """LR [N,3,h,w] in [0,1] -> SR [N,3,h*scale,w*scale]; x1/x2 pixel-unshuffle the input first."""

  def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=4,
               residual_scale=0.2):
    super().__init__()
    self.scale = scale
    if scale in (1, 2):
      num_in_ch *= (4 // scale) ** 2
    self.conv_first = conv3x3(num_in_ch, num_feat)
    self.body = nn.Sequential(
        *[RRDB(num_feat, num_grow_ch, residual_scale) for _ in range(num_block)])
    self.conv_body = conv3x3(num_feat, num_feat)
    self.conv_up1 = conv3x3(num_feat, num_feat)
    self.conv_up2 = conv3x3(num_feat, num_feat)
    self.conv_hr = conv3x3(num_feat, num_feat)
    self.conv_last = conv3x3(num_feat, num_out_ch)

  def forward(self, x):
    if self.scale in (1, 2):
      x = F.pixel_unshuffle(x, 4 // self.scale)
    feat = self.conv_first(x)
    feat = feat + self.conv_body(self.body(feat))
    feat = lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode='nearest')))
    feat = lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode='nearest')))
    return self.conv_last(lrelu(self.conv_hr(feat)))


# ---------------------------------------------------------------- discriminator


class VGGStyleDiscriminator(nn.Module):
  """HR [N,3,H,W] in [0,1] -> logits [N]: 8 convs (strides 1, 2, ...), BatchNorm, GAP, 2 dense."""

  def __init__(self, num_in_ch=3, num_feat=64, dense_features=1024, norm='batch'):
    super().__init__()
    widths = [num_feat * m for m in (1, 1, 2, 2, 4, 4, 8, 8)]
    c_in = num_in_ch
    for i, width in enumerate(widths):
      bias = norm == 'none' or i == 0
      setattr(self, f'conv{i}', conv3x3(c_in, width, bias=bias, stride=1 + i % 2))
      if norm == 'batch' and i > 0:  # torch momentum 0.1 == flax momentum 0.9
        setattr(self, f'bn{i}', nn.BatchNorm2d(width, eps=1e-5, momentum=0.1))
      c_in = width
    self.num_convs = len(widths)
    self.dense1 = nn.Linear(c_in, dense_features)
    self.dense2 = nn.Linear(dense_features, 1)

  def forward(self, x):
    for i in range(self.num_convs):
      x = getattr(self, f'conv{i}')(x)
      if hasattr(self, f'bn{i}'):
        x = getattr(self, f'bn{i}')(x)
      x = lrelu(x)
    x = x.float().mean((2, 3))
    return self.dense2(lrelu(self.dense1(x)))[:, 0].float()


# ---------------------------------------------------------------- VGG19 and losses


def vgg19_layer_index(layer, before_activation=True):
  """Index in torchvision's vgg19 `features` of the module giving `layer` ('conv5_4', 'relu5_4')."""
  block, num = (int(s) for s in layer[4:].split('_'))
  index, b, n = 0, 1, 0
  for v in VGG19_CFG:
    if v == 'M':
      b, n, index = b + 1, 0, index + 1
      continue
    n += 1
    if (b, n) == (block, num):
      return index + (1 if layer.startswith('relu') or not before_activation else 0)
    index += 2
  raise ValueError(f'unknown VGG19 layer {layer!r}')


class VGG19Features(nn.Module):
  """torchvision's vgg19 `features` (keys `features.{i}.weight`), truncated after `layer`."""

  def __init__(self, layer='conv5_4', before_activation=True, use_input_norm=True):
    super().__init__()
    last = vgg19_layer_index(layer, before_activation)
    modules, c_in = [], 3
    for v in VGG19_CFG:
      if v == 'M':
        modules.append(nn.MaxPool2d(2, 2))
      else:
        modules += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU(inplace=True)]
        c_in = v
    self.features = nn.Sequential(*modules[:last + 1])
    self.use_input_norm = use_input_norm
    self.register_buffer('mean', torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
    self.register_buffer('std', torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

  def forward(self, x):
    if self.use_input_norm:
      x = (x - self.mean) / self.std
    return self.features(x)


class PerceptualLoss(nn.Module):
  """L1 between frozen VGG19 features of SR and HR (BasicSR's PerceptualLoss with one layer)."""

  def __init__(self, layer='conv5_4', before_activation=True, use_input_norm=True):
    super().__init__()
    self.vgg = VGG19Features(layer, before_activation, use_input_norm).requires_grad_(False).eval()

  def forward(self, sr, hr=None, hr_features=None):
    if hr_features is None:
      with torch.no_grad():
        hr_features = self.vgg(hr)
    return F.l1_loss(self.vgg(sr), hr_features)


def charbonnier(pred, target, eps=1e-3):
  return torch.sqrt(torch.square(pred - target) + eps * eps).mean()


PIXEL_CRITERIA = {'l1': F.l1_loss, 'l2': F.mse_loss, 'mse': F.mse_loss, 'charbonnier': charbonnier}


def bce(logits, target):
  """BCE-with-logits against a constant target."""
  return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def generator_adversarial(real, fake, gan_type):
  """G's loss; relativistic average: real should look less real than fake (pass `real` detached)."""
  if gan_type == 'vanilla':
    return bce(fake, 1.0)
  if gan_type == 'relativistic':
    return 0.5 * (bce(real - fake.mean(), 0.0) + bce(fake - real.mean(), 1.0))
  raise ValueError(f'unknown loss.gan_type {gan_type!r}')


def discriminator_adversarial(real, fake, gan_type):
  """D's loss: vanilla BCE or relativistic average (gradient through both means, as enhance_jax)."""
  if gan_type == 'vanilla':
    return bce(real, 1.0) + bce(fake, 0.0)
  if gan_type == 'relativistic':
    return 0.5 * (bce(real - fake.mean(), 1.0) + bce(fake - real.mean(), 0.0))
  raise ValueError(f'unknown loss.gan_type {gan_type!r}')
