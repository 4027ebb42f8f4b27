"""Report 001 (DL-IQIWA) networks: the CIFAR-10 denoising autoencoder and VAE, the Cats&Dogs
deconvolution net and ResNet-SR. Shapes at the report's sizes (32 -> 32 through an 8x8x2 bottleneck,
180 -> 360, 90 -> 360), parameter counts worked out by hand from the layer lists, the VAE's sampling,
ResNet-SR's dropout, the scale and size checks, and PyTorch twins of the authors' transposed-conv
geometry (github.com/mactat/DL-IQIWA)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import fast_jit
from enhance_jax.models.autoencoders import ConvDecoder, DeconvSR, DenoiseAutoencoder, DenoiseVAE, ResNetSR


def conv(k, cin, cout, bias=True):
  """Parameters of a k x k conv (or transposed conv)."""
  return k * k * cin * cout + (cout if bias else 0)


def bn(c):
  """BatchNorm parameters: scale and bias (its mean/var live in batch_stats, not params)."""
  return 2 * c


def n_params(variables):
  return sum(x.size for x in jax.tree.leaves(variables['params']))


def init_shapes(module, shape):
  """(output, variables) as ShapeDtypeStructs: nothing is compiled or computed."""
  return jax.eval_shape(module.init_with_output, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))


def run(fn, *args):
  """FN(*ARGS) compiled at -O0 (these tests are compile-bound)."""
  return fast_jit(fn, *args)(*args)


def init(module, x):
  return run(module.init, jax.random.key(0), x)


def images(shape, seed=0):
  return jax.random.uniform(jax.random.key(seed), shape, jnp.float32)


# Full-size parameter counts, by hand from the layer lists (k4 convs; widths 32, 16; latent 2).
AE_ENCODER = conv(4, 3, 32) + conv(4, 32, 16)                       # conv1, conv2
AE_DECODER = conv(4, 2, 16) + conv(4, 16, 32) + conv(4, 32, 3)       # deconv1..3
AE_COUNT = AE_ENCODER + conv(4, 16, 2) + AE_DECODER                  # + conv3 to the 2-channel code
VAE_COUNT = AE_ENCODER + conv(4, 16, 2 * 2) + AE_DECODER             # conv3 gives mean and logvar
DECONV_COUNT = conv(3, 3, 10) + conv(3, 10, 20) + conv(4, 20, 3)
RES_BLOCK = 2 * 2 * (conv(3, 64, 64, bias=False) + bn(64))           # 2 conv blocks of 2 conv-BN
RESNET_COUNT = conv(3, 3, 64) + 2 * RES_BLOCK + conv(3, 64, 3)


def test_autoencoder_at_report_size_has_8x8x2_bottleneck():
  model = DenoiseAutoencoder()
  out, variables = init_shapes(model, (2, 32, 32, 3))
  assert out.shape == (2, 32, 32, 3) and out.dtype == jnp.float32
  assert n_params(variables) == AE_COUNT == 20_581
  code = jax.eval_shape(functools.partial(model.apply, method='encode'), variables,
                        jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32))
  assert code.shape == (2, 8, 8, 2)
  assert 'batch_stats' not in variables


def test_autoencoder_inner_stride_2_is_the_authors_readme_network():
  """The README's summary: Conv2d 32@16x16, MaxPool 32@8x8, Conv2d 16@4x4, Conv2d 8@2x2, ConvTranspose2d
  16@4x4, Upsample 16@8x8, ConvTranspose2d 32@16x16, ConvTranspose2d 3@32x32; 'Total params: 23,659'."""
  model = DenoiseAutoencoder(latent_channels=8, inner_stride=2)
  out, variables = init_shapes(model, (1, 32, 32, 3))
  by_hand = (conv(4, 3, 32) + conv(4, 32, 16) + conv(4, 16, 8)
             + conv(4, 8, 16) + conv(4, 16, 32) + conv(4, 32, 3))
  assert n_params(variables) == by_hand == 23_659
  assert out.shape == (1, 32, 32, 3) and model.input_multiple == 16
  code = jax.eval_shape(functools.partial(model.apply, method='encode'), variables,
                        jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
  assert code.shape == (1, 2, 2, 8)


def test_vae_at_report_size():
  out, variables = init_shapes(DenoiseVAE(), (2, 32, 32, 3))
  assert set(out) == {'image', 'mean', 'logvar'}
  assert out['image'].shape == (2, 32, 32, 3)
  assert out['mean'].shape == out['logvar'].shape == (2, 8, 8, 2)
  assert {v.dtype for v in out.values()} == {jnp.dtype(jnp.float32)}
  assert n_params(variables) == VAE_COUNT == 21_095


def test_deconv_sr_180_to_360():
  out, variables = init_shapes(DeconvSR(), (2, 180, 180, 3))
  assert out.shape == (2, 360, 360, 3)
  assert n_params(variables) == DECONV_COUNT == 3_063


def test_resnet_sr_90_to_360():
  out, variables = init_shapes(ResNetSR(), (2, 90, 90, 3))
  assert out.shape == (2, 360, 360, 3)
  assert n_params(variables) == RESNET_COUNT == 299_459
  # BatchNorm running statistics: one mean and one var of 64 per BN, 2 BNs per conv block, 4 blocks.
  assert sum(x.size for x in jax.tree.leaves(variables['batch_stats'])) == 2 * 64 * 2 * 4


def test_compute_dtype_keeps_float32_params_and_outputs():
  for model, shape in ((DenoiseAutoencoder(dtype=jnp.bfloat16), (1, 32, 32, 3)),
                       (DenoiseVAE(dtype=jnp.bfloat16), (1, 32, 32, 3)),
                       (DeconvSR(dtype=jnp.bfloat16), (1, 12, 12, 3)),
                       (ResNetSR(dtype=jnp.bfloat16), (1, 6, 6, 3))):
    out, variables = init_shapes(model, shape)
    assert {x.dtype for x in jax.tree.leaves(variables['params'])} == {jnp.dtype(jnp.float32)}
    assert {x.dtype for x in jax.tree.leaves(out)} == {jnp.dtype(jnp.float32)}, type(model).__name__


@pytest.mark.parametrize('model, bad_scales', [
    (DenoiseAutoencoder(), (2, 4, 0)),
    (DenoiseVAE(), (2, 4)),
    (DeconvSR(), (1, 3, 4)),
    (ResNetSR(), (0, -4, 2.5)),
], ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else None)
def test_wrong_scale_is_a_value_error(model, bad_scales):
  for scale in bad_scales:
    with pytest.raises(ValueError, match='scale'):
      init_shapes(model.clone(scale=scale), (1, 16, 16, 3))


def test_autoencoders_reject_sizes_off_their_multiple():
  for model in (DenoiseAutoencoder(), DenoiseVAE()):
    with pytest.raises(ValueError, match='multiples of 4'):
      init_shapes(model, (1, 30, 32, 3))
  with pytest.raises(ValueError, match='multiples of 16'):
    init_shapes(DenoiseAutoencoder(latent_channels=8, inner_stride=2), (1, 24, 32, 3))


@pytest.mark.parametrize('model, factor, multiples', [
    (DenoiseAutoencoder(), 1, (3, 5)),
    (DenoiseAutoencoder(latent_channels=8, inner_stride=2), 1, (1, 3)),
    (DenoiseVAE(), 1, (3, 5)),
    (DeconvSR(), 2, (7, 5)),
    (ResNetSR(num_features=8), 4, (5, 3)),
], ids=['ae', 'ae_readme', 'vae', 'deconv', 'resnet'])
def test_runs_at_multiples_of_input_multiple_with_output_in_unit_range(model, factor, multiples):
  m = model.input_multiple
  assert isinstance(m, int) and not isinstance(m, bool) and m >= 1
  h, w = multiples[0] * m, multiples[1] * m
  x = images((2, h, w, 3))
  variables = init(model, x)
  out = run(model.apply, variables, x)
  image = out['image'] if isinstance(out, dict) else out
  assert image.shape == (2, h * factor, w * factor, 3)
  image = np.asarray(image)
  assert np.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
  assert image.std() > 0  # not a constant


@pytest.mark.slow
def test_every_parameter_gets_a_gradient():
  """A train-mode MSE step reaches every parameter leaf with a finite, nonzero gradient."""
  cases = ((DenoiseAutoencoder(), 1, (2, 8, 8, 3)), (DenoiseVAE(), 1, (2, 8, 8, 3)),
           (DeconvSR(), 2, (2, 5, 5, 3)), (ResNetSR(num_features=8), 4, (2, 3, 3, 3)))
  for model, factor, shape in cases:
    x = images(shape)
    variables = init(model, x)
    target = images((shape[0], shape[1] * factor, shape[2] * factor, 3), seed=1)

    def loss(params, variables=variables, model=model, x=x, target=target):
      out, _ = model.apply({**variables, 'params': params}, x, train=True, mutable=['batch_stats'],
                           rngs={'dropout': jax.random.key(1), 'sample': jax.random.key(2)})
      image = out['image'] if isinstance(out, dict) else out
      return jnp.mean((image - target) ** 2)

    grads = run(jax.grad(loss), variables['params'])
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
      g = np.asarray(g)
      assert np.isfinite(g).all() and np.abs(g).max() > 0, (type(model).__name__, path)


def test_vae_samples_with_the_sample_rng_and_uses_the_mean_in_eval():
  model = DenoiseVAE()
  x = images((2, 32, 32, 3))
  variables = init(model, x)

  def train_apply(v, x, key):
    return model.apply(v, x, train=True, rngs={'sample': key})

  step = fast_jit(train_apply, variables, x, jax.random.key(0))
  a, a2, b = (step(variables, x, jax.random.key(k)) for k in (1, 1, 2))
  for out in (a, b):
    assert np.isfinite(np.asarray(out['mean'])).all() and np.isfinite(np.asarray(out['logvar'])).all()
  np.testing.assert_array_equal(a['image'], a2['image'])          # same key, same sample
  assert np.abs(np.asarray(a['image']) - np.asarray(b['image'])).max() > 1e-4  # other key, other sample
  np.testing.assert_array_equal(a['mean'], b['mean'])             # sampling only moves z
  np.testing.assert_array_equal(a['logvar'], b['logvar'])

  evaluate = fast_jit(model.apply, variables, x)
  e1, e2 = evaluate(variables, x), evaluate(variables, x)          # no rng needed in eval
  np.testing.assert_array_equal(e1['image'], e2['image'])
  np.testing.assert_allclose(e1['mean'], a['mean'], atol=1e-6)
  assert np.abs(np.asarray(e1['image']) - np.asarray(a['image'])).max() > 1e-4
  decoded_mean = model.apply(variables, e1['mean'], method=lambda m, z: m.decoder(z))
  np.testing.assert_allclose(e1['image'], decoded_mean, atol=1e-6)  # eval decodes z = mean


def test_vae_reparameterisation_uses_exp_half_logvar():
  """With the encoder's last conv fixed to mean 0.3, logvar log(0.25), the decoder sees z ~ N(0.3, 0.5^2)."""
  model = DenoiseVAE()
  x = images((16, 32, 32, 3))
  variables = init(model, x)
  params = jax.tree.map(lambda p: p, variables['params'])
  conv3 = params['encoder']['conv3']
  conv3['kernel'] = jnp.zeros_like(conv3['kernel'])
  conv3['bias'] = jnp.array([0.3, 0.3, np.log(0.25), np.log(0.25)], jnp.float32)
  seen = []

  def spy(next_fun, args, kwargs, context):
    if isinstance(context.module, ConvDecoder) and context.method_name == '__call__':
      seen.append(args[0])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(spy):
    model.apply({'params': params}, x, train=True, rngs={'sample': jax.random.key(3)})
  z = np.asarray(seen[-1])
  assert z.shape == (16, 8, 8, 2)  # 2048 draws
  assert abs(z.mean() - 0.3) < 0.05 and abs(z.std() - 0.5) < 0.05, (z.mean(), z.std())


