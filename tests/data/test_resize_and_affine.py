"""Reports 003/004 data handling: data.hr_resize (centre square + bicubic resize), data.affine (Keras
ImageDataGenerator-style rotate/shift/shear/zoom/flip), and the evaluator's baselines."""

import numpy as np
import pytest
import scipy.ndimage
import skimage.data

from enhance_jax import evaluate
from enhance_jax.data import datasets
from enhance_jax.data import degradations as deg
from enhance_jax.data.degradations import augment
from enhance_jax.data import input_pipeline
from enhance_jax.errors import UserError
from enhance_jax.eval import evaluators
from enhance_jax.ops import resize
from enhance_jax.training import config as config_lib

REPORT_004_AFFINE = ('data.affine.rotation=90', 'data.affine.shift=0.2', 'data.affine.shear=0.2',
                     'data.affine.zoom=0.2', 'data.affine.hflip=True')


def _config(*overrides):
  return config_lib.get_config('esrgan_cpu', ['train.batch_size=4', *overrides])


def _report_003(*overrides):
  """CelebA 16 -> 64: whole images resized to 64, plain bicubic x4."""
  return _config('data.hr_resize=64', 'data.patch_size=64', 'data.degradation=bicubic(4)', *overrides)


@pytest.fixture(scope='module')
def chelsea():
  return skimage.data.chelsea()  # 300x451 uint8, not square


@pytest.fixture(scope='module')
def small():
  """A 33x33 float image in [0, 1] with an odd side, so the centre is a pixel."""
  return np.random.default_rng(0).random((33, 33, 3), dtype=np.float32)


def _variants(img):
  """The 8 flip/rot90 variants of IMG, as bytes."""
  return {np.ascontiguousarray(deg.flip_rot90(img, *bits)).tobytes()
          for bits in np.ndindex(2, 2, 2)}


# ------------------------------------------------------------------------------------ square_resize


def test_square_resize_crops_the_centre_square_and_resizes(chelsea):
  out = deg.square_resize(chelsea, 64)
  assert out.shape == (64, 64, 3) and out.dtype == np.float32
  assert out.min() >= 0.0 and out.max() <= 1.0
  square = chelsea[:, 75:375].astype(np.float32) / 255.0  # 300x451 -> the centred 300x300
  np.testing.assert_allclose(out, np.clip(resize.resize(square, (64, 64)), 0, 1), atol=1e-6)
  np.testing.assert_array_equal(out, deg.square_resize(chelsea, 64))  # deterministic
  np.testing.assert_allclose(deg.square_resize(chelsea.astype(np.float32) / 255.0, 64), out, atol=1e-6)
  batch = deg.square_resize(np.stack([chelsea, chelsea[::-1]]), 64)  # NHWC too
  assert batch.shape == (2, 64, 64, 3)
  np.testing.assert_allclose(batch[0], out, atol=1e-6)
  # already the right side: the centre crop itself, no resampling
  np.testing.assert_array_equal(deg.square_resize(chelsea, 300), square)
  assert deg.square_resize(chelsea, 640).shape == (640, 640, 3)  # upscaling works as well


# ------------------------------------------------------------------------------------ random_affine


def test_all_zero_affine_is_the_exact_identity(small):
  rng = np.random.default_rng(0)
  before = rng.bit_generator.state
  assert deg.random_affine(small, rng) is small
  assert deg.random_affine(small, rng, 0.0, 0.0, 0.0, 0.0, False) is small
  assert rng.bit_generator.state == before  # nothing drawn
  np.testing.assert_array_equal(deg.apply_affine(small), small)  # identity matrix resamples exactly


@pytest.mark.parametrize('field', ['rotation', 'shift', 'shear', 'zoom'])
def test_each_affine_range_alone_changes_the_image(small, field):
  kwargs = {field: {'rotation': 90.0, 'shift': 0.2, 'shear': 20.0, 'zoom': 0.2}[field]}
  outs = [deg.random_affine(small, np.random.default_rng(s), **kwargs) for s in range(4)]
  again = [deg.random_affine(small, np.random.default_rng(s), **kwargs) for s in range(4)]
  for out, same in zip(outs, again):
    assert out.shape == small.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not np.allclose(out, small, atol=1e-3)
    np.testing.assert_array_equal(out, same)  # same seed, same image
  assert len({o.tobytes() for o in outs}) == 4  # other seeds, other images


