"""Tests for enhance_jax.data.degradations: resize/blur matrices against PIL and scipy, augment, crops."""

import functools
import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import skimage.data
from PIL import Image

from enhance_jax.data import degradations as deg
from enhance_jax.errors import UserError
from enhance_jax.ops import resize


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
  m = resize.resize_matrix(*sizes, method=method)
  assert m.shape == sizes[::-1] and m.dtype == np.float32
  np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-6)


def test_resize_matrix_is_cached_and_read_only():
  m = resize.resize_matrix(40, 10)
  assert resize.resize_matrix(40, 10) is m
  with pytest.raises(ValueError):
    m[0, 0] = 1.0


def test_resize_matrix_matches_matlab_x2_bicubic_weights():
  # MATLAB imresize(x, 0.5, 'bicubic'): the a=-0.5 kernel stretched x2, taps at distances 0.5..3.5.
  half = np.array([-0.0234375, -0.0703125, 0.2265625, 0.8671875]) / 2
  kernel = np.concatenate([half, half[::-1]])
  row = resize.resize_matrix(16, 8)[3]  # output 3 centres on input 6.5: taps on inputs 3..10
  np.testing.assert_allclose(row[3:11], kernel, atol=1e-7)
  assert np.all(row[:3] == 0) and np.all(row[11:] == 0)


def test_resize_matrix_folds_boundary_symmetrically():
  # Output 0 of 8->4 centres on input 0.5: taps on -3..4, with -1->0, -2->1, -3->2 (edge repeated).
  half = np.array([-0.0234375, -0.0703125, 0.2265625, 0.8671875]) / 2
  taps = np.concatenate([half, half[::-1]])
  expected = np.zeros(8)
  for src, w in zip([2, 1, 0, 0, 1, 2, 3, 4], taps):
    expected[src] += w
  np.testing.assert_allclose(resize.resize_matrix(8, 4)[0], expected, atol=1e-7)


def test_nearest_picks_source_pixels():
  img = np.arange(8, dtype=np.float32).reshape(1, 8, 1) * np.ones((8, 1, 1), np.float32)
  out = resize.resize(img, (4, 4), method='nearest')
  np.testing.assert_array_equal(out[0, :, 0], [1, 3, 5, 7])  # floor((i + 0.5) * 2)


def test_unknown_method_raises():
  with pytest.raises(ValueError, match='bilinear'):
    resize.resize_matrix(10, 5, method='lanczos7')


@pytest.mark.parametrize('method', ['bicubic', 'bilinear', 'nearest'])
def test_resize_keeps_constant_image_constant(method):
  img = np.full((30, 45, 3), 0.37, np.float32)
  for hw in [(7, 11), (30, 45), (120, 180)]:
    np.testing.assert_allclose(resize.resize(img, hw, method), 0.37, atol=1e-6)


def test_bicubic_downscale_matches_pil(astronaut):
  # Reference: PIL Image.resize(..., Image.BICUBIC) (a=-0.5, antialiased) on float 'F' channels. PIL
  # renormalises clipped border taps where we mirror, so only the 2-pixel border may differ.
  ours = resize.resize(astronaut, (128, 128))
  ref = _pil_resize(astronaut, (128, 128))
  assert np.abs(ours - ref).mean() < 0.02
  np.testing.assert_allclose(ours[2:-2, 2:-2], ref[2:-2, 2:-2], atol=1e-5)


def test_bicubic_upscale_matches_pil(astronaut):
  lr = resize.resize(astronaut[:128, :96], (32, 24))
  ours = resize.resize(lr, (128, 96))
  assert ours.shape == (128, 96, 3)
  inner = np.s_[8:-8, 8:-8]  # the mirrored boundary reaches 2 LR pixels = 8 HR pixels in
  np.testing.assert_allclose(ours[inner], _pil_resize(lr, (128, 96))[inner], atol=1e-5)


def test_numpy_and_jax_give_the_same_resize(astronaut):
  img = astronaut[:200, :160]
  ours = resize.resize(img, (50, 40))
  on_jax = resize.resize(jnp.asarray(img), (50, 40))
  assert isinstance(on_jax, jax.Array) and isinstance(ours, np.ndarray)
  np.testing.assert_allclose(np.asarray(on_jax), ours, atol=1e-5)
  jitted = jax.jit(lambda x: resize.resize(x, (50, 40)))(jnp.asarray(img))
  np.testing.assert_allclose(np.asarray(jitted), ours, atol=1e-5)


