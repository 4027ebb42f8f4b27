"""Report 000 (CelebA enhancement) networks: shapes at 218x178, parameter counts worked out by hand,
torchvision ResNet18/VGG16 import and parity with PyTorch twins (torch only, torchvision key names),
weight-file errors, RBF gradients, output range, scale and any-size inputs."""

import functools
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import fast_jit
from enhance_jax.errors import UserError
from enhance_jax.io import weights
from enhance_jax.models.backbones import ResNet18Features, VGG16Features
from enhance_jax.models.restoration_baselines import BaselineCNN, BackboneDiscriminator, BackboneGenerator, BaselineRBF

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # `benchmarks` for bare pytest
torch = pytest.importorskip('torch')
from benchmarks.torch_reference.backbones import TorchResNet18, randomise, torch_vgg16  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

CELEBA = (2, 218, 178, 3)


def conv(k, cin, cout, bias=True):
  """Parameters of a k x k conv (or transposed conv)."""
  return k * k * cin * cout + (cout if bias else 0)


def bn(c):
  """BatchNorm scale and bias (running mean/var are batch_stats, not params)."""
  return 2 * c


def dense(cin, cout):
  return cin * cout + cout


def n_params(variables):
  return sum(x.size for x in jax.tree.leaves(variables['params']))


def init_shapes(module, shape):
  """(output, variables) as ShapeDtypeStructs: nothing is computed."""
  return jax.eval_shape(module.init_with_output, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))


def init(module, x):
  return fast_jit(module.init, jax.random.key(0), x)(jax.random.key(0), x)


def apply(module, variables, x, **kwargs):
  fn = functools.partial(module.apply, **kwargs)
  return fast_jit(fn, variables, x)(variables, x)


# By hand. CNN: 3 convs 4x4/2 3->64->128->256 (bias), transposed 256->128->64->3 (bias).
CNN = (conv(4, 3, 64) + conv(4, 64, 128) + conv(4, 128, 256)
       + conv(4, 256, 128) + conv(4, 128, 64) + conv(4, 64, 3))
# RBF at its experiment size: 8x8x3 = 192 values a patch, 256 units: centres 256x192, one width per
# unit, dense 256 -> 192.
RBF = 256 * 8 * 8 * 3 + 256 + dense(256, 8 * 8 * 3)
# Conv G: the CNN's layers without bias before BN, a BN after each but the last.
CONV_G = (conv(4, 3, 64, False) + bn(64) + conv(4, 64, 128, False) + bn(128) + conv(4, 128, 256, False)
          + bn(256) + conv(4, 256, 128, False) + bn(128) + conv(4, 128, 64, False) + bn(64) + conv(4, 64, 3))
# Conv D: conv 3->64 (bias, no BN), 64->128 and 128->256 with BN, dense 256 -> 1.
CONV_D = (conv(4, 3, 64) + conv(4, 64, 128, False) + bn(128) + conv(4, 128, 256, False) + bn(256)
          + dense(256, 1))
# ResNet18: stem, then per layer two BasicBlocks (2 x conv3x3 + BN), a 1x1 conv + BN downsample where
# the width or stride changes.
RESNET18 = (conv(7, 3, 64, False) + bn(64)
            + 4 * (conv(3, 64, 64, False) + bn(64))
            + sum(conv(3, cin, c, False) + bn(c) + 3 * (conv(3, c, c, False) + bn(c))
                  + conv(1, cin, c, False) + bn(c) for cin, c in ((64, 128), (128, 256), (256, 512))))
VGG16 = (conv(3, 3, 64) + conv(3, 64, 64) + conv(3, 64, 128) + conv(3, 128, 128) + conv(3, 128, 256)
         + 2 * conv(3, 256, 256) + conv(3, 256, 512) + 2 * conv(3, 512, 512) + 3 * conv(3, 512, 512))
# Backbone G decoder: transposed 512 -> 256 -> 128 -> 64 -> 32 (BN) -> 3.
BACKBONE_DECODER = (conv(4, 512, 256, False) + bn(256) + conv(4, 256, 128, False) + bn(128)
                    + conv(4, 128, 64, False) + bn(64) + conv(4, 64, 32, False) + bn(32) + conv(4, 32, 3))


def test_hand_counts_match_torchvision():
  assert RESNET18 == 11_689_512 - dense(512, 1000) == 11_176_512  # torchvision resnet18 minus fc
  assert VGG16 == 14_714_688