def test_hflip_alone_flips_half_the_time_without_resampling(small):
  outs = [deg.random_affine(small, np.random.default_rng(s), hflip=True) for s in range(40)]
  flipped = [np.array_equal(o, small[:, ::-1]) for o in outs]
  assert all(f or np.array_equal(o, small) for f, o in zip(flipped, outs))
  assert 5 < sum(flipped) < 35


def test_rotation_matches_scipy_rotate(small):
  # Keras' theta turns the content clockwise on screen (scipy.ndimage.rotate's angle is counterclockwise),
  # both about the centre pixel (size / 2 - 0.5), bilinear, edge pixels repeated outside.
  np.testing.assert_allclose(deg.apply_affine(small, theta=90.0), np.rot90(small, -1), atol=1e-5)
  for seed in range(3):
    theta = np.random.default_rng(seed).uniform(-90, 90)  # random_affine's first draw
    out = deg.random_affine(small, np.random.default_rng(seed), rotation=90.0)
    ref = scipy.ndimage.rotate(small, -theta, reshape=False, order=1, mode='nearest')
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_shift_zoom_and_shear_by_hand(small):
  # shift: output (r, c) samples input (r + tx, c + ty); outside, the edge pixel repeats ('nearest')
  out = deg.apply_affine(small, tx=2.0)
  np.testing.assert_allclose(out[:-2], small[2:], atol=1e-6)
  np.testing.assert_allclose(out[-2:], np.broadcast_to(small[-1], (2, 33, 3)), atol=1e-6)
  np.testing.assert_allclose(deg.apply_affine(small, ty=-3.0)[:, 3:], small[:, :-3], atol=1e-6)
  # zoom: output (r, c) samples centre + (zx, zy) * ((r, c) - centre); Keras' zoom > 1 shrinks content
  out = deg.apply_affine(small, zx=2.0, zy=0.5)
  for r, c in [(16, 16), (17, 18), (12, 20)]:
    np.testing.assert_allclose(out[r, c], small[16 + 2 * (r - 16), 16 + (c - 16) // 2], atol=1e-6)
  # shear (degrees): Keras' [[1, -sin], [0, cos]] on (row, col) about the centre
  m = deg.affine_matrix(33, 33, shear=30.0)
  np.testing.assert_allclose(m[:2, :2], [[1, -0.5], [0, np.cos(np.pi / 6)]], atol=1e-12)
  np.testing.assert_allclose(m @ [16, 16, 1], [16, 16, 1], atol=1e-12)  # the centre stays put
  np.testing.assert_allclose(deg.apply_affine(small, shear=30.0)[16, 16], small[16, 16], atol=1e-6)


def test_affine_matrix_composes_like_keras():
  # keras-preprocessing's apply_affine_transform: rotation . shift . shear . zoom, then
  # transform_matrix_offset_center with o = size / 2 - 0.5 per axis.
  theta, tx, ty, shear, zx, zy = np.deg2rad(25.0), 3.0, -2.0, np.deg2rad(10.0), 1.1, 0.9
  keras = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
  keras = keras.dot(np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]]))
  keras = keras.dot(np.array([[1, -np.sin(shear), 0], [0, np.cos(shear), 0], [0, 0, 1]]))
  keras = keras.dot(np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]]))
  o_x, o_y = 40 / 2 - 0.5, 60 / 2 - 0.5
  keras = np.array([[1, 0, o_x], [0, 1, o_y], [0, 0, 1]]).dot(keras).dot(
      np.array([[1, 0, -o_x], [0, 1, -o_y], [0, 0, 1]]))
  np.testing.assert_allclose(deg.affine_matrix(40, 60, 25.0, tx, ty, 10.0, zx, zy), keras, atol=1e-12)


