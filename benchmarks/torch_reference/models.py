"""PyTorch twins of enhance_jax's ESRGAN modules (torch only): same functions, NCHW, BasicSR names.

RRDBNet keys match BasicSR's rrdbnet_arch (`esrgan_state_dict` renames them to the ESRGAN release's),
VGG19Features holds torchvision's `features` Sequential, and VGGStyleDiscriminator mirrors
enhance_jax.models.discriminator (conv{i}, bn{i}, dense1, dense2). SRVGGNetCompact (Real-ESRGAN),
MSRResNet and EDSR (BasicSR) and EDSR_PT (EDSR-PyTorch's names) are the released generators that
enhance_jax.convert imports.
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


# ESRGAN's release names (xinntao/ESRGAN RRDBNet_arch) for BasicSR's top-level RRDBNet convs.
ESRGAN_NAMES = {'conv_body': 'trunk_conv', 'conv_up1': 'upconv1', 'conv_up2': 'upconv2',
                'conv_hr': 'HRconv'}


def esrgan_state_dict(sd):
  """An RRDBNet state_dict under ESRGAN's release names: body.{i}.rdb{j} -> RRDB_trunk.{i}.RDB{j},
  conv_body -> trunk_conv, conv_up1/2 -> upconv1/2, conv_hr -> HRconv."""
  out = {}
  for key, value in sd.items():
    head, _, rest = key.partition('.')
    if head == 'body':
      i, rdb, rest = rest.split('.', 2)
      key = f"RRDB_trunk.{i}.{rdb.replace('rdb', 'RDB')}.{rest}"
    elif head in ESRGAN_NAMES:
      key = f'{ESRGAN_NAMES[head]}.{rest}'
    out[key] = value
  return out


# ---------------------------------------------------------------- SRVGGNetCompact, MSRResNet, EDSR


class SRVGGNetCompact(nn.Module):
  """Real-ESRGAN's compact net: `body` ModuleList of convs (even indices) and per-channel PReLUs (odd),
  a pixel shuffle, plus the nearest-upsampled input."""

  def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=4):
    super().__init__()
    self.upscale = upscale
    self.body = nn.ModuleList([conv3x3(num_in_ch, num_feat), nn.PReLU(num_parameters=num_feat)])
    for _ in range(num_conv):
      self.body.extend([conv3x3(num_feat, num_feat), nn.PReLU(num_parameters=num_feat)])
    self.body.append(conv3x3(num_feat, num_out_ch * upscale * upscale))

  def forward(self, x):
    out = x
    for layer in self.body:
      out = layer(out)
    return F.pixel_shuffle(out, self.upscale) + F.interpolate(x, scale_factor=self.upscale,
                                                               mode='nearest')


class ResidualBlockNoBN(nn.Module):
  """conv-ReLU-conv scaled by res_scale plus the identity (BasicSR arch_util names conv1, conv2)."""

  def __init__(self, num_feat=64, res_scale=1.0):
    super().__init__()
    self.res_scale = res_scale
    self.conv1 = conv3x3(num_feat, num_feat)
    self.conv2 = conv3x3(num_feat, num_feat)

  def forward(self, x):
    return x + self.conv2(F.relu(self.conv1(x))) * self.res_scale


class MSRResNet(nn.Module):
  """BasicSR's modified SRResNet (srresnet_arch): x2/x3 one upconv1, x4 upconv1 and upconv2."""

  def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, upscale=4):
    super().__init__()
    self.upscale = upscale
    self.conv_first = conv3x3(num_in_ch, num_feat)
    self.body = nn.Sequential(*[ResidualBlockNoBN(num_feat) for _ in range(num_block)])
    self.factors = (2, 2) if upscale == 4 else (upscale,)
    for j, factor in enumerate(self.factors, 1):
      setattr(self, f'upconv{j}', conv3x3(num_feat, num_feat * factor * factor))
    self.conv_hr = conv3x3(num_feat, num_feat)
    self.conv_last = conv3x3(num_feat, num_out_ch)

  def forward(self, x):
    out = self.body(F.leaky_relu(self.conv_first(x), 0.1))
    for j, factor in enumerate(self.factors, 1):
      out = F.leaky_relu(F.pixel_shuffle(getattr(self, f'upconv{j}')(out), factor), 0.1)
    out = self.conv_last(F.leaky_relu(self.conv_hr(out), 0.1))
    return out + F.interpolate(x, scale_factor=self.upscale, mode='bilinear', align_corners=False)