def test_resnet_sr_dropout_follows_the_dropout_rng_in_train_only():
  model = ResNetSR(num_features=8, dropout_rate=0.5)
  x = images((2, 6, 6, 3))
  variables = init(model, x)

  def train_apply(v, x, key):
    return model.apply(v, x, train=True, rngs={'dropout': key}, mutable=['batch_stats'])

  step = fast_jit(train_apply, variables, x, jax.random.key(0))
  (a, stats), (a2, _), (b, _) = (step(variables, x, jax.random.key(k)) for k in (1, 1, 2))
  np.testing.assert_array_equal(a, a2)
  assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-4
  # train mode updates the BatchNorm running statistics
  assert any(np.abs(np.asarray(s) - np.asarray(v)).max() > 0 for s, v in
             zip(jax.tree.leaves(stats['batch_stats']), jax.tree.leaves(variables['batch_stats'])))

  def eval_apply(v, x, key):
    return model.apply(v, x, rngs={'dropout': key})

  evaluate = fast_jit(eval_apply, variables, x, jax.random.key(0))
  e1, e2 = evaluate(variables, x, jax.random.key(1)), evaluate(variables, x, jax.random.key(2))
  np.testing.assert_array_equal(e1, e2)
  np.testing.assert_array_equal(e1, run(model.apply, variables, x))  # and needs no rng at all