def test_random_affine_draws_keras_ranges(monkeypatch):
  seen = []
  monkeypatch.setattr(augment, 'apply_affine', lambda img, *params: seen.append(params) or img)
  img = np.zeros((40, 50, 3), np.float32)
  for s in range(300):
    deg.random_affine(img, np.random.default_rng(s), rotation=90.0, shift=0.2, shear=0.2, zoom=0.2)
  theta, tx, ty, shear, zx, zy = np.array(seen).T
  for values, half in [(theta, 90.0), (tx, 0.2 * 40), (ty, 0.2 * 50), (shear, 0.2)]:
    assert values.min() >= -half and values.max() <= half  # uniform in [-range, range]
    assert values.min() < -0.9 * half and values.max() > 0.9 * half
  for z in (zx, zy):
    assert z.min() >= 0.8 and z.max() <= 1.2 and z.min() < 0.82 and z.max() > 1.18
  assert np.all(zx != zy)  # drawn independently per axis


# ------------------------------------------------------------------------------- pipeline and config


def test_report_003_pairs_are_16_from_64(chelsea):
  src = datasets.ArraySource([chelsea, skimage.data.coffee()], ['chelsea', 'coffee'])
  cfg = _report_003('data.augment=True')
  ds = input_pipeline.train_dataset(src, cfg)
  batch = next(input_pipeline.train_iterator(ds))
  assert batch['hr'].shape == (4, 64, 64, 3) and batch['lr'].shape == (4, 16, 16, 3)
  resized = [deg.square_resize(src[i], 64) for i in range(2)]
  for lr, hr in zip(batch['lr'], batch['hr']):
    assert lr.dtype == hr.dtype == np.float32 and 0 <= hr.min() and hr.max() <= 1
    np.testing.assert_allclose(lr, deg.bicubic_down(hr, 4), atol=1e-6)
    assert any(hr.tobytes() in _variants(r) for r in resized)  # the whole resized image, flipped/rotated
  again = next(input_pipeline.train_iterator(input_pipeline.train_dataset(src, cfg)))
  for k in ('lr', 'hr'):
    np.testing.assert_array_equal(batch[k], again[k])


def test_patches_smaller_than_hr_resize_are_crops_of_the_resized_image(chelsea):
  cfg = _report_003('data.patch_size=32', 'data.augment=False')
  resized = deg.square_resize(chelsea, 64)
  for seed in range(3):
    hr = input_pipeline.make_pair(chelsea, np.random.default_rng(seed), patch_size=32, augment=False,
                                  degrade=input_pipeline.degrade_fn(cfg), hr_resize=64)['hr']
    windows = np.lib.stride_tricks.sliding_window_view(resized, (32, 32, 3)).reshape(-1, 32, 32, 3)
    assert any(np.array_equal(hr, w) for w in windows)


def test_affine_in_the_pipeline_is_seeded_and_keeps_lr_aligned(chelsea):
  src = datasets.ArraySource([chelsea], ['chelsea'])

  def batch(*overrides):
    cfg = _report_003(*REPORT_004_AFFINE, *overrides)
    return next(input_pipeline.train_iterator(input_pipeline.train_dataset(src, cfg)))

  a, b, c = batch(), batch(), batch('seed=1')
  for k in ('lr', 'hr'):
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(a['hr'], c['hr'])
  plain = deg.square_resize(chelsea, 64)
  for lr, hr in zip(a['lr'], a['hr']):
    assert hr.dtype == np.float32 and 0 <= hr.min() and hr.max() <= 1
    assert hr.tobytes() not in _variants(plain)  # the affine really ran
    np.testing.assert_allclose(lr, deg.bicubic_down(hr, 4), atol=1e-6)


def test_report_004_pair_is_160_from_640():
  cfg = _config('data.hr_resize=640', 'data.patch_size=640', *REPORT_004_AFFINE)
  assert cfg.data.degradation == 'bicubic_blur(4, 1.5)'
  image = skimage.data.rocket()  # 427x640: its centre square is upscaled to 640
  pair = lambda seed: input_pipeline.make_pair(
      image, np.random.default_rng(seed), patch_size=640, augment=cfg.data.augment,
      degrade=input_pipeline.degrade_fn(cfg), hr_resize=640, affine=input_pipeline.affine_kwargs(cfg))
  a, b, c = pair(0), pair(0), pair(1)
  assert a['hr'].shape == (640, 640, 3) and a['lr'].shape == (160, 160, 3)
  assert a['hr'].dtype == a['lr'].dtype == np.float32
  assert 0 <= a['hr'].min() and a['hr'].max() <= 1 and 0 <= a['lr'].min() and a['lr'].max() <= 1
  np.testing.assert_allclose(a['lr'], deg.bicubic_down_blur(a['hr'], 4, 1.5), atol=1e-6)
  np.testing.assert_array_equal(a['hr'], b['hr'])
  assert not np.array_equal(a['hr'], c['hr'])