def test_resize_shapes_hwc_and_nhwc(astronaut):
  batch = np.stack([astronaut[:64, :48], astronaut[64:128, :48]])
  out = resize.resize(batch, (16, 12))
  assert out.shape == (2, 16, 12, 3) and out.dtype == np.float32
  np.testing.assert_allclose(out[1], resize.resize(batch[1], (16, 12)), atol=1e-6)
  assert resize.imresize_scale(batch[0], 4).shape == (256, 192, 3)
  assert resize.imresize_scale(batch, 0.25).shape == (2, 16, 12, 3)
  with pytest.raises(ValueError, match='HWC'):
    resize.resize(astronaut[..., 0], (16, 16))


def test_resize_does_not_clip():
  img = np.zeros((16, 16, 1), np.float32)
  img[:, 8:] = 1.0  # a hard edge makes the bicubic kernel overshoot
  up = resize.resize(img, (64, 64))
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
  m = resize.gaussian_matrix(40, 1.5)  # radius 5: row 20 touches columns 15..25 only
  assert np.count_nonzero(m[20]) == 11 and m[20, 15] > 0 and m[20, 25] > 0
  np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-6)


def test_bicubic_down_blur(astronaut):
  lr = deg.bicubic_down_blur(astronaut)
  assert lr.shape == (128, 128, 3) and lr.dtype == np.float32
  assert lr.min() >= 0.0 and lr.max() <= 1.0
  np.testing.assert_array_equal(lr, deg.bicubic_down_blur(astronaut))
  plain = deg.bicubic_down(astronaut, 4)
  assert np.abs(lr - plain).mean() > 1e-3  # the blur is applied
  np.testing.assert_allclose(lr, np.clip(deg.gaussian_blur(plain, 1.5), 0, 1), atol=0.02)
  with pytest.raises(ValueError, match='divisible'):
    deg.bicubic_down_blur(astronaut[:510])


# Deterministic ops: what each makes of a 24x32 image (the same op runs on the host and the device).
SHAPE_OPS = {'bicubic(4)': (6, 8), 'bicubic_blur(4, 1.5)': (6, 8), 'bicubic_blur(4)': (6, 8),
             'blur(1.5)': (24, 32), 'down_up(4)': (24, 32), 'clip': (24, 32), 'identity': (24, 32)}


def test_registry():
  hr = np.random.default_rng(0).random((2, 24, 32, 3), dtype=np.float32)
  for spec, hw in SHAPE_OPS.items():
    op = deg.parse(spec)
    on_host = np.stack([op(x, np.random.default_rng(0)) for x in hr])
    assert on_host.shape == (2, *hw, 3), spec
    assert deg.output_hw(op, (24, 32)) == hw, spec
    on_device = jax.jit(lambda x, k, op=op: deg.apply_batch(op, x, k))(jnp.asarray(hr), jax.random.key(0))
    assert isinstance(on_device, jax.Array) and on_device.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(on_device), on_host, atol=1e-5, err_msg=spec)
  run = lambda spec: deg.parse(spec)(hr[0], np.random.default_rng(0))
  np.testing.assert_allclose(run('bicubic(4)'), deg.bicubic_down(hr[0], 4))
  np.testing.assert_allclose(run('bicubic_blur(4, 1.5)'), deg.bicubic_down_blur(hr[0], 4, 1.5))
  np.testing.assert_allclose(run('bicubic_blur(4)'), deg.bicubic_down_blur(hr[0], 4, 1.5))  # default
  np.testing.assert_allclose(run('bicubic_blur(4, 0.7)'), deg.bicubic_down_blur(hr[0], 4, 0.7))
  np.testing.assert_allclose(run('blur(1.5)'), deg.gaussian_blur(hr[0], 1.5))
  with pytest.raises(UserError, match='bicubic_blur'):
    deg.parse('jpeg9000')


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
  for spec in ('bicubic(4)', 'bicubic_blur(4, 1.5)', 'down_up(4)', 'blur(1.5)'):
    degrade = lambda x, op=deg.parse(spec): op(x, np.random.default_rng(0))
    np.testing.assert_allclose(degrade(deg.flip_rot90(hr, *bits)), deg.flip_rot90(degrade(hr), *bits),
                               atol=1e-5, err_msg=spec)


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