def _torch_weights(params, names):
  """flax kernels (kh, kw, a, b) -> torch weights (b, a, kh, kw): Conv2d (out, in, ...) from (.., in, out)
  and ConvTranspose2d (in, out, ...) from transpose_kernel's (.., out, in) alike."""
  import torch  # pylint: disable=g-import-not-at-top
  flat = {}
  for name in names:
    layer = functools.reduce(lambda d, k: d[k], name.split('/'), params)
    flat[name] = (torch.from_numpy(np.asarray(layer['kernel']).transpose(3, 2, 0, 1).copy()),
                  torch.from_numpy(np.asarray(layer['bias']).copy()))
  return flat


def _load(torch_layer, weight_bias):
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    torch_layer.weight.copy_(weight_bias[0])
    torch_layer.bias.copy_(weight_bias[1])
  return torch_layer


def test_deconv_sr_matches_the_authors_pytorch_layers():
  """scripts/model_res_enh.py: ConvTranspose2d(3, 10, 3, 1, padding=1), (10, 20, 3, 2, padding=1),
  (20, 3, 4, 1, padding=1); relu, relu, sigmoid."""
  import torch  # pylint: disable=g-import-not-at-top
  model = DeconvSR()
  x = images((2, 9, 11, 3))
  variables = init(model, x)
  w = _torch_weights(variables['params'], ['deconv1', 'deconv2', 'deconv3'])
  d1 = _load(torch.nn.ConvTranspose2d(3, 10, 3, 1, padding=1), w['deconv1'])
  d2 = _load(torch.nn.ConvTranspose2d(10, 20, 3, 2, padding=1), w['deconv2'])
  d3 = _load(torch.nn.ConvTranspose2d(20, 3, 4, 1, padding=1), w['deconv3'])
  with torch.no_grad():
    t = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())
    want = torch.sigmoid(d3(torch.relu(d2(torch.relu(d1(t)))))).numpy().transpose(0, 2, 3, 1)
  got = np.asarray(run(model.apply, variables, x))
  assert got.shape == want.shape == (2, 18, 22, 3)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_readme_autoencoder_matches_a_pytorch_twin():
  """The authors' layers (Conv2d k4 s2 p1, MaxPool2d 2, ConvTranspose2d k4 s2 p1, nn.Upsample x2
  nearest) with this module's activations (ReLU, linear code, sigmoid)."""
  import torch  # pylint: disable=g-import-not-at-top
  model = DenoiseAutoencoder(latent_channels=8, inner_stride=2)
  x = images((2, 32, 32, 3))
  variables = init(model, x)
  names = ['encoder/conv1', 'encoder/conv2', 'encoder/conv3', 'decoder/deconv1', 'decoder/deconv2',
           'decoder/deconv3']
  w = _torch_weights(variables['params'], names)
  c1 = _load(torch.nn.Conv2d(3, 32, 4, 2, padding=1), w['encoder/conv1'])
  c2 = _load(torch.nn.Conv2d(32, 16, 4, 2, padding=1), w['encoder/conv2'])
  c3 = _load(torch.nn.Conv2d(16, 8, 4, 2, padding=1), w['encoder/conv3'])
  d1 = _load(torch.nn.ConvTranspose2d(8, 16, 4, 2, padding=1), w['decoder/deconv1'])
  d2 = _load(torch.nn.ConvTranspose2d(16, 32, 4, 2, padding=1), w['decoder/deconv2'])
  d3 = _load(torch.nn.ConvTranspose2d(32, 3, 4, 2, padding=1), w['decoder/deconv3'])
  with torch.no_grad():
    t = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())
    code = c3(torch.relu(c2(torch.nn.functional.max_pool2d(torch.relu(c1(t)), 2))))
    y = torch.nn.functional.interpolate(torch.relu(d1(code)), scale_factor=2, mode='nearest')
    want = torch.sigmoid(d3(torch.relu(d2(y)))).numpy().transpose(0, 2, 3, 1)
  got = np.asarray(run(model.apply, variables, x))
  np.testing.assert_allclose(got, want, atol=1e-5)
