"""Tests for Real-ESRGAN's second-order degradation chain (degradations.realesrgan and its stages),
the jnp JPEG (enhance_jax.ops.jpeg) and USM sharpening of the target (train_steps.model_batch).

Compile-bound on CPU: the chain is compiled once (vmapped over a batch, taking its draws as an
argument) and its draws once (vmapped over 4000 keys); stage frequencies are read from the draws.
"""

import functools
import io

import cv2
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.ndimage
import scipy.special
import skimage.data
from PIL import Image

from conftest import fast_jit
from conftest import tiny_config
from enhance_jax.data import degradations as deg
from enhance_jax.data.degradations import realesrgan
from enhance_jax.errors import UserError
from enhance_jax.ops import jpeg as jpeg_lib
from enhance_jax.ops import resize
from enhance_jax.training import config as config_lib
from enhance_jax.training import train_steps

N_DRAWS = 4000
OPTIONS = deg.realesrgan_options()


@pytest.fixture(scope='module')
def photo():
  """A real 64x64 RGB crop (the astronaut's face) in [0, 1]."""
  return skimage.data.astronaut()[40:168:2, 160:288:2].astype(np.float32) / 255.0


def _host(tree):
  """A pytree's arrays as (writable) numpy arrays, its jax keys left as they are."""
  is_key = lambda x: jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
  return jax.tree.map(lambda x: x if is_key(x) else np.array(x), tree)


_draw_batch = jax.jit(jax.vmap(lambda k: deg.draw_chain(k, OPTIONS)))


@pytest.fixture(scope='module')
def draws():
  """draw_chain for N_DRAWS keys, vmapped and jitted once."""
  return _host(_draw_batch(jax.random.split(jax.random.key(0), N_DRAWS)))


@functools.lru_cache(maxsize=None)
def _compiled_chain(shape):
  """degrade_chain vmapped over a batch of SHAPE, the draws an argument, compiled once at -O0."""
  params = jax.eval_shape(_draw_batch, jax.random.split(jax.random.key(0), shape[0]))
  fn = jax.vmap(lambda x, p: deg.degrade_chain(x, p, OPTIONS, 4))
  return fast_jit(fn, jax.ShapeDtypeStruct(shape, jnp.float32), params)


def _chain(images, params):
  return np.asarray(_compiled_chain(images.shape)(jnp.asarray(images), params))


def _first(tree, n, start=0):
  return jax.tree.map(lambda x: x[start:start + n], tree)


def _jit(fn, *static):
  """FN jitted with its first arguments STATIC (python values) bound: one compile, no eager dispatch."""
  return jax.jit(functools.partial(fn, *static))


def _share(x, value=True):
  return float(np.mean(np.asarray(x) == value))


def _near(share, p, n=N_DRAWS):
  """SHARE of N draws is within 4.5 binomial standard deviations of P."""
  return abs(share - p) <= 4.5 * np.sqrt(p * (1 - p) / n) + 1e-9


# ------------------------------------------------------------------------------------- options


