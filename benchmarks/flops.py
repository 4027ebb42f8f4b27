"""Analytic FLOP counts (2 x multiply-adds of the convs and dense layers) for the ESRGAN networks,
to cross-check XLA's cost analysis. Elementwise work (activations, adds, norms, losses) is left out,
and a conv counts every tap, padding included: XLA counts only the taps inside the image, 4% fewer
for a 3x3 conv at 32x32, 16% fewer at 8x8."""

from enhance_jax.models.vgg import VGG19_CHANNELS, VGG19_LAYERS, convs_needed

POOL_AFTER = ('conv1_2', 'conv2_2', 'conv3_4', 'conv4_4')
D_MULTS = (1, 1, 2, 2, 4, 4, 8, 8)


def conv(h, w, cin, cout, k=3):
  return 2 * h * w * k * k * cin * cout


def _rrdbnet_input(h, w, scale):
  """(h, w, channels) of what conv_first sees: x1/x2 pixel-unshuffle the LR image first."""
  if scale in (1, 2):
    f = 4 // scale
    return h // f, w // f, 3 * f * f
  return h, w, 3


def rrdbnet_first_conv(h, w, m):
  h, w, cin = _rrdbnet_input(h, w, m.scale)
  return conv(h, w, cin, m.num_features)


def rrdbnet(h, w, m):
  """Forward FLOPs of RRDBNet (config section M) on one LR image of h x w."""
  nf, gc = m.num_features, m.growth_channels
  first = rrdbnet_first_conv(h, w, m)
  h, w, _ = _rrdbnet_input(h, w, m.scale)
  rdb = sum(conv(h, w, nf + i * gc, gc) for i in range(4)) + conv(h, w, nf + 4 * gc, nf)
  total = first + m.num_blocks * 3 * rdb + conv(h, w, nf, nf)
  total += conv(2 * h, 2 * w, nf, nf) + conv(4 * h, 4 * w, nf, nf)  # conv_up1, conv_up2
  return total + conv(4 * h, 4 * w, nf, nf) + conv(4 * h, 4 * w, nf, 3)  # conv_hr, conv_last


def discriminator_first_conv(h, w, d):
  return conv(h, w, 3, d.num_features * D_MULTS[0])


def discriminator(h, w, d):
  """Forward FLOPs of the VGG-style discriminator (config section D) on one h x w image."""
  total, cin = 0, 3
  for i, mult in enumerate(D_MULTS):
    if i % 2:
      h, w = -(-h // 2), -(-w // 2)
    total += conv(h, w, cin, d.num_features * mult)
    cin = d.num_features * mult
  return total + 2 * cin * d.dense_features + 2 * d.dense_features


def vgg19(h, w, layer):
  """Forward FLOPs of VGG19 features up to LAYER on one h x w image."""
  total, cin = 0, 3
  for name in convs_needed((layer,)):
    total += conv(h, w, cin, VGG19_CHANNELS[name])
    cin = VGG19_CHANNELS[name]
    if name in POOL_AFTER and name != VGG19_LAYERS[-1]:
      h, w = h // 2, w // 2
  return total


def train_step(config, stage, batch, patch):
  """FLOPs of one train step: a backward pass is an input and a weight gradient, each the forward's
  FLOPs, less the input gradients nobody uses (which JAX never emits).

  G: forward, weight gradient, input gradient but for conv_first's (LR needs none): 3 F_G - F_G0.
  gan: D forward on HR and SR (2 F_D); D's input gradient on SR for G (F_D); D's weight and input
  gradients on HR and SR for D, but for conv0's input gradient (4 F_D - 2 F_D0); VGG forward on HR
  and SR plus the input gradient on SR (3 F_V), also in pretrain when its loss has a content term.
  None for generators other than RRDBNet (their FLOPs come from XLA's cost analysis alone).
  """
  if config.model.name != 'rrdbnet':
    return None
  lr = patch // config.model.scale
  g = 3 * rrdbnet(lr, lr, config.model) - rrdbnet_first_conv(lr, lr, config.model)
  weights = config.loss.pretrain if stage == 'pretrain' else config.loss.gan
  v = 3 * vgg19(patch, patch, config.loss.content_layer) if weights.get('content', 0) else 0
  if stage == 'pretrain':
    return batch * (g + v)
  d_cfg = config.discriminator
  d = 7 * discriminator(patch, patch, d_cfg) - 2 * discriminator_first_conv(patch, patch, d_cfg)
  return batch * (g + d + v)
