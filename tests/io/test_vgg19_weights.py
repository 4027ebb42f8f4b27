"""VGG19Features shapes and torch parity, weight-file loaders and their errors, RRDBNet key mapping."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from enhance_jax.errors import UserError
from enhance_jax.io import weights
from enhance_jax.models import vgg

torch = pytest.importorskip('torch')

# 3*3*in*out + out per conv:
#   conv1_1 3->64: 1,792          conv1_2 64->64: 36,928
#   conv2_1 64->128: 73,856       conv2_2 128->128: 147,584
#   conv3_1 128->256: 295,168     conv3_2..3_4 256->256: 3 x 590,080 = 1,770,240
#   conv4_1 256->512: 1,180,160   conv4_2..4_4 512->512: 3 x 2,359,808 = 7,079,424
#   conv5_1..5_4 512->512: 4 x 2,359,808 = 9,439,232
#   total 1,792 + 36,928 + 73,856 + 147,584 + 295,168 + 1,770,240 + 1,180,160 + 7,079,424
#         + 9,439,232 = 20,024,384
VGG19_FEATURES_PARAMS = 20_024_384
PARITY_LAYERS = ('conv1_2', 'conv3_4', 'conv5_4')


def _count(params):
  return sum(x.size for x in jax.tree.leaves(params))


def _torch_vgg19_features():
  """torchvision's `vgg19().features` Sequential, rebuilt from torch.nn (same indices, no torchvision)."""
  cfg = [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M',
         512, 512, 512, 512, 'M']
  layers, c_in = [], 3
  for v in cfg:
    if v == 'M':
      layers.append(torch.nn.MaxPool2d(2, 2))
    else:
      layers += [torch.nn.Conv2d(c_in, v, 3, padding=1), torch.nn.ReLU(inplace=False)]
      c_in = v
  return torch.nn.Sequential(*layers)


def _torch_features(net, x_nhwc, before_activation):
  """Runs the torch twin with ImageNet normalisation; returns {convX_Y: NHWC features}."""
  mean = torch.tensor(vgg.IMAGENET_MEAN).view(1, 3, 1, 1)
  std = torch.tensor(vgg.IMAGENET_STD).view(1, 3, 1, 1)
  h = (torch.from_numpy(x_nhwc).permute(0, 3, 1, 2) - mean) / std
  want = {vgg.VGG19_TORCH_INDEX[n] + (0 if before_activation else 1): n for n in PARITY_LAYERS}
  out = {}
  with torch.no_grad():
    for i, layer in enumerate(net):
      h = layer(h)
      if i in want:
        out[want[i]] = h.permute(0, 2, 3, 1).numpy()
  return out


@pytest.fixture(scope='module')
def torch_vgg(tmp_path_factory):
  """A random torch VGG19 twin saved as .pth (BasicSR-style wrapped), .safetensors and .npz."""
  import safetensors.torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  net = _torch_vgg19_features().eval()
  sd = {f'features.{k}': v for k, v in net.state_dict().items()}
  sd['classifier.0.weight'] = torch.zeros(4, 4)  # ignored
  d = tmp_path_factory.mktemp('vgg')
  paths = {'pth': d / 'vgg19.pth', 'safetensors': d / 'vgg19.safetensors', 'npz': d / 'vgg19.npz'}
  torch.save({'state_dict': {f'module.{k}': v for k, v in sd.items()}}, paths['pth'])
  safetensors.torch.save_file(sd, str(paths['safetensors']))
  np.savez(paths['npz'], **{k: v.numpy() for k, v in sd.items()})
  return net, sd, paths


def test_vgg19_output_shapes_and_params():
  x = jnp.zeros((1, 64, 64, 3))
  model = vgg.VGG19Features(layers=('conv3_4', 'conv5_4'))
  params = model.init(jax.random.PRNGKey(0), x)['params']
  out = model.apply({'params': params}, x)
  assert out['conv5_4'].shape == (1, 4, 4, 512)
  assert out['conv3_4'].shape == (1, 16, 16, 256)
  assert list(params) == list(vgg.VGG19_LAYERS)
  assert _count(params) == VGG19_FEATURES_PARAMS