# ------------------------------------------------------------------------------- degradation ops


NOISE_OPS = ('salt_pepper', 'color_noise')
RANDOM_SPECS = ('salt_pepper(0.3, 0.6)', 'color_noise(0.3, 0.6)', 'darken(0.3, 0.6)',
                'brighten(0.3, 0.6)', "one_of('salt_pepper(0.3, 0.6)', 'darken(0.3, 0.6)')")



@functools.lru_cache(maxsize=None)
def _compiled_batch(op, shape):
  """jax.jit(apply_batch) of OP for float32 batches of SHAPE, compiled once at XLA's lowest CPU
  optimisation level (these tests are compile-bound; the numbers do not change)."""
  fn = jax.jit(functools.partial(deg.apply_batch, op))
  lowered = fn.lower(jax.ShapeDtypeStruct(shape, jnp.float32), jax.random.key(0))
  return lowered.compile(compiler_options={'xla_backend_optimization_level': 0})


def _batch_jit(op, images, key):
  """OP on each image of a device batch, inside jit, each image with a key of its own."""
  return _compiled_batch(op, tuple(images.shape))(jnp.asarray(images, jnp.float32), key)


def _photo(side=128):
  """A SIDE x SIDE image with every value in [0.1, 0.9]: no pixel is black or white beforehand."""
  return np.random.default_rng(7).uniform(0.1, 0.9, (side, side, 3)).astype(np.float32)


def _stack(img, n):
  return jnp.asarray(np.broadcast_to(img, (n, *img.shape)))


def _changed(out, img):
  """The share of pixels (any channel) that OUT changed from IMG, per image of an HWC/NHWC OUT."""
  return np.any(np.asarray(out) != img, axis=-1).mean(axis=(-2, -1))


@pytest.mark.parametrize('name', NOISE_OPS)
def test_noise_hits_the_requested_proportion_of_pixels(name):
  img = _photo()
  op = deg.parse(f'{name}({0.4}, {0.4})')
  for seed in range(3):
    on_host = op(img, np.random.default_rng(seed))
    on_device = op(jnp.asarray(img), jax.random.key(seed))
    assert isinstance(on_host, np.ndarray) and isinstance(on_device, jax.Array)
    assert on_host.shape == on_device.shape == img.shape
    assert abs(_changed(on_host, img) - 0.4) < 0.03
    assert abs(_changed(on_device, img) - 0.4) < 0.03
  np.testing.assert_allclose(_changed(_batch_jit(op, _stack(img, 4), jax.random.key(0)), img), 0.4,
                             atol=0.03)
  for p in (0.0, 1.0):  # the ends of the scale: no pixel, every pixel
    assert _changed(deg.parse(f'{name}({p}, {p})')(img, np.random.default_rng(0)), img) == p
    assert _changed(deg.parse(f'{name}({p}, {p})')(jnp.asarray(img), jax.random.key(0)), img) == p


@pytest.mark.parametrize('name', NOISE_OPS)
def test_noise_proportion_is_drawn_per_image_within_the_range(name):
  img = _photo()
  op = deg.parse(f'{name}(0.3, 0.6)')
  on_host = np.array([_changed(op(img, np.random.default_rng(s)), img) for s in range(100)])
  on_device = _changed(_batch_jit(op, _stack(img, 100), jax.random.key(0)), img)
  for shares in (on_host, on_device):
    # p ~ U(0.3, 0.6) per image; the share of 16384 pixels hit strays from its p by ~0.004 (1 sd)
    assert shares.min() >= 0.3 - 0.01 and shares.max() <= 0.6 + 0.01
    assert shares.min() < 0.33 and shares.max() > 0.57  # p covers the range ...
    assert len(np.unique(shares)) > 90  # ... with a new draw for each image