def pixel_shuffle_upsampler(num_feat, scale):
  """Sequential of conv(4*nf)+PixelShuffle(2) per doubling, or conv(9*nf)+PixelShuffle(3) for x3:
  convs at indices 0, 2, 4 (BasicSR's Upsample, EDSR-PyTorch's Upsampler without act)."""
  factors = (3,) if scale == 3 else (2,) * (scale.bit_length() - 1)
  layers = []
  for factor in factors:
    layers += [conv3x3(num_feat, num_feat * factor * factor), nn.PixelShuffle(factor)]
  return nn.Sequential(*layers)


EDSR_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class EDSR(nn.Module):
  """BasicSR's edsr_arch: conv_first, body.{i}.conv1/conv2, conv_after_body, upsample.{0,2,..},
  conv_last; input [0,1], mean shift in [0, img_range]."""

  def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, upscale=4, res_scale=1.0,
               img_range=255.0, rgb_mean=EDSR_RGB_MEAN):
    super().__init__()
    self.img_range = img_range
    self.register_buffer('mean', torch.tensor(rgb_mean).view(1, 3, 1, 1), persistent=False)
    self.conv_first = conv3x3(num_in_ch, num_feat)
    self.body = nn.Sequential(*[ResidualBlockNoBN(num_feat, res_scale) for _ in range(num_block)])
    self.conv_after_body = conv3x3(num_feat, num_feat)
    self.upsample = pixel_shuffle_upsampler(num_feat, upscale)
    self.conv_last = conv3x3(num_feat, num_out_ch)

  def forward(self, x):
    x = self.conv_first((x - self.mean) * self.img_range)
    x = self.conv_last(self.upsample(self.conv_after_body(self.body(x)) + x))
    return x / self.img_range + self.mean


class MeanShift(nn.Conv2d):
  """EDSR-PyTorch's constant 1x1 conv: x + sign * rgb_range * mean (rgb_std 1)."""

  def __init__(self, rgb_range, sign=-1, rgb_mean=EDSR_RGB_MEAN):
    super().__init__(3, 3, kernel_size=1)
    with torch.no_grad():
      self.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
      self.bias.copy_(sign * rgb_range * torch.tensor(rgb_mean))
    self.requires_grad_(False)


class EDSRResBlock(nn.Module):
  """EDSR-PyTorch's ResBlock: `body` Sequential conv, ReLU, conv; times res_scale plus the input."""

  def __init__(self, n_feats, res_scale=1.0):
    super().__init__()
    self.res_scale = res_scale
    self.body = nn.Sequential(conv3x3(n_feats, n_feats), nn.ReLU(True), conv3x3(n_feats, n_feats))

  def forward(self, x):
    return self.body(x) * self.res_scale + x


class EDSR_PT(nn.Module):  # pylint: disable=invalid-name
  """EDSR-PyTorch's model/edsr.py names: sub_mean, head.0, body.{i}.body.{0,2}, body.{n}, tail.0.{0,2},
  tail.1, add_mean. Its images are in [0, rgb_range] (255), not [0, 1]."""

  def __init__(self, n_feats=64, n_resblocks=16, scale=4, res_scale=1.0, rgb_range=255):
    super().__init__()
    self.sub_mean = MeanShift(rgb_range, -1)
    self.add_mean = MeanShift(rgb_range, 1)
    self.head = nn.Sequential(conv3x3(3, n_feats))
    self.body = nn.Sequential(*[EDSRResBlock(n_feats, res_scale) for _ in range(n_resblocks)],
                              conv3x3(n_feats, n_feats))
    self.tail = nn.Sequential(pixel_shuffle_upsampler(n_feats, scale), conv3x3(n_feats, 3))

  def forward(self, x):
    x = self.head(self.sub_mean(x))
    return self.add_mean(self.tail(self.body(x) + x))


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
