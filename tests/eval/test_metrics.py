"""Tests for enhance_jax.eval.metrics against scikit-image and hand computations on real photos."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
import skimage.metrics

from enhance_jax.eval import metrics

SKIMAGE_SSIM = dict(data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


@pytest.fixture(scope='module')
def pair():
  """Two real crops (astronaut, coffee) and noisy versions of them, NHWC float32 in [0, 1]."""
  rng = np.random.default_rng(0)
  clean = np.stack([skimage.data.astronaut()[:128, 100:228], skimage.data.coffee()[100:228, 200:328]])
  clean = clean.astype(np.float32) / 255.0
  noisy = np.clip(clean + rng.normal(0, [[[[0.03]]], [[[0.08]]]], clean.shape), 0, 1).astype(np.float32)
  return clean, noisy


def test_psnr_matches_skimage(pair):
  clean, noisy = pair
  ours = np.asarray(metrics.psnr(noisy, clean))
  assert ours.shape == (2,)
  ref = [skimage.metrics.peak_signal_noise_ratio(c, n, data_range=1.0) for c, n in zip(clean, noisy)]
  np.testing.assert_allclose(ours, ref, atol=1e-4)
  assert ours[0] > ours[1] + 5  # less noise, higher PSNR
  np.testing.assert_allclose(metrics.psnr(noisy * 255, clean * 255, max_val=255.0), ref, atol=1e-3)


def test_ssim_matches_skimage(pair):
  clean, noisy = pair
  ours = np.asarray(metrics.ssim(noisy, clean))
  assert ours.shape == (2,)
  ref = [skimage.metrics.structural_similarity(c, n, channel_axis=-1, **SKIMAGE_SSIM)
         for c, n in zip(clean, noisy)]
  np.testing.assert_allclose(ours, ref, atol=1e-3)
  assert ours[0] > ours[1]


def test_grey_and_hwc_inputs(pair):
  clean, noisy = pair
  grey_c, grey_n = clean[0, ..., :1], noisy[0, ..., :1]
  assert metrics.psnr(grey_n, grey_c).shape == ()
  np.testing.assert_allclose(metrics.ssim(grey_n, grey_c),
                             skimage.metrics.structural_similarity(grey_c[..., 0], grey_n[..., 0],
                                                                   **SKIMAGE_SSIM), atol=1e-3)
  np.testing.assert_allclose(metrics.mse(grey_n, grey_c), np.mean((grey_n - grey_c) ** 2), rtol=1e-5)


def test_identical_images(pair):
  clean, _ = pair
  np.testing.assert_allclose(metrics.ssim(clean, clean), 1.0, atol=1e-6)
  np.testing.assert_array_equal(metrics.mse(clean, clean), 0.0)
  assert np.all(np.isinf(metrics.psnr(clean, clean)))


def test_rgb_to_y():
  rgb = np.array([[[0, 0, 0], [1, 1, 1], [1, 0, 0], [0.2, 0.5, 0.7]]], np.float32)
  expected = (16 + 65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255
  y = metrics.rgb_to_y(rgb)
  assert y.shape == (1, 4, 1) and isinstance(y, np.ndarray)
  np.testing.assert_allclose(y[..., 0], expected, rtol=1e-6)
  np.testing.assert_allclose(y[0, :2, 0], [16 / 255, 235 / 255], atol=1e-6)
  np.testing.assert_allclose(metrics.rgb_to_y(jnp.asarray(rgb)), y, rtol=1e-6)


def test_psnr_y_matches_hand_computation(pair):
  clean, noisy = pair
  out = metrics.sr_metrics(noisy, clean, scale=4)
  weights = np.array([65.481, 128.553, 24.966]) / 255
  to_y = lambda x: 16 / 255 + x.astype(np.float64) @ weights
  err = (to_y(noisy) - to_y(clean))[:, 4:-4, 4:-4]
  expected = 10 * np.log10(1.0 / np.mean(err ** 2, axis=(1, 2)))
  np.testing.assert_allclose(out['psnr_y'], expected, atol=1e-3)


def test_sr_metrics_under_jit(pair):
  clean, noisy = pair
  fn = jax.jit(functools.partial(metrics.sr_metrics, scale=4))
  out = fn(jnp.asarray(noisy), jnp.asarray(clean))
  assert set(out) == {'psnr', 'ssim', 'mse', 'psnr_y', 'ssim_y'}
  for name, value in out.items():
    assert value.shape == (2,), name
  eager = metrics.sr_metrics(noisy, clean, scale=4)
  for name in out:
    np.testing.assert_allclose(out[name], eager[name], rtol=1e-5, err_msg=name)
  y = lambda x: metrics.rgb_to_y(x)[:, 4:-4, 4:-4]
  ref = [skimage.metrics.structural_similarity(c[..., 0], n[..., 0], **SKIMAGE_SSIM)
         for c, n in zip(y(clean), y(noisy))]
  np.testing.assert_allclose(out['ssim_y'], ref, atol=1e-3)


def test_sr_metrics_clips_sr(pair):
  clean, _ = pair
  overshoot = clean.copy()
  overshoot[:, :10] += 0.5  # values above 1 are clipped before scoring
  np.testing.assert_allclose(metrics.sr_metrics(overshoot, clean, 2)['mse'],
                             metrics.mse(np.clip(overshoot, 0, 1), clean), rtol=1e-6)


def test_border_crop_changes_the_y_scores(pair):
  clean, _ = pair
  broken = clean.copy()
  broken[:, :3] = 0.0  # damage only a 3-pixel top border
  cropped = metrics.sr_metrics(broken, clean, scale=4)
  uncropped = metrics.sr_metrics(broken, clean, scale=2)
  assert np.all(np.isinf(cropped['psnr_y'])) and np.allclose(cropped['ssim_y'], 1.0, atol=1e-6)
  assert np.all(np.isfinite(uncropped['psnr_y'])) and np.all(uncropped['ssim_y'] < 1.0 - 1e-4)
  assert np.all(cropped['mse'] > 0)  # the RGB scores use the whole image


def test_quantize():
  img = np.array([-0.1, 0.0, 0.6 / 255, 1.49 / 255, 0.5, 1.2], np.float32)
  np.testing.assert_allclose(metrics.quantize(img), np.array([0, 0, 1, 1, 128, 255]) / 255, atol=1e-7)
  assert isinstance(metrics.quantize(img), np.ndarray)
  np.testing.assert_allclose(metrics.quantize(jnp.asarray(img)), metrics.quantize(img), atol=1e-7)