def test_salt_pepper_pixels_are_black_or_white_and_color_noise_random_colours():
  img = _photo()
  for out in (deg.parse('salt_pepper(0.5, 0.5)')(img, np.random.default_rng(1)),
              np.asarray(deg.parse('salt_pepper(0.5, 0.5)')(jnp.asarray(img), jax.random.key(1)))):
    hit = np.any(out != img, axis=-1)
    white = np.all(out[hit] == 1.0, axis=-1)
    assert np.all(white | np.all(out[hit] == 0.0, axis=-1))  # all three channels 0 or all 1
    assert abs(white.mean() - 0.5) < 0.03  # salt and pepper alike
    np.testing.assert_array_equal(out[~hit], img[~hit])
  for out in (deg.parse('color_noise(0.5, 0.5)')(img, np.random.default_rng(1)),
              np.asarray(deg.parse('color_noise(0.5, 0.5)')(jnp.asarray(img), jax.random.key(1)))):
    noise = out[np.any(out != img, axis=-1)]
    assert np.all(noise != img[np.any(out != img, axis=-1)])  # the whole colour is replaced
    assert noise.min() >= 0.0 and noise.max() <= 1.0
    assert noise.min() < 0.02 and noise.max() > 0.98  # uniform over [0, 1], not the image's range
    assert abs(noise.mean() - 0.5) < 0.02
    assert np.abs(noise[:, 0] - noise[:, 1]).mean() > 0.2  # channels drawn independently


@pytest.mark.parametrize('spec', RANDOM_SPECS)
def test_random_ops_are_deterministic_under_a_seed(spec):
  img = _photo(32)
  op = deg.parse(spec)
  on_host = lambda seed: op(img, np.random.default_rng(seed))
  np.testing.assert_array_equal(on_host(3), on_host(3))
  assert not np.array_equal(on_host(3), on_host(4))
  on_device = lambda seed: np.asarray(op(jnp.asarray(img), jax.random.key(seed)))
  np.testing.assert_array_equal(on_device(3), on_device(3))
  assert not np.array_equal(on_device(3), on_device(4))
  batch = _stack(img, 8)
  a, b = (np.asarray(_batch_jit(op, batch, jax.random.key(5))) for _ in range(2))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, np.asarray(_batch_jit(op, batch, jax.random.key(6))))
  assert len({x.tobytes() for x in a}) == 8  # a key of its own for each image
  for x in (on_host(3), on_device(3), a):
    assert x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0


def _factor(out, img):
  """The one factor that maps IMG to OUT (asserting it is one factor for every pixel)."""
  f = float(np.median(np.asarray(out) / img))
  np.testing.assert_allclose(out, img * f, rtol=1e-5, atol=1e-6)
  return f


def test_darken_multiplies_by_one_minus_p():
  img = _photo(32)
  op = deg.parse('darken(0.3, 0.6)')
  host = [1 - _factor(op(img, np.random.default_rng(s)), img) for s in range(30)]
  device = [1 - _factor(op(jnp.asarray(img), jax.random.key(s)), img) for s in range(5)]
  device += [1 - _factor(x, img) for x in _batch_jit(op, _stack(img, 30), jax.random.key(0))]
  for ps in (np.array(host), np.array(device)):
    assert ps.min() >= 0.3 - 1e-6 and ps.max() <= 0.6 + 1e-6
    assert ps.max() - ps.min() > 0.2  # drawn, not fixed
  assert _factor(deg.parse('darken(0.25, 0.25)')(img, np.random.default_rng(0)), img) == \
      pytest.approx(0.75)


def test_brighten_multiplies_by_one_plus_p_and_clips():
  img = _photo(32)  # values up to 0.9: x (1 + p) >= 1.3 x clips the brightest ones
  dim = img < 0.6  # never clipped: 0.6 x 1.6 < 1
  op = deg.parse('brighten(0.3, 0.6)')
  outs = ([op(img, np.random.default_rng(s)) for s in range(30)]
          + [op(jnp.asarray(img), jax.random.key(s)) for s in range(5)]
          + list(_batch_jit(op, _stack(img, 30), jax.random.key(0))))
  ps = []
  for out in map(np.asarray, outs):
    p = float(np.median(out[dim] / img[dim])) - 1
    assert 0.3 - 1e-6 <= p <= 0.6 + 1e-6
    np.testing.assert_allclose(out, np.clip(img * (1 + p), 0, 1), rtol=1e-5, atol=1e-6)
    assert out.max() == 1.0 and (out == 1.0).any()  # clipped, not wrapped or overshooting
    ps.append(p)
  assert max(ps) - min(ps) > 0.2
  np.testing.assert_allclose(deg.parse('brighten(0.5, 0.5)')(img, np.random.default_rng(0)),
                             np.clip(img * 1.5, 0, 1), rtol=1e-6)


