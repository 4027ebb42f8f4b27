"""NIMA: the network (any size, differentiable score), EMD and correlations, the torchvision importer
against PyTorch twins, the AVA reader and `python -m enhance_jax.score`."""

import json
import math
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from PIL import Image

from enhance_jax import score
from enhance_jax.data import ava
from enhance_jax.errors import UserError
from enhance_jax.eval import metrics
from enhance_jax.io import weights
from enhance_jax.models import nima as nima_model

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # `benchmarks` for bare pytest

torch = pytest.importorskip('torch')
from benchmarks.torch_reference.nima import TorchMnasNetNIMA, TorchMobileNetV2NIMA, randomised  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


# ---------------------------------------------------------------- EMD, scores, correlations


def _onehot(k):
  return jnp.eye(10, dtype=jnp.float32)[k - 1]


def test_emd_zero_for_identical_and_hand_computed():
  p = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(0), (4, 10)))
  np.testing.assert_allclose(metrics.emd(p, p), 0.0, atol=1e-7)
  # one-hot at 1 vs at 2: the CDFs differ by 1 at k = 1 only -> sqrt(1/10).
  np.testing.assert_allclose(metrics.emd(_onehot(1), _onehot(2)), math.sqrt(0.1), rtol=1e-6)
  # one-hot at 1 vs at 10: they differ by 1 at k = 1..9 -> sqrt(9/10).
  np.testing.assert_allclose(metrics.emd(_onehot(1), _onehot(10)), math.sqrt(0.9), rtol=1e-6)
  # [.5, .5, 0...] vs [0, .5, .5, 0...]: CDF differences .5, .5, 0... -> sqrt((.25 + .25) / 10).
  a = jnp.asarray([.5, .5] + [0] * 8)
  b = jnp.asarray([0, .5, .5] + [0] * 7)
  np.testing.assert_allclose(metrics.emd(a, b), math.sqrt(0.05), rtol=1e-6)
  batch = metrics.emd(jnp.stack([_onehot(1), a]), jnp.stack([_onehot(2), b]))
  np.testing.assert_allclose(batch, [math.sqrt(0.1), math.sqrt(0.05)], rtol=1e-6)
  np.testing.assert_allclose(metrics.emd(_onehot(1), _onehot(3), r=1), 0.2, rtol=1e-6)
  grad = jax.grad(lambda x: metrics.emd_loss(jax.nn.softmax(x), p))(jnp.zeros((4, 10)))
  assert np.all(np.isfinite(grad))
  grad0 = jax.grad(lambda x: metrics.emd_loss(x, x * 1.0))(p)
  assert np.all(np.isfinite(grad0))


def test_mean_and_std_scores():
  for k in range(1, 11):
    np.testing.assert_allclose(nima_model.mean_score(_onehot(k)), k, rtol=1e-6)
    np.testing.assert_allclose(nima_model.std_score(_onehot(k)), 0.0, atol=1e-3)
  uniform = jnp.full((10,), 0.1)
  np.testing.assert_allclose(nima_model.mean_score(uniform), 5.5, rtol=1e-6)
  np.testing.assert_allclose(nima_model.std_score(uniform), np.std(np.arange(1, 11)), rtol=1e-5)
  mean, std = metrics.histogram_mean_std(jnp.asarray([0, 1, 5, 17, 38, 36, 15, 6, 5, 1]))
  counts = np.asarray([0, 1, 5, 17, 38, 36, 15, 6, 5, 1])
  ratings = np.repeat(np.arange(1, 11), counts)
  np.testing.assert_allclose([mean, std], [ratings.mean(), ratings.std()], rtol=1e-5)


def test_lcc_srcc_match_numpy_and_scipy():
  rng = np.random.default_rng(0)
  a = rng.normal(size=50)
  b = a + rng.normal(size=50) * 0.5
  b[:5] = b[5]  # ties
  np.testing.assert_allclose(metrics.lcc(a, b), np.corrcoef(a, b)[0, 1], rtol=1e-10)
  np.testing.assert_allclose(metrics.srcc(a, b), scipy.stats.spearmanr(a, b).statistic, rtol=1e-10)
  assert math.isnan(metrics.lcc(np.ones(5), a[:5]))


