"""Reports 003/004 networks: SRResNet (SRGAN), the SRGAN discriminator as a VGGStyleDiscriminator config,
DCGAN-SR, and report 004's refine autoencoder / vanilla GAN. Shapes at the reports' sizes, parameter
counts worked out by hand from the layer lists, a PyTorch twin of SRResNet, dtypes and BatchNorm state."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import fast_jit
from enhance_jax import models
from enhance_jax.models.dcgan_sr import DCGANSRDiscriminator, DCGANSRGenerator
from enhance_jax.models.discriminator import VGGStyleDiscriminator
from enhance_jax.models.refine import RefineAutoencoder, RefineDiscriminator, RefineGenerator
from enhance_jax.models.rrdbnet import pixel_unshuffle
from enhance_jax.models.layers import pixel_shuffle
from enhance_jax.models.srresnet import SRResNet


def conv(k, cin, cout, bias=True):
  """Parameters of a k x k conv (or transposed conv)."""
  return k * k * cin * cout + (cout if bias else 0)


def bn(c):
  """BatchNorm parameters: scale and bias (its mean/var live in batch_stats, not params)."""
  return 2 * c


def dense(cin, cout):
  return cin * cout + cout


PRELU = 1  # one learnable slope per PReLU, like torch's nn.PReLU()


def n_params(variables):
  return sum(x.size for x in jax.tree.leaves(variables['params']))


def init_shapes(module, shape):
  """(output, variables) as ShapeDtypeStructs: nothing is compiled or computed."""
  return jax.eval_shape(module.init_with_output, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))


def init(module, x):
  """module.init compiled once at -O0 (eager init compiles every initializer separately, ~10x slower)."""
  return fast_jit(module.init, jax.random.key(0), x)(jax.random.key(0), x)


def apply(module, variables, x, **kwargs):
  fn = functools.partial(module.apply, **kwargs)
  return fast_jit(fn, variables, x)(variables, x)


# Full-size parameter counts, by hand from the layer lists.
def srresnet_count(blocks):
  head = conv(9, 3, 64) + PRELU
  block = conv(3, 64, 64, bias=False) + bn(64) + PRELU + conv(3, 64, 64, bias=False) + bn(64)
  body_tail = conv(3, 64, 64, bias=False) + bn(64)
  upsample = conv(3, 64, 256) + PRELU
  return head + blocks * block + body_tail + 2 * upsample + conv(9, 64, 3)


SRGAN_D_CONVS = (conv(3, 3, 64) + conv(3, 64, 64, False) + bn(64) + conv(3, 64, 128, False) + bn(128)
                 + conv(3, 128, 128, False) + bn(128) + conv(3, 128, 256, False) + bn(256)
                 + conv(3, 256, 256, False) + bn(256) + conv(3, 256, 512, False) + bn(512)
                 + conv(3, 512, 512, False) + bn(512))
DCGAN_SR_G = (conv(4, 3, 128)
              + 5 * (2 * (conv(3, 128, 128, False) + bn(128)) + bn(128) + conv(3, 128, 128))
              + conv(3, 128, 128) + conv(3, 128, 64) + conv(3, 64, 3))
DCGAN_SR_D = (conv(3, 3, 64) + conv(3, 64, 64, False) + bn(64) + conv(3, 64, 128, False) + bn(128)
              + conv(3, 128, 256, False) + bn(256) + conv(3, 256, 512, False) + bn(512)
              + 2 * (conv(3, 512, 512, False) + bn(512)) + dense(4 * 4 * 512, 1024) + dense(1024, 1))
REFINE_AE = (conv(3, 3, 64) + conv(3, 64, 64) + conv(3, 64, 128) + conv(3, 128, 128) + conv(3, 128, 256)
             + conv(3, 256, 256) + conv(3, 256, 128) + conv(3, 128, 128) + conv(3, 128, 64) + conv(3, 64, 3))
REFINE_G = (conv(9, 3, 64) + PRELU + 4 * (conv(3, 64, 64) + PRELU) + 2 * (conv(3, 64, 256) + PRELU)
            + conv(9, 64, 3))
REFINE_D = (conv(3, 3, 64) + conv(3, 64, 128, False) + bn(128) + conv(3, 128, 256, False) + bn(256)
            + conv(3, 256, 512, False) + bn(512) + dense(512, 1))

FULL_SIZE = [  # module, input shape, output shape, hand count
    (SRResNet(), (2, 16, 16, 3), (2, 64, 64, 3), srresnet_count(16)),
    (SRResNet(num_blocks=6), (2, 16, 16, 3), (2, 64, 64, 3), srresnet_count(6)),
    (DCGANSRGenerator(), (2, 16, 16, 3), (2, 64, 64, 3), DCGAN_SR_G),
    (RefineAutoencoder(), (1, 160, 160, 3), (1, 640, 640, 3), REFINE_AE),
    (RefineGenerator(), (1, 160, 160, 3), (1, 640, 640, 3), REFINE_G),
    (VGGStyleDiscriminator(pool='flatten'), (2, 64, 64, 3), (2,),
     SRGAN_D_CONVS + dense(4 * 4 * 512, 1024) + dense(1024, 1)),
    (VGGStyleDiscriminator(), (2, 64, 64, 3), (2,), SRGAN_D_CONVS + dense(512, 1024) + dense(1024, 1)),
    (DCGANSRDiscriminator(), (2, 64, 64, 3), (2,), DCGAN_SR_D),
    (RefineDiscriminator(), (2, 640, 640, 3), (2,), REFINE_D),
]


@pytest.mark.parametrize('module,in_shape,out_shape,count', FULL_SIZE,
                         ids=['srresnet16', 'srresnet6', 'dcgan_sr_g', 'refine_ae', 'refine_g', 'srgan_d',
                              'vgg_style_d', 'dcgan_sr_d', 'refine_d'])
def test_full_size_shapes_and_parameter_counts(module, in_shape, out_shape, count):
  out, variables = init_shapes(module, in_shape)
  assert out.shape == out_shape and out.dtype == jnp.float32
  assert n_params(variables) == count
  assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}


def test_hand_counts_are_what_the_reports_imply():
  # The totals, summed by hand, check the expressions above (SRResNet-16 is the SRGAN paper's ~1.5M net):
  # 15,617 head + 16 x 73,985 blocks + 36,992 conv+BN + 2 x 147,713 upsamplers + 15,555 tail.
  assert srresnet_count(16) == 1_547_350 and srresnet_count(6) == 807_500
  assert SRGAN_D_CONVS == 4_687_232  # + 8,389,632 dense1 (flatten) or 525,312 (mean) + 1,025 dense2
  assert DCGAN_SR_G == 2_445_699 and DCGAN_SR_D == 14_700_161
  assert REFINE_AE == 1_663_555 and REFINE_G == 474_314 and REFINE_D == 1_552_385


def test_srgan_discriminator_flattens_4x4x512_at_64():
  _, variables = init_shapes(VGGStyleDiscriminator(pool='flatten'), (2, 64, 64, 3))
  assert variables['params']['dense1']['kernel'].shape == (8192, 1024)
  with pytest.raises(ValueError, match='pool'):
    init_shapes(VGGStyleDiscriminator(pool='max'), (2, 64, 64, 3))


def test_default_vgg_style_discriminator_tree_is_unchanged():
  _, variables = init_shapes(VGGStyleDiscriminator(), (2, 32, 32, 3))
  shapes = jax.tree.map(lambda a: a.shape, variables)
  widths = [3, 64, 64, 128, 128, 256, 256, 512, 512]
  want = {f'conv{i}': {'kernel': (3, 3, widths[i], widths[i + 1])} for i in range(8)}
  want['conv0']['bias'] = (64,)
  want.update({f'bn{i}': {'scale': (widths[i + 1],), 'bias': (widths[i + 1],)} for i in range(1, 8)})
  want.update(dense1={'kernel': (512, 1024), 'bias': (1024,)}, dense2={'kernel': (1024, 1), 'bias': (1,)})
  assert shapes['params'] == want
  assert shapes['batch_stats'] == {f'bn{i}': {'mean': (widths[i + 1],), 'var': (widths[i + 1],)}
                                   for i in range(1, 8)}


TINY_GENERATORS = [SRResNet(num_blocks=2, num_features=8), DCGANSRGenerator(num_features=8, num_blocks=3),
                   RefineGenerator(num_features=8, num_layers=2), RefineAutoencoder(num_features=4)]


@pytest.mark.parametrize('model', TINY_GENERATORS, ids=lambda m: type(m).__name__)
def test_tanh_and_sigmoid_outputs_lie_in_unit_range(model):
  x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 3))
  variables = init(model, x)
  y = apply(model, variables, 3 * x - 1)  # out-of-range input, to push the output activation
  assert y.shape == (2, 32, 32, 3) and y.dtype == jnp.float32
  slopes = [v for p, v in jax.tree_util.tree_flatten_with_path(variables)[0] if p[-1].key == 'negative_slope']
  assert all(v.shape == () and float(v) == 0.25 for v in slopes)  # PReLU as torch's nn.PReLU() default
  if not isinstance(model, RefineAutoencoder):  # the autoencoder's output is linear
    assert 0 <= float(y.min()) and float(y.max()) <= 1


@pytest.mark.parametrize('model', TINY_GENERATORS[:2], ids=lambda m: type(m).__name__)
def test_batchnorm_generators_update_batch_stats_in_training(model):
  x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 3))
  variables = init(model, x)
  assert 'batch_stats' in variables
  y, updates = apply(model, variables, x, train=True, mutable=['batch_stats'])
  assert y.shape == (2, 32, 32, 3)
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), updates['batch_stats'], variables['batch_stats'])
  assert all(jax.tree.leaves(changed))


@pytest.mark.slow
@pytest.mark.parametrize('model', [
    *TINY_GENERATORS,
    VGGStyleDiscriminator(num_features=8, dense_features=16, pool='flatten'),
    DCGANSRDiscriminator(num_features=8, dense_features=16),
    RefineDiscriminator(num_features=8)], ids=lambda m: type(m).__name__)
def test_bf16_compute_returns_float32_with_float32_params(model):
  is_d = not hasattr(model, 'scale')
  x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3) if is_d else (2, 8, 8, 3))
  bf16 = model.clone(dtype=jnp.bfloat16)
  variables = init(bf16, x)
  assert {a.dtype for a in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  y = apply(bf16, variables, x)
  assert y.dtype == jnp.float32 and y.shape == ((2,) if is_d else (2, 32, 32, 3))
  assert bool(jnp.all(jnp.isfinite(y)))
  ref = apply(model, variables, x)
  np.testing.assert_allclose(y, ref, atol=0.1 * float(jnp.abs(ref).max()) + 0.05)


@pytest.mark.slow
def test_refine_autoencoder_bicubic_upsampling_differentiates():
  model = RefineAutoencoder(num_features=4)
  x = jax.random.uniform(jax.random.key(1), (1, 8, 8, 3))
  params = init(model, x)['params']
  grad_fn = jax.grad(lambda p: jnp.mean(model.apply({'params': p}, x) ** 2))
  grads = fast_jit(grad_fn, params)(params)
  for g in jax.tree.leaves(grads):
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0
  with pytest.raises(ValueError, match='scale 4 only'):
    init_shapes(RefineAutoencoder(scale=2), x.shape)
  with pytest.raises(ValueError, match='divisible by 4'):
    init_shapes(RefineAutoencoder(), (1, 10, 8, 3))


def test_scales_must_be_powers_of_two():
  with pytest.raises(ValueError, match='power of two'):
    init_shapes(SRResNet(scale=3), (1, 8, 8, 3))
  with pytest.raises(ValueError, match='num_blocks'):
    init_shapes(DCGANSRGenerator(num_blocks=2, num_features=8, scale=8), (1, 8, 8, 3))


@pytest.mark.parametrize('gen,disc,fields', [
    ('srresnet', 'vgg_style', {'num_blocks': 6}), ('dcgan_sr', 'dcgan_sr', {}),
    ('refine_ae', 'refine', {}), ('refine_gan', 'refine', {'num_layers': 3})])
def test_registry_builds_from_config_fields(gen, disc, fields):
  config = ml_collections.ConfigDict({'model': {'name': gen, **fields}, 'discriminator': {'name': disc},
                                      'train': {'precision': 'bf16'}})
  g, d = models.build_generator(config), models.build_discriminator(config)
  assert g.dtype == jnp.bfloat16 and d.dtype == jnp.bfloat16
  assert all(getattr(g, k) == v for k, v in fields.items())


def test_pixel_shuffle_matches_torch_and_inverts_unshuffle():
  torch = pytest.importorskip('torch')
  x = np.random.default_rng(0).normal(size=(2, 3, 5, 12)).astype(np.float32)  # NHWC, C = 3 * 2 * 2
  want = torch.nn.functional.pixel_shuffle(torch.from_numpy(x.transpose(0, 3, 1, 2)), 2).numpy()
  np.testing.assert_array_equal(np.asarray(pixel_shuffle(jnp.asarray(x), 2)), want.transpose(0, 2, 3, 1))
  np.testing.assert_array_equal(np.asarray(pixel_unshuffle(pixel_shuffle(jnp.asarray(x), 2), 2)), x)


def _torch_srresnet(torch, num_blocks, nf):
  """SRResNet in PyTorch with submodule names equal to the Flax ones."""
  nn = torch.nn

  class ResidualBlock(nn.Module):

    def __init__(self):
      super().__init__()
      self.conv1, self.bn1 = nn.Conv2d(nf, nf, 3, 1, 1, bias=False), nn.BatchNorm2d(nf)
      self.prelu = nn.PReLU()
      self.conv2, self.bn2 = nn.Conv2d(nf, nf, 3, 1, 1, bias=False), nn.BatchNorm2d(nf)

    def forward(self, x):
      return x + self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(x)))))

  class UpsampleBlock(nn.Module):

    def __init__(self):
      super().__init__()
      self.conv, self.prelu = nn.Conv2d(nf, 4 * nf, 3, 1, 1), nn.PReLU()

    def forward(self, x):
      return self.prelu(nn.functional.pixel_shuffle(self.conv(x), 2))

  class Net(nn.Module):

    def __init__(self):
      super().__init__()
      self.conv_first, self.prelu_first = nn.Conv2d(3, nf, 9, 1, 4), nn.PReLU()
      for i in range(num_blocks):
        setattr(self, f'body_{i}', ResidualBlock())
      self.conv_body, self.bn_body = nn.Conv2d(nf, nf, 3, 1, 1, bias=False), nn.BatchNorm2d(nf)
      self.upsample_0, self.upsample_1 = UpsampleBlock(), UpsampleBlock()
      self.conv_last = nn.Conv2d(nf, 3, 9, 1, 4)

    def forward(self, x):
      mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
      std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
      feat = self.prelu_first(self.conv_first((x - mean) / std))
      body = feat
      for i in range(num_blocks):
        body = getattr(self, f'body_{i}')(body)
      feat = feat + self.bn_body(self.conv_body(body))
      out = self.conv_last(self.upsample_1(self.upsample_0(feat)))
      return (torch.tanh(out) + 1) / 2

  return Net()


def _torch_state_dict(variables):
  """Flax SRResNet variables -> a PyTorch state_dict of the twin."""
  torch_names = {'kernel': 'weight', 'bias': 'bias', 'scale': 'weight', 'negative_slope': 'weight',
                 'mean': 'running_mean', 'var': 'running_var'}
  sd = {}
  for path, value in jax.tree_util.tree_flatten_with_path(variables)[0]:
    keys = [k.key for k in path][1:]  # drop the collection name
    value = np.asarray(value)
    if keys[-1] == 'kernel':
      value = value.transpose(3, 2, 0, 1)
    sd['.'.join(keys[:-1] + [torch_names[keys[-1]]])] = value.reshape(-1) if value.ndim == 0 else value
  return sd


@pytest.mark.parametrize('train', [False, True])
def test_srresnet_matches_pytorch_twin(train):
  torch = pytest.importorskip('torch')
  model = SRResNet(num_blocks=2, num_features=8)
  x = np.random.default_rng(0).uniform(size=(2, 6, 7, 3)).astype(np.float32)
  _, shapes = init_shapes(model, x.shape)
  rng = np.random.default_rng(1)  # random leaves (BN affine, running stats, slopes) so each one matters
  variables = jax.tree.map(lambda a: (rng.uniform(0.5, 1.5, a.shape) if a.ndim <= 1 else
                                      rng.normal(0, 0.1, a.shape)).astype(np.float32), shapes)
  twin = _torch_srresnet(torch, 2, 8)
  sd = _torch_state_dict(variables)
  twin_sd = twin.state_dict()
  assert sorted(k for k in twin_sd if not k.endswith('num_batches_tracked')) == sorted(sd)
  twin.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=False)
  twin.train(train)
  with torch.no_grad():
    want = twin(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
  got = apply(model, variables, x, train=train, mutable=['batch_stats'] if train else False)
  got = got[0] if train else got
  assert got.shape == (2, 24, 28, 3)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)