def test_vgg19_stops_at_last_requested_layer():
  model = vgg.VGG19Features(layers=('conv3_4',))
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))['params']
  assert list(params) == list(vgg.VGG19_LAYERS[:8])
  assert vgg.convs_needed(('relu2_1', 'conv1_1')) == vgg.VGG19_LAYERS[:3]


def test_vgg19_unknown_layer_is_user_error():
  with pytest.raises(UserError, match="Unknown VGG19 layer 'conv6_1'.*conv5_4"):
    vgg.convs_needed(('conv6_1',))


def test_before_and_after_activation():
  x = jax.random.uniform(jax.random.PRNGKey(1), (1, 32, 32, 3))
  params = vgg.VGG19Features(layers=('conv2_2',)).init(jax.random.PRNGKey(0), x)['params']
  pre = vgg.VGG19Features(layers=('conv2_2',), before_activation=True).apply({'params': params}, x)
  post = vgg.VGG19Features(layers=('conv2_2',), before_activation=False).apply({'params': params}, x)
  relu = vgg.VGG19Features(layers=('relu2_2',)).apply({'params': params}, x)
  assert float(pre['conv2_2'].min()) < 0
  assert float(post['conv2_2'].min()) >= 0 and float(post['conv2_2'].max()) > 0
  np.testing.assert_array_equal(post['conv2_2'], relu['relu2_2'])
  np.testing.assert_allclose(post['conv2_2'], jnp.maximum(pre['conv2_2'], 0), rtol=1e-6)


def test_bfloat16_compute_keeps_float32_params():
  model = vgg.VGG19Features(layers=('conv1_2',), dtype=jnp.bfloat16)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
  out = model.apply(variables, jnp.zeros((1, 8, 8, 3)))
  assert out['conv1_2'].dtype == jnp.bfloat16
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))


@pytest.mark.parametrize('fmt', ['pth', 'safetensors', 'npz'])
@pytest.mark.parametrize('before_activation', [True, False])
def test_loaded_weights_match_torch(torch_vgg, fmt, before_activation):
  net, _, paths = torch_vgg
  x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
  params = weights.load_vgg19(paths[fmt], PARITY_LAYERS)
  model = vgg.VGG19Features(layers=PARITY_LAYERS, before_activation=before_activation)
  got = model.apply({'params': params}, jnp.asarray(x))
  want = _torch_features(net, x, before_activation)
  for name in PARITY_LAYERS:
    assert got[name].shape == want[name].shape
    err = np.abs(np.asarray(got[name]) - want[name]).max() / np.abs(want[name]).max()
    assert err < 1e-4, (name, err)
  assert (min(want[n].min() for n in PARITY_LAYERS) < 0) == before_activation