# ---------------------------------------------------------------- the network


def _random_variables(model, shape, seed=0):
  """MODEL's variables filled from numpy (flax's jitted init takes ~15 s to compile these nets)."""
  like = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros(shape))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name in ('var', 'scale'):
      return np.ones(leaf.shape, leaf.dtype)
    fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 1
    return (rng.normal(size=leaf.shape) * np.sqrt(1.0 / fan_in)).astype(leaf.dtype)
  return jax.tree_util.tree_map_with_path(fill, dict(like))


def test_nima_any_size_sums_to_one_and_trains(mnasnet_twin):
  _, variables = mnasnet_twin
  model = nima_model.NIMA(backbone='mnasnet')
  apply = jax.jit(model.apply)
  for shape in ((2, 64, 64, 3), (1, 96, 80, 3)):
    x = jax.random.uniform(jax.random.PRNGKey(1), shape)
    probs = apply(variables, x)
    assert probs.shape == (shape[0], 10)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
  train = jax.jit(lambda v, x, key: model.apply(v, x, train=True, rngs={'dropout': key},
                                                mutable=['batch_stats']))
  probs, updates = train(variables, x, jax.random.PRNGKey(2))
  assert probs.shape == (1, 10) and 'batch_stats' in updates
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


def test_mean_score_gradient_wrt_pixels(mnasnet_twin):
  _, variables = mnasnet_twin
  model = nima_model.NIMA(backbone='mnasnet')
  x = jax.random.uniform(jax.random.PRNGKey(3), (1, 64, 64, 3))
  grad = jax.jit(jax.grad(lambda im: nima_model.mean_score(model.apply(variables, im)).sum()))(x)
  assert grad.shape == x.shape
  assert np.all(np.isfinite(grad)) and float(jnp.abs(grad).max()) > 0


def test_mobilenet_v1_and_unknown_backbone():
  model = nima_model.NIMA(backbone='mobilenet', dtype=jnp.bfloat16)
  x = jnp.full((1, 48, 40, 3), 0.5)
  like = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(like))
  n = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(like['params']))
  assert n == 3_206_976 + 1024 * 10 + 10  # Keras/paper MobileNet v1 without its classifier, + head
  probs = jax.jit(model.apply)(_random_variables(model, x.shape), x)
  assert probs.dtype == jnp.float32
  np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-3)
  with pytest.raises(ValueError, match='mobilenet_v2, mnasnet, mobilenet'):
    nima_model.layer_specs('resnet')


@pytest.fixture(scope='module')
def mobilenet_v2_pth(tmp_path_factory):
  torch.manual_seed(0)
  net = randomised(TorchMobileNetV2NIMA())
  path = tmp_path_factory.mktemp('w') / 'nima_mobilenet_v2.pth'
  torch.save(net.state_dict(), path)
  return net, path


def _compare(net, backbone, variables, shape=(2, 3, 72, 64)):
  x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
  with torch.no_grad():
    feats, probs = net(x)
  x_jax = jnp.asarray(x.numpy().transpose(0, 2, 3, 1))
  model = nima_model.NIMA(backbone=backbone)
  ours = jax.jit(model.apply)(variables, x_jax)
  np.testing.assert_allclose(ours, probs.numpy(), atol=1e-4)
  assert float(probs.max()) - float(probs.min()) > 0.05  # the comparison is not of flat outputs
  if shape[0] > 1:  # nor of outputs that ignore the image
    assert float(jnp.abs(ours[0] - ours[1]).max()) > 1e-3
  backbone_vars = {'params': variables['params']['backbone'],
                   'batch_stats': variables['batch_stats']['backbone']}
  normalised = (x_jax - jnp.asarray(nima_model.IMAGENET_MEAN)) / jnp.asarray(nima_model.IMAGENET_STD)
  ours_f = jax.jit(nima_model.Backbone(backbone).apply)(backbone_vars, normalised)
  want = feats.numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(ours_f, want, atol=1e-4 * max(1.0, float(np.abs(want).max())))


