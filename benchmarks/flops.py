"""Analytic FLOP counts (2 x multiply-adds of the convs and dense layers) for the ESRGAN networks,
to cross-check XLA's cost analysis. Elementwise work (activations, adds, norms, losses) is left out."""

from enhance_jax.models.vgg import VGG19_CHANNELS, VGG19_LAYERS, convs_needed

POOL_AFTER = ('conv1_2', 'conv2_2', 'conv3_4', 'conv4_4')


def conv(h, w, cin, cout, k=3):
  return 2 * h * w * k * k * cin * cout


def rrdbnet(h, w, m):
  """Forward FLOPs of RRDBNet (config section M) on one LR image of h x w."""
  nf, gc = m.num_features, m.growth_channels
  cin = 3
  if m.scale in (1, 2):
    f = 4 // m.scale
    h, w, cin = h // f, w // f, 3 * f * f
  rdb = sum(conv(h, w, nf + i * gc, gc) for i in range(4)) + conv(h, w, nf + 4 * gc, nf)
  total = conv(h, w, cin, nf) + m.num_blocks * 3 * rdb + conv(h, w, nf, nf)
  total += conv(2 * h, 2 * w, nf, nf) + conv(4 * h, 4 * w, nf, nf)  # conv_up1, conv_up2
  return total + conv(4 * h, 4 * w, nf, nf) + conv(4 * h, 4 * w, nf, 3)  # conv_hr, conv_last


def discriminator(h, w, d):
  """Forward FLOPs of the VGG-style discriminator (config section D) on one h x w image."""
  total, cin = 0, 3
  for i, mult in enumerate((1, 1, 2, 2, 4, 4, 8, 8)):
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
  """FLOPs of one train step: backward = 2 x forward (input and weight gradients).

  gan: G fwd+bwd (3 F_G); D forward on HR and SR (2 F_D), D's input gradient on SR for G (F_D),
  D's weight and input gradients on HR and SR for D (4 F_D); VGG forward on HR and SR plus the
  input gradient on SR (3 F_V).
  """
  lr = patch // config.model.scale
  g = rrdbnet(lr, lr, config.model)
  if stage == 'pretrain':
    return batch * 3 * g
  d = discriminator(patch, patch, config.discriminator)
  v = vgg19(patch, patch, config.loss.content_layer) if config.loss.gan.get('content', 0) else 0
  return batch * (3 * g + 7 * d + 3 * v)
