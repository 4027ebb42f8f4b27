"""Issue 24's metrics against the field's own code on real photographs (scikit-image's): NIQE against
BasicSR 1.4.2's calculate_niqe with the real pristine file of its sdist, MS-SSIM against piq, LPIPS
(alex, vgg, squeeze) against the lpips package with its shipped linear heads and the same backbone
weights in both; and the errors a user meets."""

import sys

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
import skimage.data
import torch

from benchmarks.torch_reference import backbones as torch_backbones
from benchmarks.torch_reference import metric_references
from enhance_jax.errors import UserError
from enhance_jax.eval import dists
from enhance_jax.eval import evaluators
from enhance_jax.eval import lpips
from enhance_jax.eval import ms_ssim
from enhance_jax.eval import niqe
from enhance_jax.ops.resize import imresize_scale
from enhance_jax.eval import quality
from enhance_jax.io import metric_weights


@pytest.fixture(scope='module', name='niqe_params')
def niqe_params_fixture():
  return metric_weights.load_niqe_params(metric_references.pristine_params_path())


@pytest.mark.optimized  # as scoring compiles it: XLA's FMA contraction once moved NIQE by 3e-3
@pytest.mark.parametrize('name,crop', [('coffee', None), ('chelsea', None), ('astronaut', 300)])
def test_niqe_agrees_with_basicsr_on_real_photos(name, crop, niqe_params):
  photo = getattr(skimage.data, name)()[:crop, :crop]
  want = metric_references.niqe_module().calculate_niqe(photo[..., ::-1].astype(np.float64), crop_border=0)
  got = niqe.niqe(photo[None] / 255.0, niqe_params)
  assert got.shape == (1,)
  np.testing.assert_allclose(got[0], want, rtol=1e-3)


def _reference_mscn(img, window):
  mu = ndimage.convolve(img, window, mode='nearest')
  sigma = np.sqrt(np.abs(ndimage.convolve(np.square(img), window, mode='nearest') - np.square(mu)))
  return (img - mu) / (sigma + 1)


@pytest.mark.optimized
def test_niqe_matches_basicsr_step_by_step_on_the_full_astronaut(niqe_params):
  """The whole astronaut is NIQE's hard case: its flat sky amplifies last-bit differences. Y, the MSCN
  coefficients and all 36 features of each block match BasicSR's; only the half-size resize (PyTorch's
  BLAS summation order) differs, by at most 4 float32 ulps, which moves the score by 3.5e-3."""
  ref = metric_references.niqe_module()
  resize = sys.modules['basicsr.utils.matlab_functions'].imresize  # loaded by niqe_module()
  window = niqe_params['gaussian_window']
  photo = skimage.data.astronaut()
  y = np.asarray(niqe.y_255(jnp.asarray(photo[None] / 255.0, jnp.float32))[0])[:480, :480]
  want_y = np.squeeze(ref.to_y_channel(photo[..., ::-1].astype(np.float32))).round()[:480, :480]
  np.testing.assert_array_equal(y, want_y)
  half = (resize(y / 255., scale=0.5, antialiasing=True) * 255.).astype(np.float32)
  for img, size, cols in ((y, 96, slice(0, 18)), (half, 48, slice(18, 36))):
    want = _reference_mscn(img, window)
    got = np.asarray(niqe.mscn(jnp.asarray(img), window))
    np.testing.assert_array_equal(got, want)
    feats = np.asarray(niqe.block_features(niqe.to_blocks(jnp.asarray(got), size)))
    want_feats = np.array([ref.compute_feature(b) for b in np.asarray(niqe.to_blocks(jnp.asarray(want), size))])
    np.testing.assert_allclose(feats, want_feats, atol=1e-6)
    if cols.start == 0:
      np.testing.assert_allclose(np.asarray(niqe.features(photo[None] / 255.0, window))[0, :, cols],
                                 want_feats, atol=1e-6)
  ours = np.asarray(imresize_scale(jnp.asarray(y)[:, :, None] / 255.0, 0.5))[:, :, 0] * 255.0
  assert np.abs(ours - half).max() <= 4 * np.spacing(np.float32(255.0))  # 4 ulps at most