def test_mobilenet_v2_import_matches_torch(mobilenet_v2_pth):
  net, path = mobilenet_v2_pth
  sd = weights.load_state_dict(path)
  assert weights.infer_backbone(sd) == 'mobilenet_v2'
  variables = weights.nima_params_from_state_dict(sd)
  _compare(net, 'mobilenet_v2', variables)
  # The backbone importer alone: classifier ignored, same tree as Backbone.init builds.
  backbone_vars = weights.nima_backbone_params_from_state_dict(sd, 'mobilenet_v2')
  like = jax.eval_shape(nima_model.Backbone('mobilenet_v2').init, jax.random.PRNGKey(0),
                        jnp.zeros((1, 32, 32, 3)))
  shapes = lambda tree: jax.tree.map(lambda a: tuple(a.shape), dict(tree))
  assert shapes(backbone_vars) == shapes(like)
  prefixed = {'backbone.' + k: v for k, v in sd.items() if k.startswith('features.')}
  weights.nima_backbone_params_from_state_dict(prefixed, 'mobilenet_v2')


@pytest.fixture(scope='module')
def mnasnet_twin():
  torch.manual_seed(1)
  net = randomised(TorchMnasNetNIMA())
  sd = {k: v.numpy() for k, v in net.state_dict().items()}
  assert weights.infer_backbone(sd) == 'mnasnet'
  return net, jax.tree.map(jnp.asarray, weights.nima_params_from_state_dict(sd))


def test_mnasnet_import_matches_torch(mnasnet_twin):
  net, variables = mnasnet_twin
  _compare(net, 'mnasnet', variables, shape=(1, 3, 64, 80))


def test_importer_names_the_first_mismatched_key(mobilenet_v2_pth):
  _, path = mobilenet_v2_pth
  sd = weights.load_state_dict(path)
  broken = dict(sd)
  del broken['features.5.conv.1.1.running_var']
  with pytest.raises(UserError, match=r"first mismatched key: missing 'features\.5\.conv\.1\.1\."
                                      r"running_var'"):
    weights.nima_backbone_params_from_state_dict(broken, 'mobilenet_v2')
  wrong = dict(sd, **{'features.3.conv.2.weight': np.zeros((24, 144, 3, 3), np.float32)})
  with pytest.raises(UserError, match=r"'features\.3\.conv\.2\.weight' has shape"):
    weights.nima_params_from_state_dict(wrong)
  with pytest.raises(UserError, match=r"unexpected 'features\.19\.0\.weight'"):
    weights.nima_backbone_params_from_state_dict(
        dict(sd, **{'features.19.0.weight': np.zeros(1)}), 'mobilenet_v2')
  with pytest.raises(UserError, match="missing 'layers.0.weight'"):
    weights.nima_params_from_state_dict(sd, 'mnasnet')
  with pytest.raises(UserError, match='no torchvision layout'):
    weights.nima_backbone_params_from_state_dict(sd, 'mobilenet')


# ---------------------------------------------------------------- AVA

_AVA_LINES = [
    '1 953619 0 1 5 17 38 36 15 6 5 1 1 22 1396',
    '2 953958 10 7 15 26 26 21 10 8 1 2 1 21 1396',
    '',
    '3 954184 0 0 4 8 41 56 10 3 4 2 0 0 1396',
]


def _ava_dir(tmp_path, lines):
  (tmp_path / 'images').mkdir()
  (tmp_path / 'AVA.txt').write_text('\n'.join(lines) + '\n')
  rng = np.random.default_rng(0)
  for image_id in ('953619', '954184'):  # 953958 is missing
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), np.uint8)).save(
        tmp_path / 'images' / f'{image_id}.jpg')
  return tmp_path


def test_read_ava_txt_and_malformed_line(tmp_path):
  path = tmp_path / 'AVA.txt'
  path.write_text('\n'.join(_AVA_LINES) + '\n')
  rows = ava.read_ava_txt(path)
  assert [r[0] for r in rows] == ['953619', '953958', '954184']
  np.testing.assert_array_equal(rows[1][1], [10, 7, 15, 26, 26, 21, 10, 8, 1, 2])
  path.write_text('\n'.join(_AVA_LINES + ['4 954113 0 1 2 3']) + '\n')
  with pytest.raises(UserError, match='line 5 has 6 fields, want 15'):
    ava.read_ava_txt(path)
  path.write_text('\n'.join(_AVA_LINES[:1] + ['2 953958 10 7 x 26 26 21 10 8 1 2 1 21 1396']))
  with pytest.raises(UserError, match="line 2 has 'x'"):
    ava.read_ava_txt(path)