def test_load_vgg19_keeps_only_needed_convs(torch_vgg):
  _, sd, paths = torch_vgg
  params = weights.load_vgg19(paths['pth'], ('relu2_1',))
  assert list(params) == ['conv1_1', 'conv1_2', 'conv2_1']
  np.testing.assert_array_equal(params['conv2_1']['kernel'],
                                sd['features.5.weight'].numpy().transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(params['conv2_1']['bias'], sd['features.5.bias'].numpy())


def test_vgg_prefixes_and_flax_npz_round_trip(torch_vgg, tmp_path):
  _, sd, paths = torch_vgg
  sd_np = {k: v.numpy() for k, v in sd.items()}
  ref = weights.vgg19_params_from_state_dict(sd_np)
  for prefix in ('vgg.', 'vgg_net.'):
    other = weights.vgg19_params_from_state_dict({prefix + k: v for k, v in sd_np.items()})
    np.testing.assert_array_equal(other['conv5_4']['kernel'], ref['conv5_4']['kernel'])
  out = tmp_path / 'sub' / 'vgg_flax.npz'
  weights.save_params_npz(ref, out)
  flat = weights.load_state_dict(out)
  assert flat['conv1_1/kernel'].shape == (3, 3, 3, 64)
  again = weights.load_vgg19(out, ('conv5_4',))
  for name in vgg.VGG19_LAYERS:
    np.testing.assert_array_equal(again[name]['kernel'], ref[name]['kernel'])
  # Whole variables ({'params': ...}) saved the same way load too.
  weights.save_params_npz({'params': ref}, tmp_path / 'vars.npz')
  assert _count(weights.load_vgg19(tmp_path / 'vars.npz', 'conv5_4')) == VGG19_FEATURES_PARAMS


def test_params_npz_round_trip(tmp_path):
  params = {'a': {'b': np.arange(6.0).reshape(2, 3), 'c': {'d': np.ones(2, np.float32)}}}
  flat = weights.flatten_params(params)
  assert set(flat) == {'a/b', 'a/c/d'}
  assert weights.unflatten_params(flat)['a']['c']['d'].shape == (2,)
  weights.save_params_npz(params, tmp_path / 'p.npz')
  back = weights.load_params_npz(tmp_path / 'p.npz')
  np.testing.assert_array_equal(back['a']['b'], params['a']['b'])
  np.testing.assert_array_equal(back['a']['c']['d'], params['a']['c']['d'])


def test_bfloat16_safetensors_becomes_float32(tmp_path):
  import safetensors.torch  # pylint: disable=g-import-not-at-top
  safetensors.torch.save_file({'w': torch.full((2,), 1.5, dtype=torch.bfloat16)},
                              str(tmp_path / 'b.safetensors'))
  sd = weights.load_state_dict(tmp_path / 'b.safetensors')
  assert sd['w'].dtype == np.float32 and sd['w'].tolist() == [1.5, 1.5]


def test_container_keys_are_unwrapped(tmp_path):
  torch.save({'params': {'x': torch.zeros(1)}, 'params_ema': {'module.y': torch.ones(2)}},
             tmp_path / 'ema.pth')
  assert list(weights.load_state_dict(tmp_path / 'ema.pth')) == ['y']
  torch.save({'model': {'z': torch.zeros(3)}, 'epoch': 3}, tmp_path / 'm.pt')
  assert list(weights.load_state_dict(tmp_path / 'm.pt')) == ['z']


# ---------------------------------------------------------------- errors


def test_missing_file(tmp_path):
  path = tmp_path / 'nope.pth'
  with pytest.raises(UserError, match='does not exist') as err:
    weights.load_vgg19(path)
  assert str(path) in str(err.value)


def test_unknown_extension(tmp_path):
  path = tmp_path / 'vgg.ckpt'
  path.write_bytes(b'x')
  with pytest.raises(UserError, match=r"unknown extension '\.ckpt'.*\.safetensors") as err:
    weights.load_state_dict(path)
  assert str(path) in str(err.value)


def test_pth_missing_conv_layers(torch_vgg, tmp_path):
  _, sd, _ = torch_vgg
  partial = {k: v for k, v in sd.items() if not k.startswith(('features.32.', 'features.34.'))}
  path = tmp_path / 'partial.pth'
  torch.save(partial, path)
  with pytest.raises(UserError) as err:
    weights.load_vgg19(path, ('conv5_4',))
  msg = str(err.value)
  assert str(path) in msg and 'vgg19-dcbb9e9d.pth' in msg
  assert 'features.32.weight' in msg and 'features.34.weight' in msg
  assert 'features.30.' not in msg
  # The convs that are present still serve shallower layers.
  assert list(weights.load_vgg19(path, ('conv4_4',)))[-1] == 'conv4_4'


def test_wrong_shape_is_reported(torch_vgg):
  _, sd, _ = torch_vgg
  bad = {k: v.numpy() for k, v in sd.items()}
  bad['features.0.weight'] = np.zeros((64, 1, 3, 3), np.float32)
  with pytest.raises(UserError, match=r"'features\.0\.weight' has shape \(64, 1, 3, 3\), "
                                     r'want \(64, 3, 3, 3\); give .*vgg19-dcbb9e9d\.pth'):
    weights.vgg19_params_from_state_dict(bad)


@pytest.mark.parametrize('naming', ['torchvision', 'basicsr', 'flax'])
@pytest.mark.parametrize('prefix', ['', 'vgg.vgg_net.', 'params/'])
def test_one_layout_for_the_loss_and_convert(torch_vgg, naming, prefix):
  """load_vgg19's importer and convert --arch vgg19 read every naming under every prefix alike."""
  _, sd, _ = torch_vgg
  ref = weights.vgg19_params_from_state_dict({k: v.numpy() for k, v in sd.items()})
  if naming == 'flax':
    other = {f'{prefix}{k}': v for k, v in weights.flatten_params(ref).items()}
  else:
    key = {i: n for n, i in vgg.VGG19_TORCH_INDEX.items()} if naming == 'basicsr' else {}
    other = {}
    for k, v in sd.items():
      if k.startswith('features.'):
        _, i, leaf = k.split('.')
        k = f'{key[int(i)]}.{leaf}' if key else k
      other[prefix + k] = v.numpy()
  loaded = weights.vgg19_params_from_state_dict(other, ('conv1_1', 'conv1_2', 'conv2_1'))
  assert list(loaded) == ['conv1_1', 'conv1_2', 'conv2_1']
  section, converted = weights.import_weights(other, 'vgg19')
  assert section == {'name': 'vgg19'} and list(converted['params']) == list(vgg.VGG19_LAYERS)
  for name in vgg.VGG19_LAYERS:
    for leaf in ('kernel', 'bias'):
      np.testing.assert_array_equal(converted['params'][name][leaf], ref[name][leaf])
      if name in loaded:
        np.testing.assert_array_equal(loaded[name][leaf], ref[name][leaf])


@pytest.mark.parametrize('fmt', ['pth', 'safetensors', 'npz'])
def test_truncated_file(torch_vgg, tmp_path, fmt):
  _, _, paths = torch_vgg
  data = paths[fmt].read_bytes()
  path = tmp_path / f'broken.{fmt}'
  path.write_bytes(data[:len(data) // 3])
  with pytest.raises(UserError, match='corrupt or truncated.*again') as err:
    weights.load_state_dict(path)
  assert str(path) in str(err.value)


def test_pickled_module_is_user_error(tmp_path):
  torch.save(torch.nn.Linear(2, 2), tmp_path / 'module.pth')
  with pytest.raises(UserError, match=r'state_dict\(\)'):
    weights.load_state_dict(tmp_path / 'module.pth')


def test_pth_without_torch(tmp_path, monkeypatch):
  (tmp_path / 'w.pth').write_bytes(b'x')
  monkeypatch.setitem(__import__('sys').modules, 'torch', None)
  with pytest.raises(UserError, match=r'pip install torch==2\.13\.0.*\[torch\]'):
    weights.load_state_dict(tmp_path / 'w.pth')


def test_random_weights_warn_once(caplog, capsys):
  weights.warn_random_vgg19.cache_clear()
  with caplog.at_level(logging.WARNING):
    first = weights.load_vgg19(None, ('conv1_2',))
    second = weights.load_vgg19(None, ('conv1_2',))
  logged = [r for r in caplog.records if 'RANDOM VGG19' in r.getMessage()]
  assert len(logged) == 1 and 'loss.vgg_weights=' in logged[0].getMessage()
  assert capsys.readouterr().err.count('RANDOM VGG19') == 1
  assert list(first) == ['conv1_1', 'conv1_2']
  np.testing.assert_array_equal(first['conv1_2']['kernel'], second['conv1_2']['kernel'])
  weights.warn_random_vgg19.cache_clear()
  weights.load_vgg19(None, ('conv1_1',))
  assert capsys.readouterr().err.count('RANDOM VGG19') == 1


# ---------------------------------------------------------------- RRDBNet


def _fake_rrdbnet_sd(esrgan, num_blocks=2, nf=8, gc=4, rng=np.random.default_rng(0)):
  """Random arrays with RRDBNet's torch shapes under BasicSR or ESRGAN-release names."""
  top = (('conv_first', 'trunk_conv', 'upconv1', 'upconv2', 'HRconv', 'conv_last') if esrgan else
         ('conv_first', 'conv_body', 'conv_up1', 'conv_up2', 'conv_hr', 'conv_last'))
  shapes = {top[0]: (nf, 3), top[5]: (3, nf), **{n: (nf, nf) for n in top[1:5]}}
  for i in range(num_blocks):
    for j in (1, 2, 3):
      for k in range(1, 6):
        key = f'RRDB_trunk.{i}.RDB{j}.conv{k}' if esrgan else f'body.{i}.rdb{j}.conv{k}'
        shapes[key] = (nf if k == 5 else gc, nf + (k - 1) * gc)
  sd = {}
  for key, (c_out, c_in) in shapes.items():
    sd[f'{key}.weight'] = rng.normal(size=(c_out, c_in, 3, 3)).astype(np.float32)
    sd[f'{key}.bias'] = rng.normal(size=(c_out,)).astype(np.float32)
  return sd


@pytest.mark.parametrize('esrgan', [False, True])
def test_rrdbnet_mapping(esrgan):
  sd = _fake_rrdbnet_sd(esrgan)
  params = weights.rrdbnet_params_from_state_dict(sd, num_blocks=2)
  assert set(params) == {'conv_first', 'body_0', 'body_1', 'conv_body', 'conv_up1', 'conv_up2',
                         'conv_hr', 'conv_last'}
  assert set(params['body_1']) == {'rdb1', 'rdb2', 'rdb3'}
  assert set(params['body_1']['rdb3']) == {f'conv{k}' for k in range(1, 6)}
  assert params['conv_first']['kernel'].shape == (3, 3, 3, 8)
  assert params['body_0']['rdb2']['conv1']['kernel'].shape == (3, 3, 8, 4)
  assert params['body_0']['rdb2']['conv4']['kernel'].shape == (3, 3, 20, 4)
  assert params['body_1']['rdb3']['conv5']['kernel'].shape == (3, 3, 24, 8)
  assert params['body_1']['rdb3']['conv5']['bias'].shape == (8,)
  assert params['conv_hr']['kernel'].shape == (3, 3, 8, 8)
  assert params['conv_last']['kernel'].shape == (3, 3, 8, 3)
  assert len(jax.tree.leaves(params)) == 2 * (6 + 2 * 3 * 5)
  src = 'RRDB_trunk.1.RDB3.conv2' if esrgan else 'body.1.rdb3.conv2'
  np.testing.assert_array_equal(params['body_1']['rdb3']['conv2']['kernel'],
                                sd[f'{src}.weight'].transpose(2, 3, 1, 0))
  up = 'upconv2' if esrgan else 'conv_up2'
  np.testing.assert_array_equal(params['conv_up2']['conv']['bias'], sd[f'{up}.bias'])


def test_rrdbnet_errors():
  sd = _fake_rrdbnet_sd(esrgan=False)
  with pytest.raises(UserError, match=r'2 blocks but the model has 3.*num_blocks=2'):
    weights.rrdbnet_params_from_state_dict(sd, num_blocks=3)
  del sd['conv_hr.weight']
  sd['conv_up1.weight'] = np.zeros((8, 5, 3, 3), np.float32)
  with pytest.raises(UserError) as err:
    weights.rrdbnet_params_from_state_dict(sd, num_blocks=2)
  msg = str(err.value)
  assert "'conv_up1.weight' has shape (8, 5, 3, 3)" in msg and "missing 'conv_hr.weight'" in msg
  assert 'RRDBNet' in msg