@pytest.mark.parametrize('module, count', [
    (BaselineCNN(), CNN),
    (BaselineRBF(), RBF),
    (BackboneGenerator(), CONV_G),
    (BackboneGenerator(backbone='resnet18'), RESNET18 + BACKBONE_DECODER),
    (BackboneGenerator(backbone='vgg16'), VGG16 + BACKBONE_DECODER),
], ids=['cnn', 'rbf', 'g_conv', 'g_resnet18', 'g_vgg16'])
def test_generators_at_celeba_size(module, count):
  out, variables = init_shapes(module, CELEBA)
  assert out.shape == CELEBA and out.dtype == jnp.float32
  assert n_params(variables) == count
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))


@pytest.mark.parametrize('module, count', [
    (BackboneDiscriminator(), CONV_D),
    (BackboneDiscriminator(backbone='resnet18'), RESNET18 + dense(512, 1)),
    (BackboneDiscriminator(backbone='vgg16'), VGG16 + dense(512, 1)),
], ids=['conv', 'resnet18', 'vgg16'])
def test_discriminators_at_celeba_size(module, count):
  out, variables = init_shapes(module, CELEBA)
  assert out.shape == (2,) and out.dtype == jnp.float32
  assert n_params(variables) == count


@pytest.mark.parametrize('module, count, hw', [
    (ResNet18Features(), RESNET18, (7, 6)),  # 218 -> 109 -> 55 -> 28 -> 14 -> 7 (ceil); 178 -> 6
    (VGG16Features(), VGG16, (6, 5)),         # 218 -> 109 -> 54 -> 27 -> 13 -> 6 (floor); 178 -> 5
], ids=['resnet18', 'vgg16'])
def test_backbones_at_celeba_size(module, count, hw):
  out, variables = init_shapes(module, CELEBA)
  assert out.shape == (2, *hw, 512)
  assert n_params(variables) == count


def test_bf16_compute_keeps_float32_params():
  out, variables = init_shapes(BackboneGenerator(backbone='resnet18', dtype=jnp.bfloat16), CELEBA)
  assert out.dtype == jnp.float32
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))


ALL = (BaselineCNN, BaselineRBF, BackboneGenerator, BackboneDiscriminator)


@pytest.mark.parametrize('cls', ALL)
def test_scale_one_only(cls):
  assert cls(scale=1).scale == 1
  with pytest.raises(ValueError, match='scale=1'):
    cls(scale=4)


@pytest.mark.parametrize('cls', (BackboneGenerator, BackboneDiscriminator))
def test_unknown_backbone(cls):
  with pytest.raises(ValueError, match='resnet18'):
    cls(backbone='resnet50')


@pytest.mark.parametrize('cls', ALL)
def test_input_multiple_is_one(cls):
  m = cls().input_multiple
  assert isinstance(m, int) and m == 1


TINY = [BaselineCNN(num_features=4), BaselineRBF(patch=4, num_units=8), BackboneGenerator(num_features=4),
        BackboneGenerator(num_features=4, num_layers=4)]


@pytest.mark.parametrize('module', TINY, ids=['cnn', 'rbf', 'g_conv', 'g_conv4'])
def test_odd_size_runs_and_stays_in_unit_range(module):
  x = jax.random.uniform(jax.random.key(1), (2, 37, 29, 3))
  variables = init(module, x)
  y = np.asarray(apply(module, variables, x))
  assert y.shape == x.shape
  assert np.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
  assert y.std() > 0  # not a constant image


@pytest.mark.parametrize('module', [BackboneGenerator(backbone='resnet18', num_features=4),
                                    BackboneGenerator(backbone='vgg16', num_features=4),
                                    BackboneDiscriminator(backbone='vgg16')],
                         ids=['g_resnet18', 'g_vgg16', 'd_vgg16'])
def test_backbone_models_take_odd_sizes(module):
  out, _ = init_shapes(module, (2, 37, 29, 3))  # padded to 64x32 inside
  assert out.shape == ((2, 37, 29, 3) if isinstance(module, BackboneGenerator) else (2,))


def test_conv_gan_train_step_shapes_and_batch_stats():
  g, d = BackboneGenerator(num_features=4), BackboneDiscriminator(num_features=4)
  x = jax.random.uniform(jax.random.key(2), (2, 37, 29, 3))
  gv, dv = init(g, x), init(d, x)
  y, g_upd = apply(g, gv, x, train=True, mutable=['batch_stats'])
  logits, d_upd = apply(d, dv, y, train=True, mutable=['batch_stats'])
  assert y.shape == x.shape and logits.shape == (2,)
  changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                         gv['batch_stats'], g_upd['batch_stats'])
  assert all(jax.tree.leaves(changed))
  assert not np.allclose(np.asarray(d_upd['batch_stats']['bn_1']['mean']), 0)