def test_ava_source_skips_missing_images(tmp_path, capsys):
  source = ava.AVASource(_ava_dir(tmp_path, _AVA_LINES))
  assert len(source) == 2 and source.missing == 1 and source.names == ['953619', '954184']
  assert capsys.readouterr().err.count('1 of 3 images') == 1
  image, hist = source[1]
  assert image.dtype == np.uint8 and image.shape == (20, 30, 3)
  assert hist.dtype == np.float32 and hist.shape == (10,)
  np.testing.assert_allclose(hist, np.asarray([0, 0, 4, 8, 41, 56, 10, 3, 4, 2]) / 128, rtol=1e-6)
  with pytest.raises(UserError, match='holds no AVA.txt'):
    ava.AVASource(tmp_path / 'images')


def test_synthetic_histogram_is_fixed_and_ordered():
  import skimage.data  # pylint: disable=g-import-not-at-top
  photo = skimage.data.astronaut()
  h = ava.synthetic_histogram(photo)
  assert h.dtype == np.float32 and h.shape == (10,)
  np.testing.assert_allclose(h.sum(), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(h, ava.synthetic_histogram(photo.copy()))
  np.testing.assert_allclose(h, ava.synthetic_histogram(photo / 255.0), rtol=1e-5)
  flat_black = ava.synthetic_histogram(np.zeros((32, 32, 3), np.uint8))
  mean = lambda p: float((np.arange(1, 11) * p).sum())
  assert 1.9 < mean(flat_black) < mean(h) <= 9.0


# ---------------------------------------------------------------- python -m enhance_jax.score


@pytest.mark.slow
def test_score_cli(tmp_path, mobilenet_v2_pth, capsys):
  _, pth = mobilenet_v2_pth
  rng = np.random.default_rng(0)
  for name, size in (('a.png', (40, 50, 3)), ('b.jpg', (64, 48))):
    Image.fromarray(rng.integers(0, 256, size, np.uint8)).save(tmp_path / name)
  (tmp_path / 'c.png').write_text('not an image')
  args = [str(tmp_path), '--nima', str(pth), '--size', '64']
  assert score.main(args) == 1
  out, err = capsys.readouterr()
  lines = out.strip().splitlines()
  assert lines[0].split() == ['image', 'mean', 'std'] and len(lines) == 3
  assert 'skipped' in err and 'c.png' in err and '1 file(s) skipped' in err
  assert score.main(args + ['--json']) == 1
  rows = json.loads(capsys.readouterr().out)
  assert [r['image'].rsplit('/', 1)[-1] for r in rows] == ['a.png', 'b.jpg']
  assert all(1.0 <= r['mean'] <= 10.0 and r['std'] >= 0 for r in rows)
  table = {line.split()[0]: float(line.split()[1]) for line in lines[1:]}
  assert table[rows[0]['image']] == pytest.approx(rows[0]['mean'], abs=1e-3)
  # The same NIMA as a model directory scores the same.
  variables = weights.nima_params_from_state_dict(weights.load_state_dict(pth))
  weights.write_model_dir(tmp_path / 'model', {'name': 'nima', 'backbone': 'mobilenet_v2'},
                          variables, {})
  assert score.main([str(tmp_path / 'a.png'), '--nima', str(tmp_path / 'model'), '--size', '64',
                     '--json']) == 0
  assert json.loads(capsys.readouterr().out)[0]['mean'] == pytest.approx(rows[0]['mean'], abs=1e-3)
  # Missing weights or images: one sentence, exit 2.
  assert score.main([str(tmp_path / 'a.png'), '--nima', str(tmp_path / 'none.pth')]) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and 'none.pth' in err and len(err.strip().splitlines()) == 1
  assert score.main([str(tmp_path / 'nope.png'), '--nima', str(pth)]) == 2
  assert "error: '" in capsys.readouterr().err