def test_down_up_keeps_the_size_and_resizes_down_and_back(astronaut):
  img = astronaut[100:318, 150:328]  # 218 x 178, report 000's CelebA size
  op = deg.parse('down_up(5)')
  out = op(img, np.random.default_rng(0))
  assert out.shape == (218, 178, 3) and out.dtype == np.float32
  assert deg.output_hw(op, (218, 178)) == (218, 178)
  small = resize.resize(img, (44, 36))  # round(218 / 5) x round(178 / 5)
  np.testing.assert_allclose(out, np.clip(resize.resize(small, (218, 178)), 0, 1), atol=1e-6)
  assert out.min() >= 0.0 and out.max() <= 1.0
  assert np.abs(out - img).mean() > 0.01  # the detail really is lost
  assert not np.allclose(out, deg.parse('down_up(4)')(img, np.random.default_rng(0)), atol=1e-3)
  on_device = jax.jit(lambda x: op(x, jax.random.key(0)))(jnp.asarray(img))
  np.testing.assert_allclose(np.asarray(on_device), out, atol=1e-5)


def test_one_of_picks_each_branch_about_uniformly():
  op = deg.parse("one_of('darken(0.5, 0.5)', 'brighten(0.5, 0.5)', 'identity')")
  img = np.full((4, 4, 3), 0.5, np.float32)  # -> 0.25, 0.75 or 0.5 by branch
  on_host = np.stack([op(img, np.random.default_rng(s)) for s in range(600)])
  on_device = np.asarray(_batch_jit(op, _stack(img, 600), jax.random.key(0)))
  for outs in (on_host, on_device):
    assert np.all(outs == outs[:, :1, :1, :1])  # one branch for the whole image
    values, counts = np.unique(outs[:, 0, 0, 0], return_counts=True)
    np.testing.assert_allclose(values, [0.25, 0.5, 0.75])
    assert counts.min() >= 150 and counts.max() <= 250, counts  # 200 each, sd 11.5


def test_spec_composes_ops_left_to_right(astronaut):
  img = np.linspace(0, 1, 48, dtype=np.float32).reshape(4, 4, 3)
  rng = np.random.default_rng(0)
  np.testing.assert_allclose(deg.parse('darken(0.5, 0.5)|brighten(1, 1)')(img, rng), img, atol=1e-6)
  np.testing.assert_allclose(deg.parse('brighten(1, 1)|darken(0.5, 0.5)')(img, rng),
                             np.minimum(2 * img, 1) / 2, atol=1e-6)  # clipped first, then halved
  hr = astronaut[:64, :48]
  out = deg.parse(' bicubic(2) | down_up(2)|blur(1.0) ')(hr, rng)
  assert out.shape == (32, 24, 3)
  manual = deg.gaussian_blur(deg.parse('down_up(2)')(deg.bicubic_down(hr, 2), rng), 1.0)
  np.testing.assert_allclose(out, manual, atol=1e-6)
  on_device = deg.parse('bicubic(2)|down_up(2)|blur(1.0)')(jnp.asarray(hr), jax.random.key(0))
  np.testing.assert_allclose(np.asarray(on_device), manual, atol=1e-5)
  # random ops in order: darken, then salt-and-pepper on the darkened image (so white stays 1.0)
  photo = _photo(32)
  for out, ref in ((deg.parse('darken(0.3, 0.6)|salt_pepper(0.4, 0.4)')(photo, np.random.default_rng(2)),
                    photo),
                   (deg.parse('darken(0.3, 0.6)|salt_pepper(0.4, 0.4)')(jnp.asarray(photo),
                                                                          jax.random.key(2)), photo)):
    out = np.asarray(out)
    hit = np.all((out == 0.0) | (out == 1.0), axis=-1)
    assert abs(hit.mean() - 0.4) < 0.05 and (out == 1.0).any()
    p = 1 - _factor(out[~hit], ref[~hit])
    assert 0.3 - 1e-6 <= p <= 0.6 + 1e-6
  assert deg.parse('')(img, rng) is img and deg.parse('identity|identity')(img, rng) is img