def test_defaults_are_real_esrgans_published_settings():
  c = deg.realesrgan_defaults()
  assert isinstance(c, ml_collections.ConfigDict)
  assert c.resize_prob == (0.2, 0.7, 0.1) and c.resize_range == (0.15, 1.5)
  assert c.gaussian_noise_prob == 0.5 and c.noise_range == (1, 30) and c.poisson_scale_range == (0.05, 3)
  assert c.gray_noise_prob == 0.4 and c.jpeg_range == (30, 95) and c.second_blur_prob == 0.8
  assert c.resize_prob2 == (0.3, 0.4, 0.3) and c.resize_range2 == (0.3, 1.2)
  assert c.noise_range2 == (1, 25) and c.poisson_scale_range2 == (0.05, 2.5) and c.jpeg_range2 == (30, 95)
  assert c.kernel_list == c.kernel_list2 == deg.KERNEL_KINDS
  assert c.kernel_prob == c.kernel_prob2 == (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
  assert c.sinc_prob == c.sinc_prob2 == 0.1 and c.final_sinc_prob == 0.8
  assert c.blur_sigma == (0.2, 3) and c.blur_sigma2 == (0.2, 1.5)
  assert c.betag_range == c.betag_range2 == (0.5, 4) and c.betap_range == c.betap_range2 == (1, 2)
  assert c.blur_kernel_size == c.blur_kernel_size2 == 21


@pytest.mark.parametrize('key, value', [
    ('resize_prob', (0.5, 0.5, 0.5)), ('resize_prob2', (0.5, 0.5)), ('resize_range', (0.5, 0.9)),
    ('noise_range', (30, 1)), ('jpeg_range', (30, 101)), ('gray_noise_prob2', 1.5),
    ('kernel_list', ('iso', 'box')), ('kernel_prob', (1.0, 0.0)), ('blur_kernel_size', 20),
    ('betag_range', (1.5, 4)), ('final_sinc_prob', -0.1), ('sinc_prob', 'often')])
def test_a_bad_chain_option_is_a_user_error_naming_it(key, value):
  with pytest.raises(UserError, match=f'data.realesrgan.{key}'):
    deg.realesrgan_options({key: value})
  with pytest.raises(UserError, match=key):
    deg.parse('realesrgan(4)', {'realesrgan': {key: value}})


def test_config_options_reach_the_op_and_the_spec_wins():
  data = ml_collections.ConfigDict({'degradation': 'realesrgan(4)', 'realesrgan': deg.realesrgan_defaults()})
  data.realesrgan.final_sinc_prob = 0.25
  data.realesrgan.jpeg_range = [50, 60]  # lists, as a config read back from JSON has them
  op = deg.parse(data.degradation, deg.config_options(data))
  assert op.options['final_sinc_prob'] == 0.25 and op.options['jpeg_range'] == (50, 60)
  spec_wins = deg.parse('realesrgan(4, final_sinc_prob=0.5)', deg.config_options(data))
  assert spec_wins.options['final_sinc_prob'] == 0.5
  assert deg.parse('realesrgan(2)').options == OPTIONS  # no section: the defaults
  assert deg.config_options(ml_collections.ConfigDict({'degradation': 'bicubic(4)'})) == {}
  with pytest.raises(UserError, match='unknown realesrgan option.*noise_rnage'):
    deg.parse('realesrgan(4, noise_rnage=(1, 2))')
  with pytest.raises(UserError, match='realesrgan'):
    deg.parse('realesrgan(0)')


def test_output_size_and_device_marking_without_running():
  op = deg.parse('realesrgan(4)')
  assert deg.output_hw(op, (64, 48)) == (16, 12)
  assert deg.output_hw(deg.parse('realesrgan(2)|jpeg_compression(30, 95)'), (64, 48)) == (32, 24)
  assert deg.device_only(op) and deg.device_only(deg.parse("one_of('random_noise', 'identity')"))
  assert not deg.device_only(deg.parse('bicubic(4)|usm')) and not deg.device_only(deg.parse('usm'))
  for hw in [(64, 48), (48, 64)]:  # traced through vmap and jit, no compile
    batch = jax.ShapeDtypeStruct((3, *hw, 3), jnp.float32)
    out = jax.eval_shape(lambda x, k: deg.apply_batch(op, x, k), batch, jax.random.key(0))
    assert out.shape == (3, hw[0] // 4, hw[1] // 4, 3) and out.dtype == jnp.float32


# ----------------------------------------------------------------------------- stage frequencies


@pytest.mark.slow
def test_resize_directions_methods_and_factors_follow_the_options(draws):
  for order, probs, (low, high) in [('1', (0.2, 0.7, 0.1), (0.15, 1.5)), ('2', (0.3, 0.4, 0.3), (0.3, 1.2))]:
    r = draws[f'resize{order}']
    for direction, p in enumerate(probs):
      assert _near(_share(r['direction'], direction), p), (order, direction)
    for method in range(3):
      assert _near(_share(r['method'], method), 1 / 3), (order, method)
    up, down, keep = (r['factor'][r['direction'] == d] for d in range(3))
    assert up.min() >= 1 and up.max() <= high and up.max() > high - 0.05
    assert down.min() >= low and down.max() <= 1 and down.min() < low + 0.05
    assert np.all(keep == 1)
  assert all(_near(_share(draws['final']['method'], m), 1 / 3) for m in range(3))


def test_noise_kind_gray_and_ranges_follow_the_options(draws):
  for order, (low, high), (plow, phigh) in [('1', (1, 30), (0.05, 3)), ('2', (1, 25), (0.05, 2.5))]:
    n = draws[f'noise{order}']
    assert _near(_share(n['gaussian']), 0.5) and _near(_share(n['gray']), 0.4)
    assert n['sigma'].min() >= low / 255 and n['sigma'].max() <= high / 255
    assert n['poisson_scale'].min() >= plow and n['poisson_scale'].max() <= phigh
    assert abs(np.corrcoef(n['gaussian'], n['gray'])[0, 1]) < 0.06  # independent decisions


def test_blur_sinc_kind_size_and_parameters_follow_the_options(draws):
  for order, sigma_high in [('1', 3.0), ('2', 1.5)]:
    b = draws[f'blur{order}']
    assert _near(_share(b['sinc']), 0.1)
    kinds = b['kind'][~b['sinc']]
    for kind, p in enumerate((0.45, 0.25, 0.12, 0.03, 0.12, 0.03)):
      assert _near(_share(kinds, kind), p, len(kinds)), (order, kind)
    assert set(np.unique(b['size'])) == set(range(7, 22, 2))
    assert all(_near(_share(b['size'], s), 1 / 8) for s in range(7, 22, 2))
    assert b['sigma_x'].min() >= 0.2 and b['sigma_x'].max() <= sigma_high
    assert np.all(b['omega'] <= np.pi) and np.all(b['omega'][b['size'] < 13] >= np.pi / 3)
    assert b['omega'][b['size'] >= 13].min() < np.pi / 3  # down to pi / 5 for the large sinc kernels
    gen, plateau = b['beta'][(b['kind'] // 2) == 1], b['beta'][(b['kind'] // 2) == 2]
    assert gen.min() >= 0.5 and gen.max() <= 4 and _near(np.mean(gen < 1), 0.5, len(gen))
    assert plateau.min() >= 1 and plateau.max() <= 2
    np.testing.assert_allclose(b['kernel'].sum(axis=(1, 2)), 1.0, atol=1e-5)
  assert _near(_share(draws['blur2']['apply']), 0.8)
  assert _near(_share(draws['final']['sinc']), 0.8) and _near(_share(draws['final']['resize_first']), 0.5)
  pulse = draws['final']['kernel'][~draws['final']['sinc']]
  assert np.all(pulse[:, 10, 10] == 1) and np.all(pulse.sum(axis=(1, 2)) == 1)


# ------------------------------------------------------------------------------------- kernels


def test_isotropic_kernels_are_symmetric_and_windowed():
  kernel = jax.jit(deg.bivariate_kernel)
  for kind in (0, 2, 4):  # iso, generalized_iso, plateau_iso: sigma_y and theta ignored
    k = np.asarray(kernel(kind, 13, 2.0, 0.5, 1.0, 1.7))
    np.testing.assert_allclose(k.sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(k, k.T, atol=1e-8)
    np.testing.assert_allclose(k, k[::-1], atol=1e-8)
    assert np.all(k[:4] == 0) and np.all(k[:, -4:] == 0) and np.all(k[4:17, 4:17] > 0)  # 13x13 of 21x21
    np.testing.assert_allclose(k, np.asarray(kernel(kind, 13, 2.0, 3.0, -2.0, 1.7)), atol=1e-8)


def _covariance(k):
  """The second moments of a kernel as [[var x, cov], [cov, var y]] (x along columns)."""
  yy, xx = np.mgrid[-10:11, -10:11]
  return np.array([[np.sum(k * xx * xx), np.sum(k * xx * yy)], [np.sum(k * xx * yy), np.sum(k * yy * yy)]])


def test_anisotropic_gaussian_has_the_rotated_covariance():
  kernel = jax.jit(deg.bivariate_kernel)
  for theta in (0.0, np.pi / 2, np.pi / 6, -1.0):
    k = np.asarray(kernel(1, 21, 2.5, 0.8, theta, 1.0), np.float64)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    np.testing.assert_allclose(_covariance(k), rot @ np.diag([2.5 ** 2, 0.8 ** 2]) @ rot.T, atol=0.02)
  horizontal = np.asarray(kernel(1, 21, 2.5, 0.8, 0.0, 1.0))
  np.testing.assert_allclose(np.asarray(kernel(1, 21, 2.5, 0.8, np.pi / 2, 1.0)), horizontal.T, atol=1e-7)


def test_generalised_and_plateau_kernels_have_their_shapes():
  kernel = lambda *args: np.asarray(jax.jit(deg.bivariate_kernel)(*args))
  gauss = kernel(0, 21, 2.0, 2.0, 0.0, 1.0)
  np.testing.assert_allclose(kernel(2, 21, 2.0, 2.0, 0.0, 1.0), gauss, atol=1e-7)
  heavy, flat = (kernel(2, 21, 2.0, 2.0, 0.0, b) for b in (0.5, 4.0))
  assert heavy[10, 0] > gauss[10, 0] > flat[10, 0]  # beta < 1: heavier tails; > 1: a flatter top
  plateau = kernel(4, 21, 2.0, 2.0, 0.0, 2.0)
  q = np.add.outer(np.arange(-10, 11) ** 2, np.arange(-10, 11) ** 2) / 4.0
  np.testing.assert_allclose(plateau, (1 / (q ** 2 + 1)) / np.sum(1 / (q ** 2 + 1)), rtol=1e-5)


@pytest.mark.parametrize('omega, size', [(np.pi, 7), (np.pi / 5, 21), (1.3, 13)])
def test_sinc_kernel_is_basicsrs_circular_lowpass(omega, size):
  c = (size - 1) / 2
  r = np.hypot(*np.mgrid[:size, :size] - c)
  with np.errstate(invalid='ignore'):
    ref = omega * scipy.special.j1(omega * r) / (2 * np.pi * r)
  ref[int(c), int(c)] = omega ** 2 / (4 * np.pi)
  ref = np.pad(ref / ref.sum(), (21 - size) // 2)
  np.testing.assert_allclose(np.asarray(jax.jit(deg.sinc_kernel)(omega, size)), ref, atol=1e-6)


def test_filter2d_is_reflect_padded_correlation_also_inside_a_buffer(photo):
  kernel = np.asarray(_jit(deg.bivariate_kernel, 1, 21)(3.0, 1.0, 0.7, 1.0))
  img = photo[:30, :41]
  ref = np.stack([scipy.ndimage.correlate(img[..., c], kernel, mode='mirror') for c in range(3)], axis=-1)
  filter2d = jax.jit(deg.filter2d)
  np.testing.assert_allclose(np.asarray(filter2d(img, kernel)), ref, atol=2e-6)
  buffer = np.full((50, 60, 3), 7.0, np.float32)  # what lies outside the content is never read
  buffer[:30, :41] = img
  out = np.asarray(filter2d(buffer, kernel, (jnp.int32(30), jnp.int32(41))))
  np.testing.assert_allclose(out[:30, :41], ref, atol=2e-6)


# -------------------------------------------------------------------------------------- resize


@pytest.mark.parametrize('method', [0, 1, 2])
def test_resize_matrix_reads_the_content_only_and_keeps_constants(method):
  m = np.asarray(_jit(resize.torch_resize_matrix, 37, 23, 60, 50)(method))
  assert np.all(m[23:] == 0) and np.all(m[:, 37:] == 0)
  np.testing.assert_allclose(m[:23].sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.slow
def test_resize_matrix_is_pytorchs_interpolate():
  torch = pytest.importorskip('torch')
  x = np.random.default_rng(0).random(64).astype(np.float32)
  t = torch.from_numpy(x)[None, None, None]
  for method, mode in enumerate(resize.METHODS):
    for n_out in (96, 37, 9, 64):
      ref = torch.nn.functional.interpolate(t, size=(1, n_out), mode=mode)[0, 0, 0].numpy()
      m = _jit(resize.torch_resize_matrix, 64, n_out, 64, n_out)(method)
      np.testing.assert_allclose(np.asarray(m) @ x, ref,
                                 atol=2e-6, err_msg=f'{mode} 64->{n_out}')
    f = np.float32(0.731)  # interpolate(scale_factor=f): floor(64 f) samples, coordinates mapped by 1 / f
    ref = torch.nn.functional.interpolate(t, scale_factor=(1.0, float(f)), mode=mode)[0, 0, 0].numpy()
    m = np.asarray(_jit(resize.torch_resize_matrix, 64, len(ref), 64, len(ref))(method, 1 / f))
    np.testing.assert_allclose(m @ x, ref, atol=2e-6, err_msg=f'{mode} x{f}')


# --------------------------------------------------------------------------------------- noise


def test_gaussian_noise_has_its_sigma_and_gray_noise_one_map():
  img, key, noise = jnp.full((64, 64, 3), 0.5), jax.random.key(0), jax.jit(deg.gaussian_noise)
  color = np.asarray(noise(img, key, 10 / 255, False)) - 0.5
  gray = np.asarray(noise(img, key, 10 / 255, True)) - 0.5
  assert abs(color.std() * 255 / 10 - 1) < 0.05 and abs(gray.std() * 255 / 10 - 1) < 0.05
  assert abs(np.corrcoef(color[..., 0].ravel(), color[..., 1].ravel())[0, 1]) < 0.05
  np.testing.assert_allclose(gray[..., 0], gray[..., 2], atol=1e-7)


def test_poisson_noise_counts_levels_and_has_shot_noise_variance(photo):
  levels = lambda x, hw: float(jax.jit(realesrgan._photon_levels)(x, hw))  # pylint: disable=protected-access
  three = np.repeat(np.array([0, 0.5, 1.0], np.float32), 12).reshape(6, 6, 1)
  assert levels(three, (6, 6)) == 4.0 and levels(three[:2, :2], (2, 2)) == 1.0
  padded = np.pad(three, ((0, 4), (0, 4), (0, 0)), constant_values=0.25)  # outside: not counted
  assert levels(padded, (6, 6)) == 4.0 and levels(padded, (10, 10)) == 4.0
  assert levels(photo, (64, 64)) == 256.0
  x = np.round(photo * 255) / 255
  shot = jax.jit(deg.poisson_noise)
  noise = np.stack([np.asarray(shot(x, jax.random.key(s), 1.0, False)) - x for s in range(4)])
  inside = (x > 0.2) & (x < 0.8)
  np.testing.assert_allclose(np.mean(noise[:, inside] ** 2) / np.mean(x[inside] / 256), 1.0, atol=0.1)
  gray = np.asarray(shot(x, jax.random.key(0), 2.0, True)) - x
  ok = np.all((x + gray > 0) & (x + gray < 1), axis=-1)
  np.testing.assert_allclose(gray[ok][:, 0], gray[ok][:, 1], atol=1e-6)


# ---------------------------------------------------------------------------------------- JPEG


def _pil_jpeg(x, quality):
  buf = io.BytesIO()
  Image.fromarray(x).save(buf, 'JPEG', quality=quality)
  return np.asarray(Image.open(buf)).astype(np.float64)


def _psnr(a, b):
  return 10 * np.log10(255.0 ** 2 / np.mean((np.asarray(a, np.float64) - b) ** 2))


def test_jpeg_matches_pils_libjpeg_and_lower_quality_costs_more():
  photo = skimage.data.astronaut()
  codec = jax.jit(jpeg_lib.jpeg)
  for x in (photo[:256, 128:384], photo[5:118, 40:141]):  # whole MCUs, and ragged edges (113x101)
    errors = []
    for quality in (10, 30, 50, 75, 95, 100):
      ours = np.round(np.asarray(codec(x.astype(np.float32) / 255, quality)) * 255)
      errors.append(np.mean((ours - x) ** 2))
      if quality < 30:
        continue
      pil = _pil_jpeg(x, quality)
      # measured: 0.07..0.37 levels apart on average, 50..56 dB (libjpeg's fixed-point DCT vs float)
      assert np.mean(np.abs(ours - pil)) < 0.5, (x.shape, quality)
      assert _psnr(ours, pil) > 45, (x.shape, quality)
      assert abs(_psnr(ours, x) - _psnr(pil, x)) < 0.2, (x.shape, quality)  # the same distortion
    assert np.all(np.diff(errors) < 0), errors  # monotone in quality


def test_jpeg_of_content_in_a_buffer_is_the_jpeg_of_the_content():
  x = skimage.data.astronaut()[100:137, 200:251].astype(np.float32) / 255
  buffer = np.zeros((64, 80, 3), np.float32)
  buffer[:37, :51] = x
  codec = jax.jit(jpeg_lib.jpeg)
  inside = codec(buffer, 40.0, (jnp.int32(37), jnp.int32(51)))
  np.testing.assert_allclose(np.asarray(inside)[:37, :51], np.asarray(codec(x, 40.0)), atol=1e-6)


def test_quant_tables_scale_as_libjpeg():
  table = lambda base, quality: np.asarray(jpeg_lib.quant_table(base, quality))
  np.testing.assert_array_equal(table(jpeg_lib.LUMA_TABLE, 50), jpeg_lib.LUMA_TABLE)
  assert np.all(table(jpeg_lib.LUMA_TABLE, 100) == 1)
  pil = Image.open(io.BytesIO(_jpeg_bytes(30))).quantization  # zigzag order in PIL
  for i, base in enumerate((jpeg_lib.LUMA_TABLE, jpeg_lib.CHROMA_TABLE)):
    assert sorted(pil[i]) == sorted(table(base, 30).ravel().tolist())


def _jpeg_bytes(quality):
  buf = io.BytesIO()
  Image.fromarray(skimage.data.astronaut()[:32, :32]).save(buf, 'JPEG', quality=quality)
  return buf.getvalue()


# --------------------------------------------------------------------------------------- chain


@pytest.mark.slow
def test_chain_makes_quantised_lr_deterministic_per_key(photo, draws):
  batch = np.stack([photo, photo[::-1], photo[:, ::-1], photo.transpose(1, 0, 2)] * 2)
  params = _first(draws, 8)
  lr = _chain(batch, params)
  assert lr.shape == (8, 16, 16, 3) and lr.dtype == np.float32
  assert lr.min() >= 0 and lr.max() <= 1
  np.testing.assert_allclose(lr * 255, np.round(lr * 255), atol=1e-4)  # on the 1/255 grid
  np.testing.assert_array_equal(_chain(batch, params), lr)  # same draws, same LR
  other = _chain(batch, _first(draws, 8, start=8))
  assert np.all(np.abs(other - lr).mean(axis=(1, 2, 3)) > 1 / 255)  # other draws, other LR
  assert len({x.tobytes() for x in lr}) == 8


def test_chain_without_blur_noise_and_resizes_is_jpeg_area_jpeg(photo, draws):
  """Pulse kernels, 'keep' resizes by area, no noise: JPEG, the 4x4 area mean to the LR size (the
  second resize is relative to it), JPEG, aligned, whichever order the final stage draws. (Not bit
  for bit: area means fall on half levels, where float rounding flips the 8-bit JPEG input.)"""
  p = _host(_first(draws, 8))
  pulse = np.zeros((8, 21, 21), np.float32)
  pulse[:, 10, 10] = 1
  for stage in ('blur1', 'blur2', 'final'):
    p[stage]['kernel'] = pulse
  for stage in ('resize1', 'resize2'):  # the second resize is relative to the LR size: area down x4
    p[stage]['factor'][:], p[stage]['direction'][:], p[stage]['method'][:] = 1.0, 2, 0
  for stage in ('noise1', 'noise2'):
    p[stage]['gaussian'][:], p[stage]['sigma'][:] = True, 0.0
  p['jpeg1'][:], p['jpeg2'][:], p['final']['method'][:] = 90.0, 70.0, 0
  assert 0 < np.sum(p['final']['resize_first']) < 8  # both orders
  codec = jax.jit(jpeg_lib.jpeg)
  area = np.asarray(codec(photo, 90.0)).reshape(16, 4, 16, 4, 3).mean(axis=(1, 3))
  want = np.round(np.asarray(codec(area, 70.0)) * 255) / 255
  got = np.round(_chain(np.stack([photo] * 8), p) * 255)
  want = np.round(want * 255)
  assert np.abs(got - want).mean() < 0.5 and np.mean(got == want) > 0.8  # measured: 0.22 levels, 87 %
  assert np.abs(got[:, 1:] - want[:-1]).mean() > 10  # one LR pixel off: 25 levels


def test_jnp_ops_take_numpy_generators_for_validation(photo):
  op = deg.parse('jpeg_compression(40, 60)|random_blur(sinc_prob=0.5)')
  a, b = (op(photo, np.random.default_rng(3)) for _ in range(2))
  assert isinstance(a, np.ndarray) and a.shape == photo.shape
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, op(photo, np.random.default_rng(4)))
  with pytest.raises(UserError, match='jpeg_compression'):
    deg.parse('jpeg_compression(0, 50)')


# ----------------------------------------------------------------------------------------- USM


def test_usm_sharpens_edges_and_leaves_flat_areas(photo):
  flat = np.full((40, 48, 3), 0.3, np.float32)
  np.testing.assert_array_equal(deg.usm_sharpen(flat), flat)
  sharp = deg.usm_sharpen(photo)
  laplace = lambda x: np.mean(np.stack([scipy.ndimage.laplace(x[..., c]) for c in range(3)]) ** 2)
  assert laplace(sharp) > 1.2 * laplace(photo)
  assert sharp.min() >= 0 and sharp.max() <= 1
  np.testing.assert_allclose(np.asarray(jax.jit(deg.usm_sharpen)(photo[None]))[0], sharp, atol=1e-6)
  np.testing.assert_allclose(deg.parse('usm')(photo, None), sharp)
  with pytest.raises(UserError, match='usm'):  # radius and threshold by keyword: no silent swap
    deg.parse('usm(0.5, 10, 50)')
  assert np.abs(deg.parse('usm(0.5, radius=50, threshold=10)')(photo, None) - sharp).max() == 0


def test_usm_blur_is_cv2s_gaussian_with_reflect_padding():
  m = deg.usm_matrix(64, 50)
  np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-6)
  taps = np.exp(-((np.arange(51) - 25) ** 2) / (2 * 8.0 ** 2))
  np.testing.assert_allclose(m[32, 7:58], taps / taps.sum(), atol=1e-7)  # sigma 8 for radius 50
  t = taps / taps.sum()
  np.testing.assert_allclose(m[0, :3], [t[25], t[26] + t[24], t[27] + t[23]], atol=1e-7)  # -k folds onto k
  np.testing.assert_allclose(deg.usm_matrix(9, 4)[4, 2:7], [0.0625, 0.25, 0.375, 0.25, 0.0625])
  # against cv2 itself, as Real-ESRGAN's USMSharp calls it (kernel 51, sigma 0, BORDER_REFLECT_101)
  img = np.random.default_rng(0).random((64, 72)).astype(np.float32)
  got = deg.usm_matrix(64, 50) @ img @ deg.usm_matrix(72, 50).T
  np.testing.assert_allclose(got, cv2.GaussianBlur(img, (51, 51), 0), atol=1e-5)
  np.testing.assert_allclose(deg.usm_matrix(9, 4)[4, 2:7], cv2.getGaussianKernel(5, 0).ravel(), atol=1e-7)


# ------------------------------------------------------------------------------- trainer wiring


def _realesrgan_config(*overrides, **data):
  config = tiny_config('data.patch_size=64', 'data.degrade_on_device=true', *overrides).unlock()
  config.data.degradation = 'realesrgan(4)'
  config.data.realesrgan = deg.realesrgan_defaults()
  config.data.target_sharpen = 'usm'
  config.data.update(data)
  return config


def test_model_batch_sharpens_the_target_and_degrades_the_sharpened_one(photo):
  hr = jnp.asarray(np.stack([photo, photo[::-1], photo[:, ::-1], photo.transpose(1, 0, 2)] * 2))
  key = jax.random.key(5)
  task = train_steps.make_task(_realesrgan_config(degradation='bicubic(4)'))
  made = fast_jit(functools.partial(train_steps.model_batch, task), {'hr': hr}, key)({'hr': hr}, key)
  assert set(made) == {'hr', 'hr_orig', 'lr'}
  np.testing.assert_array_equal(np.asarray(made['hr_orig']), np.asarray(hr))
  sharp = deg.usm_sharpen(np.asarray(hr))
  np.testing.assert_allclose(np.asarray(made['hr']), sharp, atol=1e-5)
  np.testing.assert_allclose(np.asarray(made['lr']), deg.bicubic_down(sharp, 4), atol=1e-5)  # as gt_usm
  config = _realesrgan_config()
  config.data.realesrgan.final_sinc_prob = 0.5
  task = train_steps.make_task(config)
  assert task.degrade.options['final_sinc_prob'] == 0.5  # data.realesrgan reaches the op
  shapes = jax.eval_shape(functools.partial(train_steps.model_batch, task), {'hr': hr}, key)  # traced whole
  assert {k: v.shape for k, v in shapes.items()} == {'hr': hr.shape, 'hr_orig': hr.shape,
                                                     'lr': (8, 16, 16, 3)}
  plain = train_steps.make_task(tiny_config())
  assert plain.sharpen is None
  assert set(train_steps.model_batch(plain, {'hr': hr, 'lr': hr[:, ::4, ::4]}, key)) == {'hr', 'lr'}


def test_config_check_needs_the_device_and_good_options():
  config_lib.validate(_realesrgan_config())
  with pytest.raises(UserError, match='data.realesrgan.resize_prob2'):
    bad = _realesrgan_config()
    bad.data.realesrgan.resize_prob2 = (0.3, 0.3, 0.3)
    train_steps.check_config(bad)
  with pytest.raises(UserError, match='degrade_on_device=True'):
    train_steps.check_config(_realesrgan_config('data.degrade_on_device=false'))
  with pytest.raises(UserError, match='target_sharpen'):
    train_steps.check_config(_realesrgan_config(target_sharpen='bicubic(2)'))
  with pytest.raises(UserError, match='usm'):
    train_steps.check_config(_realesrgan_config(target_sharpen='usm(0.5, 10, 50)'))