def test_rbf_centres_and_widths_get_gradients():
  model = BaselineRBF(patch=4, num_units=8)
  x = jax.random.uniform(jax.random.key(3), (2, 13, 11, 3))
  variables = init(model, x)
  target = jax.random.uniform(jax.random.key(4), x.shape)
  loss = lambda p: jnp.mean((model.apply({'params': p}, x) - target) ** 2)
  grads = fast_jit(jax.grad(loss), variables['params'])(variables['params'])
  assert set(grads) == {'centres', 'log_widths', 'dense'}
  assert grads['centres'].shape == (8, 4 * 4 * 3) and grads['log_widths'].shape == (8,)
  for name in ('centres', 'log_widths'):
    g = np.asarray(grads[name])
    assert np.isfinite(g).all() and np.abs(g).max() > 0, name


def test_rbf_patches_are_independent():
  """Changing one pixel changes only the output patch that holds it (non-overlapping tiles)."""
  model = BaselineRBF(patch=4, num_units=8)
  x = jax.random.uniform(jax.random.key(5), (1, 13, 11, 3))
  variables = init(model, x)
  fn = fast_jit(model.apply, variables, x)
  y0 = np.asarray(fn(variables, x))
  y1 = np.asarray(fn(variables, x.at[0, 5, 6, 1].set(1 - x[0, 5, 6, 1])))
  diff = np.abs(y1 - y0).max(axis=-1)[0] > 0
  assert diff[4:8, 4:8].any() and not diff[:4].any() and not diff[8:].any()
  assert not diff[:, :4].any() and not diff[:, 8:].any()


# ---------------------------------------------------------------- PyTorch twins (torch only)


def _cnn_torch_twin(params, x, layers=3):
  """BaselineCNN in torch from its Flax params: replicate pad, Conv2d(4,2,1), ConvTranspose2d(4,2,1)."""
  f = torch.nn.functional
  t = lambda a: torch.from_numpy(np.asarray(a).copy())
  h = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2)
  n, _, height, width = h.shape
  m = 2 ** layers
  h = f.pad(h, (0, -width % m, 0, -height % m), mode='replicate')
  for i in range(layers):
    p = params[f'encoder_{i}']
    h = f.relu(f.conv2d(h, t(p['kernel']).permute(3, 2, 0, 1), t(p['bias']), stride=2, padding=1))
  for i in range(layers):
    p = params[f'decoder_{i}']
    h = f.conv_transpose2d(h, t(p['kernel']).permute(3, 2, 0, 1), t(p['bias']), stride=2, padding=1)
    h = f.relu(h) if i < layers - 1 else h
  return torch.sigmoid(h[:, :, :height, :width]).permute(0, 2, 3, 1).numpy()


def test_cnn_matches_torch_conv_and_conv_transpose():
  model = BaselineCNN(num_features=4)
  x = jax.random.uniform(jax.random.key(6), (2, 19, 13, 3))
  variables = init(model, x)
  with torch.no_grad():
    want = _cnn_torch_twin(variables['params'], x)
  np.testing.assert_allclose(np.asarray(apply(model, variables, x)), want, atol=1e-5)


@pytest.fixture(scope='module', name='twins')
def twins_fixture(tmp_path_factory):
  """Random torch ResNet18 / VGG16 twins and their state_dicts saved as .pth."""
  torch.manual_seed(0)
  tmp = tmp_path_factory.mktemp('backbones')
  nets = {'resnet18': randomise(TorchResNet18()), 'vgg16': randomise(torch_vgg16())}
  paths = {}
  for name, net in nets.items():
    paths[name] = tmp / f'{name}.pth'
    torch.save(net.state_dict(), paths[name])
  return nets, paths


def test_torch_twins_have_torchvision_sizes(twins):
  nets, _ = twins
  assert sum(p.numel() for p in nets['resnet18'].parameters()) == 11_689_512  # torchvision resnet18
  assert sum(p.numel() for p in nets['vgg16'].features.parameters()) == 14_714_688


