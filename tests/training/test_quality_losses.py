"""Issue 24's loss terms: `ffl` against the authors' focal-frequency-loss 0.3.0, `ms_ssim` and
`ms_ssim_l1` against piq's MS-SSIM, `ldl` against BasicSR 1.4.2's artifact map, on real photo patches; each differentiable with a finite gradient
that reaches every parameter group of G; and a short run trains with them through the core."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
import torch
from focal_frequency_loss import FocalFrequencyLoss

from benchmarks.torch_reference import backbones as torch_backbones
from benchmarks.torch_reference import metric_references
from enhance_jax import models
from enhance_jax import train
from enhance_jax.errors import UserError
from enhance_jax.eval import quality
from enhance_jax.io import metric_weights
from enhance_jax.training import config as config_lib
from enhance_jax.training import frozen
from enhance_jax.training import frequency_losses
from enhance_jax.training import ldl
from enhance_jax.training import losses

from conftest import tiny_config


def _patches(side, n=2, seed=0):
  rng = np.random.default_rng(seed)
  photos = [skimage.data.astronaut(), skimage.data.coffee()]
  hr = np.stack([p[:side, :side] / 255.0 for p in photos[:n]]).astype(np.float32)
  sr = np.clip(hr + rng.normal(0, 0.04, hr.shape) + 0.02, 0, 1).astype(np.float32)
  return sr, hr


def _nchw(x):
  return torch.tensor(np.asarray(x)).permute(0, 3, 1, 2).float()


@pytest.mark.parametrize('options', [
    {}, {'alpha': 2.0, 'patch_factor': 2}, {'log_matrix': True}, {'ave_spectrum': True},
    {'batch_matrix': True}])
def test_focal_frequency_matches_the_authors_package(options):
  sr, hr = _patches(64)
  want = FocalFrequencyLoss(**options)(_nchw(sr), _nchw(hr)).item()
  got = frequency_losses.focal_frequency(jnp.asarray(sr), jnp.asarray(hr), **options)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def _inputs(sr, hr, config):
  return losses.LossInputs(outputs={'image': jnp.asarray(sr)}, batch={'hr': jnp.asarray(hr)},
                           options=config.loss)


def test_ms_ssim_terms_match_piq_on_a_full_size_patch():
  config = tiny_config()
  sr, hr = _patches(192)
  piq_value = metric_references.piq_ms_ssim()(_nchw(sr), _nchw(hr), data_range=1.0).item()
  x = _inputs(sr, hr, config)
  np.testing.assert_allclose(float(losses.LOSSES['ms_ssim'](x)), 1.0 - piq_value, atol=1e-5)
  l1 = float(np.mean(np.abs(sr - hr)))
  np.testing.assert_allclose(float(losses.LOSSES['ms_ssim_l1'](x)),
                             0.84 * (1.0 - piq_value) + 0.16 * l1, atol=1e-5)


def test_ldl_matches_basicsr_on_real_photo_patches():
  """The artifact map and the loss as BasicSR's RealESRGANModel computes them (get_refined_artifact_map,
  window 7, then L1 of the weighted images); the EMA output is nearer the target in some places only."""
  sr, hr = _patches(64)
  rng = np.random.default_rng(1)
  ema = np.clip(hr + rng.normal(0, 0.04, hr.shape), 0, 1).astype(np.float32)
  reference = metric_references.ldl_artifact_map()
  want_map = reference(_nchw(hr), _nchw(sr), _nchw(ema), 7)
  want = torch.nn.functional.l1_loss(want_map * _nchw(sr), want_map * _nchw(hr)).item()
  got_map = ldl.artifact_map(jnp.asarray(hr), jnp.asarray(sr), jnp.asarray(ema), 7)
  zero = np.asarray(got_map)[..., 0] == 0
  assert 0.2 < zero.mean() < 0.8  # both branches of the map are exercised
  np.testing.assert_allclose(np.asarray(got_map)[..., 0], want_map[:, 0].numpy(), rtol=1e-4,
                             atol=1e-7)
  config = tiny_config()
  x = dataclasses.replace(_inputs(sr, hr, config), ema_outputs={'image': jnp.asarray(ema)})
  np.testing.assert_allclose(float(losses.LOSSES['ldl'](x)), want, rtol=1e-5)


def test_ldl_needs_the_ema_and_an_odd_window():
  with pytest.raises(UserError, match='train.ema_decay'):
    tiny_config('loss.pretrain.ldl=1.0', 'train.ema_decay=0')
  with pytest.raises(UserError, match='ldl_kernel'):
    tiny_config('loss.pretrain.ldl=1.0', 'train.ema_decay=0.999', 'loss.ldl_kernel=4')


def _frozen(term, config):
  names = losses.NEEDS.get(term, ())
  return frozen.bind(frozen.modules(names, config), frozen.load(names, config))


def _torchvision_file(tmp_path, build):
  """A torch twin of a torchvision backbone, randomised, saved as its state_dict (.npz): (module, path)."""
  net = torch_backbones.randomise(build())
  path = tmp_path / 'backbone.npz'
  np.savez(path, **{k: v.detach().numpy() for k, v in net.state_dict().items()})
  return net, str(path)


def test_lpips_term_matches_the_lpips_package(tmp_path):
  net, path = _torchvision_file(tmp_path, torch_backbones.torch_vgg16)
  config = tiny_config(f'loss.lpips_weights={path}')
  reference = metric_references.lpips_package({'vgg16': net}).LPIPS(net='vgg', pnet_rand=True,
                                                                    verbose=False).eval()
  sr, hr = _patches(64)
  with torch.no_grad():
    want = reference(_nchw(sr), _nchw(hr), normalize=True).mean().item()
  x = losses.LossInputs(outputs={'image': jnp.asarray(sr)}, batch={'hr': jnp.asarray(hr)},
                        options=config.loss, frozen=_frozen('lpips', config))
  np.testing.assert_allclose(float(losses.LOSSES['lpips'](x)), want, rtol=1e-4)


def test_dists_term_matches_dists_pytorch(tmp_path):
  net, path = _torchvision_file(tmp_path, torch_backbones.torch_vgg16)
  config = tiny_config(f'loss.dists_weights={path}')
  reference = metric_references.dists_module(net).DISTS(load_weights=False).eval()
  alpha, beta = metric_weights.load_dists_weights()
  reference.alpha.data = torch.tensor(alpha).view(1, -1, 1, 1)
  reference.beta.data = torch.tensor(beta).view(1, -1, 1, 1)
  sr, hr = _patches(64)
  want = reference(_nchw(sr), _nchw(hr)).mean().item()
  x = losses.LossInputs(outputs={'image': jnp.asarray(sr)}, batch={'hr': jnp.asarray(hr)},
                        options=config.loss, frozen=_frozen('dists', config))
  np.testing.assert_allclose(float(losses.LOSSES['dists'](x)), want, atol=1e-5)


@pytest.mark.parametrize('term', ['ffl', 'ms_ssim', 'ms_ssim_l1', 'lpips', 'dists', 'ldl'])
def test_the_gradient_reaches_every_layer_of_g(term):
  """On 32-pixel patches MS-SSIM keeps the scales that fit (one) and stays finite; LPIPS and DISTS
  run through their frozen networks (random backbones here); LDL against a stand-in EMA output."""
  config = tiny_config()
  generator = models.build_generator(config)
  _, hr = _patches(32)
  lr = jnp.asarray(hr[:, ::4, ::4])
  params = generator.init(jax.random.key(0), lr)
  bound = _frozen(term, config)

  def loss(p):
    out = generator.apply(p, lr)
    return losses.LOSSES[term](dataclasses.replace(_inputs(out, hr, config), frozen=bound,
                                                   ema_outputs={'image': jnp.asarray(hr) + 0.01}))

  value, grads = jax.value_and_grad(loss)(params)
  assert np.isfinite(float(value)) and float(value) > 0
  norms = {path: float(jnp.linalg.norm(g)) for path, g in
           jax.tree_util.tree_flatten_with_path(grads)[0]}
  assert all(np.isfinite(v) for v in norms.values())
  assert sum(v > 0 for v in norms.values()) >= 0.9 * len(norms), norms


@pytest.mark.slow
def test_a_run_trains_with_the_new_terms_through_the_core(tmp_path):
  config = tiny_config('loss.pretrain.ffl=0.5', 'loss.pretrain.ms_ssim_l1=1.0', 'loss.pretrain.lpips=0.1',
                       'loss.lpips_net=squeeze', 'loss.gan.ldl=1.0', 'train.ema_decay=0.999',
                       'train.num_steps=5',
                       'train.pretrain_steps=3', 'train.eval_every_steps=3',
                       'train.checkpoint_every_steps=3', 'train.progress=False')
  train.train_and_evaluate(config, str(tmp_path))
  rows = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  last = [r for r in rows if r.get('split') == 'train'][-1]
  first = [r for r in rows if r.get('split') == 'train'][0]
  assert first['step'] <= 3 and all(np.isfinite(first[k]) and first[k] > 0
                                    for k in ('loss_ffl', 'loss_ms_ssim_l1', 'loss_lpips', 'g_loss'))
  assert last['step'] == 5 and np.isfinite(last['loss_ldl']) and last['loss_ldl'] > 0


@pytest.mark.slow
def test_validation_computes_the_perceptual_metrics_and_keeps_the_best_by_lpips(tmp_path, niqe_file,
                                                                                 capsys):
  config = tiny_config('train.eval_metrics=("psnr", "ssim", "lpips", "ms_ssim", "niqe")',
                       'train.best_metric=lpips', 'loss.lpips_net=squeeze', f'train.niqe_params={niqe_file}',
                       'data.val_patch_size=192', 'data.val_max_images=2', 'train.num_steps=4',
                       'train.pretrain_steps=4', 'train.eval_every_steps=2',
                       'train.checkpoint_every_steps=4', 'train.progress=False')
  train.train_and_evaluate(config, str(tmp_path))
  rows = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  val = [r for r in rows if r.get('split') == 'val']
  assert [r['step'] for r in val] == [2, 4]
  for r in val:
    assert 0 < r['lpips'] and 0 < r['ms_ssim'] <= 1 and r['niqe'] > 0, r
  lines = [line for line in capsys.readouterr().out.splitlines() if ' val ' in line]
  assert len(lines) == 2 and '(lpips: best)' in lines[0]
  assert ('(lpips: best)' in lines[1]) == (val[1]['lpips'] < val[0]['lpips'])  # lower is better


@pytest.fixture(name='niqe_file')
def niqe_file_fixture():
  return str(metric_references.pristine_params_path())


def test_a_perceptual_best_metric_must_be_computed_and_fit_the_crops():
  with pytest.raises(UserError, match='is not computed: add it to train.eval_metrics'):
    tiny_config('train.best_metric=lpips')
  with pytest.raises(UserError, match='need validation crops of at least 161 pixels'):
    tiny_config('train.eval_metrics=("psnr", "ssim", "ms_ssim")', 'data.val_patch_size=64')
  with pytest.raises(UserError, match=r"train.eval_metrics names \['fid'\]"):
    tiny_config('train.eval_metrics=("psnr", "fid")')


def test_auto_best_metric_is_lpips_with_its_weights_and_says_so_without(tmp_path, capsys):
  assert quality.best_metric(tiny_config('train.best_metric=auto')) == 'psnr'
  with_weights = tiny_config('train.best_metric=auto', 'loss.lpips_weights=/models/vgg16.pth')
  assert quality.best_metric(with_weights) == 'lpips' and 'lpips' in quality.requested(with_weights)
  for name in ('realesrgan_x4plus', 'swinir_real_x4', 'realplksr_gan_x4'):
    assert config_lib.load_experiment(name).train.best_metric == 'auto'
  config = tiny_config('train.best_metric=auto', 'train.num_steps=2', 'train.pretrain_steps=2',
                       'train.eval_every_steps=2', 'train.checkpoint_every_steps=2', 'train.progress=False')
  train.train_and_evaluate(config, str(tmp_path))
  out = capsys.readouterr().out
  assert 'best checkpoint by validation psnr (train.best_metric=auto: PSNR, as LPIPS needs' in out
  assert '(psnr: best)' in out