def test_niqe_scores_a_batch_and_a_border_and_prefers_the_sharp_photo(niqe_params):
  photo = skimage.data.astronaut()[:300, :300] / 255.0
  blurred = (photo + np.roll(photo, 1, 0) + np.roll(photo, 1, 1) + np.roll(photo, (1, 1), (0, 1))) / 4
  batch = niqe.niqe(np.stack([photo, blurred]), niqe_params, crop_border=4)
  alone = niqe.niqe(photo, niqe_params, crop_border=4)
  np.testing.assert_allclose(batch[0], alone[0], rtol=1e-5)
  assert batch[0] < batch[1]  # lower is more natural
  with pytest.raises(ValueError, match='two whole 96x96 blocks'):
    niqe.niqe(photo[:100, :100], niqe_params, crop_border=4)
  # One block has no covariance (BasicSR's pinv fails there): too small, and NaN if scored anyway.
  assert niqe.too_small((96, 191, 3)) and not niqe.too_small((96, 192, 3))
  assert niqe.too_small((200, 200, 3), crop_border=5) and not niqe.too_small((200, 200, 3), crop_border=4)
  feats = np.asarray(niqe.features(photo[None, :96, :96], niqe_params['gaussian_window']))[0]
  assert np.isnan(niqe.mvg_distance(feats, niqe_params['mu_pris_param'], niqe_params['cov_pris_param']))


def test_niqe_parameters_are_found_checked_and_refused_with_the_fix(tmp_path, monkeypatch):
  monkeypatch.setenv('ENHANCE_JAX_MODELS', str(tmp_path / 'cache'))
  with pytest.raises(UserError, match='put https://raw.githubusercontent.com/XPixelGroup/BasicSR'):
    metric_weights.load_niqe_params(download=False)
  with pytest.raises(UserError, match='do not exist'):
    metric_weights.load_niqe_params(tmp_path / 'missing.npz')
  wrong = tmp_path / 'wrong.npz'
  np.savez(wrong, mu_pris_param=np.zeros((1, 36)), cov_pris_param=np.zeros((30, 30)))
  with pytest.raises(UserError, match='cov_pris_param, gaussian_window missing or of the wrong shape'):
    metric_weights.load_niqe_params(wrong)
  (tmp_path / 'cache').mkdir()
  (tmp_path / 'cache' / metric_weights.NIQE_FILE).write_bytes(
      metric_references.pristine_params_path().read_bytes())
  params = metric_weights.load_niqe_params(download=False)
  assert params['mu_pris_param'].shape == (36,) and params['gaussian_window'].shape == (7, 7)


def _pair(name, size):
  photo = getattr(skimage.data, name)()[:size[0], :size[1]] / 255.0
  noisy = np.clip(photo + np.random.RandomState(0).normal(0, 0.05, photo.shape), 0, 1)
  return photo.astype(np.float32), noisy.astype(np.float32)


def _nchw(x):
  return torch.tensor(x).permute(2, 0, 1)[None].float()


@pytest.mark.parametrize('name, size', [('astronaut', (256, 256)), ('chelsea', (200, 201))])
def test_ms_ssim_agrees_with_piq(name, size):
  x, y = _pair(name, size)
  want = metric_references.piq_ms_ssim()(_nchw(x), _nchw(y), data_range=1.0).item()
  got = ms_ssim.ms_ssim(x[None], y[None])
  np.testing.assert_allclose(float(got[0]), want, atol=1e-4)
  assert float(ms_ssim.ms_ssim(x[None], x[None])[0]) == pytest.approx(1.0, abs=1e-5)
  with pytest.raises(ValueError, match='at least 161 pixels'):
    ms_ssim.ms_ssim(x[None, :160], y[None, :160])


TORCH_NETS = {'alex': ('alexnet', torch_backbones.torch_alexnet),
              'vgg': ('vgg16', torch_backbones.torch_vgg16),
              'squeeze': ('squeezenet1_1', torch_backbones.torch_squeezenet1_1)}