def test_validation_batch_with_hr_resize_uses_whole_resized_images():
  src = datasets.embedded(datasets.EMBEDDED_EVAL)  # astronaut 512x512, coffee 400x600
  cfg = _report_003()
  val = input_pipeline.validation_batch(src, cfg)
  assert val['hr'].shape == (2, 64, 64, 3) and val['lr'].shape == (2, 16, 16, 3)
  assert val['hr'].dtype == val['lr'].dtype == np.float32
  for i in range(2):
    np.testing.assert_array_equal(val['hr'][i], deg.square_resize(src[i], 64))
    np.testing.assert_allclose(val['lr'][i], deg.bicubic_down(val['hr'][i], 4), atol=1e-6)
  again = input_pipeline.validation_batch(src, cfg)
  np.testing.assert_array_equal(val['lr'], again['lr'])


def test_bad_data_configs_are_user_errors():
  # checked once, when the config is made (config.validate -> input_pipeline.check_config)
  with pytest.raises(UserError, match=r'data\.patch_size=64 is larger than data\.hr_resize=32'):
    _config('data.hr_resize=32', 'data.patch_size=64')
  cfg = _config()  # a locked ConfigDict still takes new values for existing fields
  cfg.data.hr_resize, cfg.data.patch_size = 32, 64
  for fn in (input_pipeline.check_config, config_lib.validate):
    with pytest.raises(UserError, match=r'lower data\.patch_size to at most 32'):
      fn(cfg)
  cfg.data.hr_resize = 66
  with pytest.raises(UserError, match=r'data\.hr_resize=66 is not a multiple of 4.*set it to 64'):
    input_pipeline.check_config(cfg)
  cfg.data.hr_resize = -64
  with pytest.raises(UserError, match=r'data\.hr_resize=-64 is negative'):
    input_pipeline.check_config(cfg)
  cfg.data.hr_resize, cfg.data.affine.shift = 64, 1.5
  with pytest.raises(UserError, match=r'data\.affine\.shift'):
    input_pipeline.check_config(cfg)
  cfg.data.affine.shift, cfg.data.affine.zoom = 0.0, -0.1
  with pytest.raises(UserError, match=r'data\.affine\.zoom'):
    input_pipeline.check_config(cfg)
  cfg.data.affine.zoom = 0.0
  input_pipeline.check_config(cfg)
  assert input_pipeline.affine_kwargs(cfg) is None  # all off: make_pair skips the op
  # at x2 RRDBNet pixel-unshuffles its input by 2: HR sides are multiples of 4 again
  with pytest.raises(UserError, match=r'data\.hr_resize=66 is not a multiple of 4'):
    _config('model.scale=2', 'data.degradation=bicubic(2)', 'data.hr_resize=66')
  c = config_lib.get_config('catsdogs_resnet', ['model.scale=3', 'data.degradation=bicubic(3)',
                                                'data.patch_size=48', 'data.hr_resize=66'])
  assert c.data.hr_resize == 66  # x3 ResNet-SR: any multiple of 3


# ------------------------------------------------------------------------------------ evaluate


def test_nearest_baseline_is_worse_than_bicubic_on_a_photo():
  hr = skimage.data.astronaut()[128:384, 128:384].astype(np.float32) / 255.0
  lr = deg.bicubic_down(hr, 4)
  base = evaluators.baselines(lr, hr.shape, 4)
  assert set(base) == set(evaluators.baseline_kinds(4)) == {'bicubic', 'nearest'}
  assert set(evaluators.baselines(lr, hr.shape)) == set(base)  # the scale inferred from the sizes
  for up in base.values():
    assert up.shape == hr.shape and up.dtype == np.float32 and 0 <= up.min() and up.max() <= 1
  np.testing.assert_array_equal(base['nearest'], lr.repeat(4, axis=0).repeat(4, axis=1))
  np.testing.assert_allclose(base['bicubic'], np.clip(resize.resize(lr, (256, 256)), 0, 1), atol=1e-6)
  scores = {k: evaluators.score(v[None], hr[None], 4)[0] for k, v in base.items()}
  assert scores['nearest']['psnr'] < scores['bicubic']['psnr'] - 0.5
  assert scores['nearest']['ssim'] < scores['bicubic']['ssim']


