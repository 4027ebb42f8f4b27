"""Tests for enhance_jax.degradations: resize/blur matrices against PIL and scipy, augment, crops."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import skimage.data
from PIL import Image

from enhance_jax import degradations as deg
from enhance_jax.errors import UserError


@pytest.fixture(scope='module')
def astronaut():
  """A real 512x512 RGB photo in [0, 1]."""
  return skimage.data.astronaut().astype(np.float32) / 255.0


def _pil_resize(img, hw):
  """PIL bicubic per channel in float ('F') mode, so no uint8 rounding enters the comparison."""
  channels = [Image.fromarray(img[..., c]).resize(hw[::-1], Image.BICUBIC) for c in range(img.shape[-1])]
  return np.stack([np.asarray(c) for c in channels], axis=-1)


@pytest.mark.parametrize('method', ['bicubic', 'bilinear', 'nearest'])
@pytest.mark.parametrize('sizes', [(512, 128), (37, 11), (16, 64), (10, 10)])
def test_resize_matrix_rows_sum_to_one(method, sizes):
  m = deg.resize_matrix(*sizes, method=method)
  assert m.shape == sizes[::-1] and m.dtype == np.float32
  np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-6)


def test_resize_matrix_is_cached_and_read_only():
  m = deg.resize_matrix(40, 10)
  assert deg.resize_matrix(40, 10) is m
  with pytest.raises(ValueError):
    m[0, 0] = 1.0


def test_resize_matrix_matches_matlab_x2_bicubic_weights():
  # MATLAB imresize(x, 0.5, 'bicubic'): the a=-0.5 kernel stretched x2, taps at distances 0.5..3.5.
  half = np.array([-0.0234375, -0.0703125, 0.2265625, 0.8671875]) / 2
  kernel = np.concatenate([half, half[::-1]])
  row = deg.resize_matrix(16, 8)[3]  # output 3 centres on input 6.5: taps on inputs 3..10
  np.testing.assert_allclose(row[3:11], kernel, atol=1e-7)
  assert np.all(row[:3] == 0) and np.all(row[11:] == 0)


def test_resize_matrix_folds_boundary_symmetrically():
  # Output 0 of 8->4 centres on input 0.5: taps on -3..4, with -1->0, -2->1, -3->2 (edge repeated).
  half = np.array([-0.0234375, -0.0703125, 0.2265625, 0.8671875]) / 2
  taps = np.concatenate([half, half[::-1]])
  expected = np.zeros(8)
  for src, w in zip([2, 1, 0, 0, 1, 2, 3, 4], taps):
    expected[src] += w
  np.testing.assert_allclose(deg.resize_matrix(8, 4)[0], expected, atol=1e-7)


def test_nearest_picks_source_pixels():
  img = np.arange(8, dtype=np.float32).reshape(1, 8, 1) * np.ones((8, 1, 1), np.float32)
  out = deg.resize(img, (4, 4), method='nearest')
  np.testing.assert_array_equal(out[0, :, 0], [1, 3, 5, 7])  # floor((i + 0.5) * 2)


def test_unknown_method_raises():
  with pytest.raises(ValueError, match='bilinear'):
    deg.resize_matrix(10, 5, method='lanczos7')


@pytest.mark.parametrize('method', ['bicubic', 'bilinear', 'nearest'])
def test_resize_keeps_constant_image_constant(method):
  img = np.full((30, 45, 3), 0.37, np.float32)
  for hw in [(7, 11), (30, 45), (120, 180)]:
    np.testing.assert_allclose(deg.resize(img, hw, method), 0.37, atol=1e-6)


def test_bicubic_downscale_matches_pil(astronaut):
  # Reference: PIL Image.resize(..., Image.BICUBIC) (a=-0.5, antialiased) on float 'F' channels. PIL
  # renormalises clipped border taps where we mirror, so only the 2-pixel border may differ.
  ours = deg.resize(astronaut, (128, 128))
  ref = _pil_resize(astronaut, (128, 128))
  assert np.abs(ours - ref).mean() < 0.02
  np.testing.assert_allclose(ours[2:-2, 2:-2], ref[2:-2, 2:-2], atol=1e-5)


def test_bicubic_upscale_matches_pil(astronaut):
  lr = deg.resize(astronaut[:128, :96], (32, 24))
  ours = deg.resize(lr, (128, 96))
  assert ours.shape == (128, 96, 3)
  inner = np.s_[8:-8, 8:-8]  # the mirrored boundary reaches 2 LR pixels = 8 HR pixels in
  np.testing.assert_allclose(ours[inner], _pil_resize(lr, (128, 96))[inner], atol=1e-5)


def test_numpy_and_jax_give_the_same_resize(astronaut):
  img = astronaut[:200, :160]
  ours = deg.resize(img, (50, 40))
  on_jax = deg.resize(jnp.asarray(img), (50, 40))
  assert isinstance(on_jax, jax.Array) and isinstance(ours, np.ndarray)
  np.testing.assert_allclose(np.asarray(on_jax), ours, atol=1e-5)
  jitted = jax.jit(lambda x: deg.resize(x, (50, 40)))(jnp.asarray(img))
  np.testing.assert_allclose(np.asarray(jitted), ours, atol=1e-5)


def test_resize_shapes_hwc_and_nhwc(astronaut):
  batch = np.stack([astronaut[:64, :48], astronaut[64:128, :48]])
  out = deg.resize(batch, (16, 12))
  assert out.shape == (2, 16, 12, 3) and out.dtype == np.float32
  np.testing.assert_allclose(out[1], deg.resize(batch[1], (16, 12)), atol=1e-6)
  assert deg.imresize_scale(batch[0], 4).shape == (256, 192, 3)
  assert deg.imresize_scale(batch, 0.25).shape == (2, 16, 12, 3)
  with pytest.raises(ValueError, match='HWC'):
    deg.resize(astronaut[..., 0], (16, 16))


def test_resize_does_not_clip():
  img = np.zeros((16, 16, 1), np.float32)
  img[:, 8:] = 1.0  # a hard edge makes the bicubic kernel overshoot
  up = deg.resize(img, (64, 64))
  assert up.max() > 1.0 and up.min() < 0.0


@pytest.mark.parametrize('sigma', [0.5, 1.0, 1.5, 2.0])
def test_gaussian_blur_matches_scipy(astronaut, sigma):
  # Where ceil(3 sigma) equals scipy's radius int(3 sigma + 0.5), the two filters must agree.
  img = astronaut[:96, :80]
  ref = scipy.ndimage.gaussian_filter(img, (sigma, sigma, 0), mode='reflect', truncate=3.0)
  np.testing.assert_allclose(deg.gaussian_blur(img, sigma), ref, atol=1e-5)


def test_gaussian_blur_preserves_constant_and_mean(astronaut):
  np.testing.assert_allclose(deg.gaussian_blur(np.full((20, 30, 3), 0.6, np.float32), 1.5), 0.6, atol=1e-6)
  blurred = deg.gaussian_blur(astronaut, 1.5)
  assert abs(blurred.mean() - astronaut.mean()) < 1e-3
  assert blurred.std() < astronaut.std()  # it really smooths
  np.testing.assert_allclose(deg.gaussian_blur(astronaut[:8, :8], 0.0), astronaut[:8, :8])


def test_gaussian_matrix_radius_is_ceil_three_sigma():
  m = deg.gaussian_matrix(40, 1.5)  # radius 5: row 20 touches columns 15..25 only
  assert np.count_nonzero(m[20]) == 11 and m[20, 15] > 0 and m[20, 25] > 0
  np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-6)


def test_bicubic_down_blur(astronaut):
  lr = deg.bicubic_down_blur(astronaut)
  assert lr.shape == (128, 128, 3) and lr.dtype == np.float32
  assert lr.min() >= 0.0 and lr.max() <= 1.0
  np.testing.assert_array_equal(lr, deg.bicubic_down_blur(astronaut))
  plain = deg.DEGRADATIONS['bicubic'](astronaut, 4)
  assert np.abs(lr - plain).mean() > 1e-3  # the blur is applied
  np.testing.assert_allclose(lr, np.clip(deg.gaussian_blur(plain, 1.5), 0, 1), atol=0.02)
  with pytest.raises(ValueError, match='divisible'):
    deg.bicubic_down_blur(astronaut[:510])


def test_registry():
  hr = np.random.default_rng(0).random((2, 24, 32, 3), dtype=np.float32)
  for name, fn in deg.DEGRADATIONS.items():
    assert fn(hr, 4).shape == (2, 6, 8, 3), name
    assert deg.get_degradation(name) is fn
    on_device = jax.jit(lambda x, fn=fn: fn(x, 4))(jnp.asarray(hr))  # the same op runs on device
    np.testing.assert_allclose(np.asarray(on_device), fn(hr, 4), atol=1e-5, err_msg=name)
  with pytest.raises(UserError, match='bicubic_blur'):
    deg.get_degradation('jpeg9000')


def test_flip_rot90_shapes():
  img = np.random.default_rng(0).random((6, 4, 3), dtype=np.float32)
  assert deg.flip_rot90(img, True, True, True).shape == (4, 6, 3)
  np.testing.assert_array_equal(deg.flip_rot90(img, True, False, False), img[:, ::-1])
  np.testing.assert_array_equal(deg.flip_rot90(img, False, True, False), img[::-1])
  np.testing.assert_array_equal(deg.flip_rot90(img, False, False, True), img.transpose(1, 0, 2))
  np.testing.assert_array_equal(deg.flip_rot90(img, False, False, False), img)


@pytest.mark.parametrize('bits', list(itertools.product([False, True], repeat=3)))
def test_augment_commutes_with_degradation(astronaut, bits):
  hr = astronaut[100:196, 200:264]  # non-square, so rot90 must swap the per-axis matrices too
  for name, degrade in deg.DEGRADATIONS.items():
    np.testing.assert_allclose(degrade(deg.flip_rot90(hr, *bits), 4),
                               deg.flip_rot90(degrade(hr, 4), *bits), atol=1e-5, err_msg=name)


def test_random_flip_rot90_is_seeded():
  img = np.random.default_rng(0).random((6, 4, 3), dtype=np.float32)
  outs = [deg.random_flip_rot90(img, np.random.default_rng(s)) for s in range(32)]
  again = [deg.random_flip_rot90(img, np.random.default_rng(s)) for s in range(32)]
  for a, b in zip(outs, again):
    np.testing.assert_array_equal(a, b)
  assert len({o.tobytes() for o in outs}) > 4  # several of the 8 variants occur


def test_random_crop(astronaut):
  crop = deg.random_crop(astronaut, 96, np.random.default_rng(3))
  assert crop.shape == (96, 96, 3)
  np.testing.assert_array_equal(crop, deg.random_crop(astronaut, 96, np.random.default_rng(3)))
  assert not np.array_equal(crop, deg.random_crop(astronaut, 96, np.random.default_rng(4)))
  assert deg.random_crop(astronaut[:96, :100], 96, np.random.default_rng(0)).shape == (96, 96, 3)
  coords = np.stack(np.meshgrid(np.arange(20), np.arange(30), indexing='ij'), axis=-1)  # pixel = (y, x)
  corners = {tuple(deg.random_crop(coords, 8, np.random.default_rng(s))[0, 0]) for s in range(50)}
  tops, lefts = zip(*corners)
  assert min(tops) >= 0 and max(tops) <= 12 and min(lefts) >= 0 and max(lefts) <= 22
  assert len(set(tops)) > 3 and len(set(lefts)) > 3  # both offsets are random
  with pytest.raises(UserError, match=r'80x600.*128x128.*data\.patch_size'):
    deg.random_crop(np.zeros((80, 600, 3), np.float32), 128, np.random.default_rng(0))


def test_mod_crop():
  assert deg.mod_crop(np.zeros((13, 10, 3)), 4).shape == (12, 8, 3)
  assert deg.mod_crop(np.zeros((2, 13, 10, 3)), 3).shape == (2, 12, 9, 3)
  img = np.arange(25.0).reshape(5, 5, 1)
  np.testing.assert_array_equal(deg.mod_crop(img, 2), img[:4, :4])