@pytest.mark.parametrize('net', sorted(TORCH_NETS))
def test_lpips_agrees_with_the_lpips_package_on_its_own_heads(net):
  name, build = TORCH_NETS[net]
  backbone = torch_backbones.randomise(build())
  reference = metric_references.lpips_package({name: backbone}).LPIPS(net=net, pnet_rand=True,
                                                                      verbose=False).eval()
  variables = metric_weights._BACKBONE_IMPORTERS[name](  # pylint: disable=protected-access
      {k: v.detach().numpy() for k, v in backbone.state_dict().items()})
  heads = metric_weights.load_lpips_heads(net)  # the package's shipped weights/v0.1/NET.pth
  x, y = _pair('coffee', (160, 224))
  with torch.no_grad():
    want = reference(_nchw(x), _nchw(y), normalize=True).item()
  got = lpips.distance(net, variables, heads, x[None], y[None])
  np.testing.assert_allclose(float(got[0]), want, rtol=1e-4)
  assert float(lpips.distance(net, variables, heads, x[None], x[None])[0]) == 0.0


def test_lpips_weights_are_refused_with_the_fix(tmp_path):
  with pytest.raises(UserError, match='Unknown LPIPS net'):
    metric_weights.load_lpips_heads('resnet')
  bad = tmp_path / 'heads.npz'
  np.savez(bad, **{'lin0.model.1.weight': np.zeros((1, 32, 1, 1))})
  with pytest.raises(UserError, match=r'lin0.model.1.weight of shape \(1, 64, 1, 1\)'):
    metric_weights.load_lpips_heads('alex', bad)
  vgg = tmp_path / 'vgg.npz'
  np.savez(vgg, **{f'features.{i}.weight': np.zeros((64, 3, 3, 3)) for i in (0,)})
  with pytest.raises(UserError, match="as LPIPS's alexnet"):
    metric_weights.load_lpips_backbone('alex', vgg)
  assert metric_weights.load_lpips_backbone('alex', None) is None  # random, said once


def test_dists_agrees_with_dists_pytorch_on_its_own_weights(tmp_path):
  vgg = torch_backbones.randomise(torch_backbones.torch_vgg16())
  reference = metric_references.dists_module(vgg).DISTS(load_weights=False).eval()
  alpha, beta = metric_weights.load_dists_weights()  # the package's shipped weights.pt
  reference.alpha.data = torch.tensor(alpha).view(1, -1, 1, 1)
  reference.beta.data = torch.tensor(beta).view(1, -1, 1, 1)
  variables = metric_weights._BACKBONE_IMPORTERS['vgg16'](  # pylint: disable=protected-access
      {k: v.detach().numpy() for k, v in vgg.state_dict().items()})
  x, y = _pair('astronaut', (128, 160))
  want = reference(_nchw(x), _nchw(y)).item()
  got = dists.distance(variables, alpha, beta, x[None], y[None])
  np.testing.assert_allclose(float(got[0]), want, atol=1e-5)
  assert abs(float(dists.distance(variables, alpha, beta, x[None], x[None])[0])) < 1e-5
  np.savez(tmp_path / 'bad_dists.npz', alpha=alpha, beta=beta[:10])
  with pytest.raises(UserError, match='beta of 1475 values'):
    metric_weights.load_dists_weights(tmp_path / 'bad_dists.npz')


def test_the_evaluator_adds_extra_metrics_and_skips_images_too_small_for_them():
  photo = skimage.data.astronaut().astype(np.float32) / 255.0
  pairs = [(photo[:200:2, :200:2], photo[:200, :200]), (photo[:100:2, :100:2], photo[:100, :100])]
  predict = lambda variables, lr: jnp.repeat(jnp.repeat(lr, 2, 1), 2, 2)
  evaluator = evaluators.Evaluator(predict, pairs, 2, extra={'ms_ssim': quality.BUILDERS['ms_ssim'](None)})
  records = [r for r, _ in evaluator.records({})]
  assert np.isnan(records[1]['model']['ms_ssim']) and 0 < records[0]['model']['ms_ssim'] < 1
  assert 0 < records[0]['bicubic']['ms_ssim'] < 1
  mean = evaluators.mean_scores(records, ('model', 'bicubic'))
  assert mean['model']['ms_ssim'] == pytest.approx(records[0]['model']['ms_ssim'])
  assert mean['model']['psnr'] == pytest.approx(np.mean([r['model']['psnr'] for r in records]))