@pytest.mark.parametrize('name, module', [('resnet18', ResNet18Features()), ('vgg16', VGG16Features())])
def test_backbone_parity_with_torch(twins, name, module):
  nets, paths = twins
  variables = weights.load_backbone(name, paths[name])
  assert set(variables) == ({'params', 'batch_stats'} if name == 'resnet18' else {'params'})
  assert n_params(variables) == (RESNET18 if name == 'resnet18' else VGG16)
  x = np.random.default_rng(0).standard_normal((2, 70, 54, 3)).astype(np.float32)  # odd strides
  y = np.asarray(apply(module, variables, jnp.asarray(x)))
  with torch.no_grad():
    h = torch.from_numpy(x).permute(0, 3, 1, 2)
    want = nets[name].features(h).permute(0, 2, 3, 1).numpy()
  assert y.shape == want.shape == ((2, 3, 2, 512) if name == 'resnet18' else (2, 2, 1, 512))
  assert 0.05 < np.abs(want).mean() < 50  # O(1) activations: 1e-4 is a real tolerance
  assert np.abs(y - want).max() < 1e-4


@pytest.mark.parametrize('name, cls', [('resnet18', BackboneGenerator), ('vgg16', BackboneDiscriminator)])
def test_loaded_backbone_fits_the_backbone_submodule(twins, name, cls):
  _, paths = twins
  loaded = weights.load_backbone(name, paths[name])
  _, variables = init_shapes(cls(backbone=name), CELEBA)
  for collection, tree in loaded.items():
    want = jax.tree.map(lambda a: (a.shape, a.dtype), variables[collection]['backbone'])
    assert jax.tree.map(lambda a: (a.shape, a.dtype), tree) == want


def test_backbone_prefix_and_npz(twins, tmp_path):
  nets, _ = twins
  sd = {f'backbone.{k}': v.numpy() for k, v in nets['vgg16'].state_dict().items()}
  np.savez(tmp_path / 'g.npz', **sd)
  loaded = weights.load_backbone('vgg16', tmp_path / 'g.npz')
  np.testing.assert_array_equal(np.asarray(loaded['params']['features_28']['kernel']),
                                sd['backbone.features.28.weight'].transpose(2, 3, 1, 0))


def test_wrong_key_names_the_key(twins, tmp_path):
  nets, _ = twins
  sd = {k: v.numpy() for k, v in nets['resnet18'].state_dict().items()}
  sd['layer2.0.downsample.0.weights'] = sd.pop('layer2.0.downsample.0.weight')
  path = tmp_path / 'bad.npz'
  np.savez(path, **sd)
  with pytest.raises(UserError) as err:
    weights.load_backbone('resnet18', path)
  msg = str(err.value)
  assert "first mismatched key: missing 'layer2.0.downsample.0.weight'" in msg
  assert "unexpected 'layer2.0.downsample.0.weights'" in msg and str(path) in msg


def test_wrong_shape_names_the_key(twins):
  nets, _ = twins
  sd = {k: v.numpy() for k, v in nets['resnet18'].state_dict().items()}
  sd['layer3.1.bn2.running_var'] = np.ones(128, np.float32)
  with pytest.raises(UserError, match=r"first mismatched key: 'layer3\.1\.bn2\.running_var' has shape"):
    weights.resnet18_params_from_state_dict(sd)
  sd = {k: v.numpy() for k, v in nets['vgg16'].state_dict().items()}
  sd['features.0.weight'] = np.zeros((64, 3, 5, 5), np.float32)
  want = r"'features\.0\.weight' has shape \(64, 3, 5, 5\), want \(64, 3, 3, 3\)"
  with pytest.raises(UserError, match=want):
    weights.vgg16_params_from_state_dict(sd)


def test_other_architecture_is_rejected(twins):
  nets, _ = twins
  resnet = {k: v.numpy() for k, v in nets['resnet18'].state_dict().items()}
  with pytest.raises(UserError, match="missing 'features.0.weight'"):
    weights.vgg16_params_from_state_dict(resnet)
  resnet['layer1.2.conv1.weight'] = resnet['layer1.1.conv1.weight']  # a resnet34-like extra block
  with pytest.raises(UserError, match="unexpected 'layer1.2.conv1.weight'"):
    weights.resnet18_params_from_state_dict(resnet)


def test_no_weights_warns_once(capsys):
  weights.warn_random_backbone.cache_clear()
  assert weights.load_backbone('resnet18', None) is None
  assert weights.load_backbone('resnet18', '') is None
  assert capsys.readouterr().err.count('resnet18 backbone uses RANDOM weights') == 1
  assert weights.load_backbone('conv', None) is None
  with pytest.raises(UserError, match='one of conv, resnet18, vgg16'):
    weights.load_backbone('resnet50', None)
  with pytest.raises(UserError, match='does not exist'):
    weights.load_backbone('vgg16', '/nonexistent/vgg16.pth')