def test_one_of_specs_nest_quotes_and_pipes():
  op = deg.parse('''one_of('darken(0.5, 0.5)|darken(0.5, 0.5)', "brighten(1, 1)")|clip''')
  img = np.full((4, 4, 3), 0.4, np.float32)  # one branch -> 0.1, the other -> 0.8
  on_host = {round(float(op(img, np.random.default_rng(s))[0, 0, 0]), 5) for s in range(40)}
  on_device = np.asarray(_batch_jit(op, _stack(img, 40), jax.random.key(0)))
  assert on_host == {0.1, 0.8}
  assert set(np.round(on_device.astype(np.float64), 5).ravel().tolist()) == {0.1, 0.8}
  nested = deg.parse('''one_of("one_of('darken(1, 1)', 'identity')", 'brighten(1, 1)')''')
  outs = {round(float(nested(img, np.random.default_rng(s))[0, 0, 0]), 5) for s in range(60)}
  assert outs == {0.0, 0.4, 0.8}


def test_unknown_op_is_a_user_error_listing_the_valid_ones():
  for spec in ('bicubic(4)|jpeg(90)', "one_of('darken(0.3, 0.6)', 'jpeg(90)')"):
    with pytest.raises(UserError) as e:
      deg.parse(spec)
    msg = str(e.value)
    assert "'jpeg'" in msg
    assert all(name in msg for name in deg.OPS), msg


@pytest.mark.parametrize('spec', ['bicubic(4', 'bicubic(4))', 'bicubic 4', 'bicubic[4]', '4(2)',
                                  'bicubic(x)', 'bicubic(4)||blur(1)', 'bicubic(4)|', '|bicubic(4)',
                                  'deg.bicubic(4)', 'bicubic(*[4])', "one_of('darken(0.3, 0.6)"])
def test_bad_spec_syntax_is_a_user_error(spec):
  with pytest.raises(UserError, match=r'not of the form name or name\(args\)'):
    deg.parse(spec)


@pytest.mark.parametrize('spec', ['bicubic', 'bicubic()', 'bicubic(4, 2)', 'bicubic(scale=4)',
                                  'bicubic_blur', 'down_up', 'blur', 'darken(0.1, 0.2, 0.3)',
                                  'clip(1)', 'identity(0)', 'one_of'])
def test_wrong_arity_is_a_user_error_naming_the_op(spec):
  with pytest.raises(UserError, match=re.escape(spec)):
    deg.parse(spec)


@pytest.mark.parametrize('spec', ['bicubic(0)', 'bicubic(-4)', "bicubic('4')", 'down_up(0.5)',
                                  'bicubic_blur(0, 1.5)', 'salt_pepper(0.6, 0.3)',
                                  'color_noise(-0.1, 0.5)', 'darken(0.5, 1.5)', 'brighten(2, 3)'])
def test_out_of_range_arguments_are_user_errors(spec):
  with pytest.raises(UserError, match=re.escape(spec.split('(')[0])):
    deg.parse(spec)


def test_an_op_registered_in_OPS_is_usable_in_a_spec(monkeypatch):
  from enhance_jax.training import config as config_lib# pylint: disable=g-import-not-at-top
  from enhance_jax.data import input_pipeline# pylint: disable=g-import-not-at-top

  def toy(value=0.25):
    """Every pixel set to VALUE, on numpy and jnp alike."""
    return lambda img, rng: img * 0 + value

  with pytest.raises(UserError, match='toy'):
    deg.parse('toy(0.5)')
  monkeypatch.setitem(deg.OPS, 'toy', toy)
  img = _photo(16)
  np.testing.assert_allclose(deg.parse('toy')(img, np.random.default_rng(0)), 0.25)
  np.testing.assert_allclose(deg.parse('toy(0.25)|brighten(1, 1)')(img, np.random.default_rng(0)), 0.5)
  on_device = _batch_jit(deg.parse("one_of('toy(0.125)', 'toy(value=0.75)')"), _stack(img, 16),
                         jax.random.key(0))
  assert set(np.unique(np.asarray(on_device)).tolist()) == {0.125, 0.75}
  with pytest.raises(UserError, match='toy'):  # it joins the list of valid ops
    deg.parse('nope')
  cfg = config_lib.get_config('esrgan_cpu', ['data.patch_size=32', 'data.degradation=bicubic(4)|toy(0.5)'])
  lr = input_pipeline.degrade_fn(cfg)(img, np.random.default_rng(0))
  assert lr.shape == (4, 4, 3)
  np.testing.assert_allclose(lr, 0.5)