def test_same_size_tasks_score_the_input_itself():
  hr = skimage.data.astronaut()[128:192, 128:192].astype(np.float32) / 255.0
  noisy = deg.parse('salt_pepper(0.3, 0.3)')(hr, np.random.default_rng(0))
  for scale in (1, None):
    base = evaluators.baselines(noisy, hr.shape, scale)
    assert set(base) == {'input'} == set(evaluators.baseline_kinds(1))
    np.testing.assert_array_equal(base['input'], noisy)
  over = evaluators.baselines(noisy * 1.5, hr.shape, 1)['input']  # clipped like every baseline
  assert over.dtype == np.float32 and over.max() == 1.0
  # held out at x1: the input is the noisy image itself, with the same noise at every evaluation
  cfg = _config('model.scale=1', 'data.degradation=salt_pepper(0.3, 0.6)', 'data.hr_resize=64',
                'data.patch_size=64')
  src = datasets.embedded(datasets.EMBEDDED_EVAL)
  pairs = evaluate.held_out_pairs(cfg, src)
  for (lr, hr), again in zip(pairs, evaluate.held_out_pairs(cfg, src)):
    assert lr.shape == hr.shape == (64, 64, 3)
    np.testing.assert_array_equal(lr, again[0])
    assert 0.3 - 0.05 <= np.any(lr != hr, axis=-1).mean() <= 0.6 + 0.05
  assert not np.array_equal(pairs[0][0] != pairs[0][1], pairs[1][0] != pairs[1][1])
  evaluator = evaluators.Evaluator(lambda variables, lr: lr, pairs, 1, names=src.names)
  for record, sr in evaluator.records(None):
    assert set(record) == {'name', 'height', 'width', 'model', 'input'}
    assert record['model'] == pytest.approx(record['input'])  # the identity model scores as the input
    assert record['input']['psnr'] < 15  # a third or more of the pixels black or white


def test_held_out_pairs_resize_images_and_score_nearest():
  # A stand-in generator (bicubic upscaling) keeps this a data test: no model, no checkpoint.
  predict = lambda variables, lr: resize.resize(lr, (lr.shape[1] * 4, lr.shape[2] * 4)).clip(0, 1)
  src = datasets.embedded(datasets.EMBEDDED_EVAL)
  cfg = _report_003()
  pairs = evaluate.held_out_pairs(cfg, src)
  evaluator = evaluators.Evaluator(predict, pairs, 4, names=src.names)
  out = list(evaluator.records(None))
  records = [r for r, _ in out]
  assert [r['name'] for r in records] == list(src.names)
  for (record, sr), (lr, hr) in zip(out, pairs):
    assert (record['height'], record['width']) == (64, 64) and hr.shape == (64, 64, 3)
    np.testing.assert_array_equal(hr, deg.square_resize(src[src.names.index(record['name'])], 64))
    assert lr.shape == (16, 16, 3) and sr.shape == hr.shape
    np.testing.assert_allclose(lr, deg.bicubic_down(hr, 4), atol=1e-6)
    assert set(record) >= {'model', 'bicubic', 'nearest'}
    assert record['nearest']['psnr'] < record['bicubic']['psnr']
    assert abs(record['model']['psnr'] - record['bicubic']['psnr']) < 1e-3
  kinds = ('model', *evaluator.kinds)
  mean = evaluators.mean_scores(records, kinds)
  for k in kinds:
    assert mean[k]['psnr'] == pytest.approx(np.mean([r[k]['psnr'] for r in records]))
  table = evaluate.markdown_table({'images': records, 'mean': mean, 'kinds': list(kinds)})
  header = table.splitlines()[0]
  assert 'psnr model | psnr bicubic | psnr nearest' in header
  assert all(line.count('|') == header.count('|') for line in table.splitlines())
  # without hr_resize the held-out image is scored whole (mod-cropped), as before
  assert evaluate.held_out_hr(src[1], _config()).shape == (400, 600, 3)
