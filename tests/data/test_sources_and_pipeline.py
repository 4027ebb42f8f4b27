"""Image sources (embedded, folder, tfds) and the grain input pipeline."""

import sys

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from enhance_jax import parallel
from enhance_jax.data import datasets
from enhance_jax.data import degradations
from enhance_jax.data import input_pipeline
from enhance_jax.errors import UserError
from enhance_jax.training import config as config_lib

PATCH = 32
SCALE = 4


def _config(*overrides, batch=4, patch=PATCH):
  return config_lib.get_config('esrgan_cpu', [f'data.patch_size={patch}', f'train.batch_size={batch}',
                                              *overrides])


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))


def _rgb(h, w, seed):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _constant_source(n, side=PATCH):
  """N images whose every pixel is (i + 1) * 10, so a patch tells which image it came from."""
  return datasets.ArraySource([np.full((side, side, 3), (i + 1) * 10, np.uint8) for i in range(n)],
                              [f'c{i}' for i in range(n)])


def _which(batch):
  return [int(round(float(x.mean()) * 255 / 10)) - 1 for x in batch['hr']]


@pytest.fixture(scope='module')
def embedded_train():
  return datasets.embedded(datasets.EMBEDDED_TRAIN)


@pytest.fixture(scope='module')
def embedded_eval():
  return datasets.embedded(datasets.EMBEDDED_EVAL)


# ----------------------------------------------------------------------------------------- embedded


def test_embedded_splits_disjoint_rgb_uint8_and_large(embedded_train, embedded_eval):
  assert len(embedded_train) >= 8 and len(embedded_eval) >= 2
  assert not set(embedded_train.names) & set(embedded_eval.names)
  for src in (embedded_train, embedded_eval):
    assert len(src.names) == len(src)
    for i in range(len(src)):
      im = src[i]
      assert im.dtype == np.uint8 and im.ndim == 3 and im.shape[-1] == 3
      assert im.flags['C_CONTIGUOUS']
  for im in embedded_train.images:
    assert min(im.shape[:2]) >= 256, im.shape
  # no photograph sits in both splits, whatever its name
  eval_shapes = {im.shape: im for im in embedded_eval.images}
  for im in embedded_train.images:
    if im.shape in eval_shapes:
      assert not np.array_equal(im, eval_shapes[im.shape])
  datasets.check_sizes(embedded_train, 256, 'data.patch_size')


def test_embedded_sources_by_spec_and_split():
  cfg = _config()
  train, val = datasets.train_val_sources(cfg.data)
  assert list(train.names) == list(datasets.EMBEDDED_TRAIN)
  assert list(val.names) == list(datasets.EMBEDDED_EVAL)
  assert list(datasets.open_source('embedded', split='validation').names) == list(datasets.EMBEDDED_EVAL)
  with pytest.raises(UserError, match='folder:PATH'):
    datasets.open_source('s3://bucket')


# ------------------------------------------------------------------------------------------- folder


def _save(path, array, **kwargs):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path, **kwargs)
  return path


@pytest.fixture
def image_tree(tmp_path):
  root = tmp_path / 'photos'
  files = {
      'a.png': _rgb(40, 50, 0),
      'sub/b.jpg': _rgb(64, 48, 1),
      'sub/deeper/c.jpeg': _rgb(33, 90, 2),
      'd.webp': _rgb(37, 41, 3),
      'sub/E.BMP': _rgb(70, 36, 4),
  }
  for name, array in files.items():
    _save(root / name, array, **({'lossless': True} if name.endswith('.webp') else {}))
  _save(root / 'grey.png', _rgb(45, 45, 5)[..., 0])             # L mode
  _save(root / 'sub/alpha.png', np.dstack([_rgb(34, 60, 6), _rgb(34, 60, 7)[..., :1]]))  # RGBA
  (root / 'notes.txt').write_text('not an image')
  (root / 'sub' / 'readme.md').write_text('# nor this')
  return root, files


def test_folder_finds_all_images_recursively(image_tree):
  root, files = image_tree
  src = datasets.open_source(f'folder:{root}')
  rels = [p[len(str(root)) + 1:] for p in src.paths]
  assert sorted(rels) == sorted([*files, 'grey.png', 'sub/alpha.png'])
  sizes = dict(zip(rels, src.sizes()))
  for i, rel in enumerate(rels):
    im = src[i]
    assert im.dtype == np.uint8 and im.ndim == 3 and im.shape[-1] == 3, rel
    assert im.shape[:2] == tuple(sizes[rel]), rel
    if rel in files and not rel.endswith(('.jpg', '.jpeg')):  # lossless formats decode exactly
      np.testing.assert_array_equal(im, files[rel])
  grey = src[src.paths.index(str(root / 'grey.png'))]
  assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 0], grey[..., 2])


def test_folder_images_of_any_size_feed_the_pipeline(image_tree):
  root, _ = image_tree
  src = datasets.open_source(f'folder:{root}')
  datasets.check_sizes(src, PATCH, 'data.patch_size')
  it = input_pipeline.train_iterator(input_pipeline.train_dataset(src, _config()))
  for batch in _take(it, 3):  # 12 crops: every one of the 7 files at least once
    assert batch['hr'].shape == (4, PATCH, PATCH, 3)
    assert batch['lr'].shape == (4, PATCH // SCALE, PATCH // SCALE, 3)


def test_sixteen_bit_grey_png_keeps_its_range(tmp_path):
  ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
  path = tmp_path / 'deep.png'
  Image.fromarray(ramp).save(path)
  im = datasets.read_image(path)
  assert im.shape == (64, 64, 3) and im.dtype == np.uint8
  np.testing.assert_allclose(im[..., 0].astype(float), ramp / 257.0, atol=0.51)
  assert (im == 255).mean() < 0.01


def test_empty_and_missing_folders_are_user_errors(tmp_path):
  empty = tmp_path / 'empty'
  (empty / 'nested').mkdir(parents=True)
  (empty / 'nested' / 'notes.txt').write_text('x')
  with pytest.raises(UserError, match='holds no'):
    datasets.open_source(f'folder:{empty}')
  with pytest.raises(UserError, match='does not exist'):
    datasets.open_source(f'folder:{tmp_path / "nowhere"}')
  with pytest.raises(UserError):
    datasets.open_source(f'folder:{empty / "nested" / "notes.txt"}')  # a file, not a folder


def test_unreadable_image_names_the_file(image_tree):
  root, _ = image_tree
  bad = root / 'sub' / 'broken.png'
  bad.write_bytes(b'this is not a png at all' * 10)
  src = datasets.open_source(f'folder:{root}')
  with pytest.raises(UserError) as e:
    datasets.check_sizes(src, PATCH, 'data.patch_size')
  assert str(bad) in str(e.value)
  with pytest.raises(UserError) as e:
    datasets.read_image(bad)
  assert str(bad) in str(e.value)
  with pytest.raises(UserError) as e:
    src[src.paths.index(str(bad))]
  assert str(bad) in str(e.value)


def test_truncated_image_names_the_file(tmp_path):
  good = _save(tmp_path / 'good.png', _rgb(64, 64, 0))
  data = good.read_bytes()
  cut = tmp_path / 'cut.png'
  cut.write_bytes(data[:len(data) // 2])
  with pytest.raises(UserError) as e:
    datasets.read_image(cut)
  assert str(cut) in str(e.value)


def test_image_smaller_than_patch_is_a_user_error(image_tree):
  root, _ = image_tree
  small = _save(root / 'sub' / 'tiny.png', _rgb(20, 100, 9))
  src = datasets.open_source(f'folder:{root}')
  with pytest.raises(UserError, match=r'data\.patch_size') as e:
    datasets.check_sizes(src, PATCH, 'data.patch_size')
  assert str(small) in str(e.value)
  only_small = datasets.FolderSource([str(small)])
  it = input_pipeline.train_iterator(input_pipeline.train_dataset(only_small, _config(batch=1)))
  with pytest.raises(UserError, match=r'data\.patch_size'):
    next(it)


@pytest.mark.parametrize('n, fraction, n_val', [(20, 0.1, 2), (20, 0.25, 5), (7, 0.1, 1), (2, 0.1, 1)])
def test_folder_val_split_holds_out_the_fraction(tmp_path, n, fraction, n_val):
  for i in range(n):
    _save(tmp_path / f'd{i % 3}' / f'{i:03d}.png', _rgb(8, 8, i))
  cfg = _config(f'data.source=folder:{tmp_path}', f'data.val_fraction={fraction}')
  train, val = datasets.train_val_sources(cfg.data)
  assert len(val) == n_val and len(train) == n - n_val
  assert not set(train.paths) & set(val.paths)
  assert sorted([*train.paths, *val.paths]) == datasets.folder(tmp_path).paths
  again_train, again_val = datasets.train_val_sources(cfg.data)  # deterministic
  assert again_train.paths == train.paths and again_val.paths == val.paths


def test_folder_val_split_needs_two_images(tmp_path):
  _save(tmp_path / 'one.png', _rgb(8, 8, 0))
  cfg = _config(f'data.source=folder:{tmp_path}')
  with pytest.raises(UserError, match='val_source'):
    datasets.train_val_sources(cfg.data)
  _save(tmp_path / 'two.png', _rgb(8, 8, 1))
  cfg = _config(f'data.source=folder:{tmp_path}', 'data.val_fraction=0.9')  # would leave no training
  with pytest.raises(UserError, match='val_fraction'):
    datasets.train_val_sources(cfg.data)


# --------------------------------------------------------------------------------------------- tfds


def test_tfds_without_the_package_names_the_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', None)
  with pytest.raises(UserError, match=r'\[tfds\]'):
    datasets.open_source('tfds:foo')
  with pytest.raises(UserError, match=r'\[tfds\]'):
    datasets.train_val_sources(_config('data.source=tfds:div2k').data)


# ------------------------------------------------------------------------------------------- grain


def test_train_batches_shapes_range_and_degradation(embedded_train):
  cfg = _config()
  batches = _take(input_pipeline.train_iterator(input_pipeline.train_dataset(embedded_train, cfg)), 3)
  lr_side = PATCH // SCALE
  for b in batches:
    assert b['lr'].shape == (4, lr_side, lr_side, 3) and b['lr'].dtype == np.float32
    assert b['hr'].shape == (4, PATCH, PATCH, 3) and b['hr'].dtype == np.float32
    for x in (b['lr'], b['hr']):
      assert x.min() >= 0.0 and x.max() <= 1.0
    for lr, hr in zip(b['lr'], b['hr']):
      np.testing.assert_allclose(lr, degradations.bicubic_down_blur(hr, scale=SCALE, blur_sigma=1.5),
                                 atol=1e-6)
      np.testing.assert_array_equal(np.round(hr * 255), hr * 255)  # crops of uint8 photos
  hrs = np.concatenate([b['hr'] for b in batches])
  assert len({x.tobytes() for x in hrs}) == len(hrs)  # distinct patches


def test_degradation_sees_the_augmented_patch(embedded_train, monkeypatch):
  """A degradation that does not commute with flips/rot90 shows that it runs after augmentation."""
  cfg = _config('data.augment=True')
  monkeypatch.setattr(input_pipeline, 'degrade_fn', lambda config: lambda hr, rng: hr[::4, 1::4] * 0.5)
  batches = _take(input_pipeline.train_iterator(input_pipeline.train_dataset(embedded_train, cfg)), 2)
  for b in batches:
    np.testing.assert_array_equal(b['lr'], b['hr'][:, ::4, 1::4] * 0.5)


def test_augmentation_flips_and_rotates(monkeypatch):
  """With augment on, a patch of an asymmetric image shows up in more than one orientation."""
  image = np.arange(PATCH * PATCH * 3, dtype=np.int64).reshape(PATCH, PATCH, 3) % 251
  src = datasets.ArraySource([image.astype(np.uint8)], ['ramp'])
  hr = lambda aug: np.concatenate([b['hr'] for b in _take(input_pipeline.train_iterator(
      input_pipeline.train_dataset(src, _config(f'data.augment={aug}'))), 8)])
  assert len({x.tobytes() for x in hr(True)}) >= 4
  assert len({x.tobytes() for x in hr(False)}) == 1


def test_same_seed_same_batches_other_seed_differs(embedded_train):
  def batches(seed):
    cfg = _config(f'seed={seed}')
    return _take(input_pipeline.train_iterator(input_pipeline.train_dataset(embedded_train, cfg)), 2)
  a, b, c = batches(0), batches(0), batches(1)
  for x, y in zip(a, b):
    _assert_batches_equal(x, y)
  assert not all(np.array_equal(x['hr'], z['hr']) for x, z in zip(a, c))


def test_each_epoch_is_reshuffled():
  src = _constant_source(8)
  it = input_pipeline.train_iterator(input_pipeline.train_dataset(src, _config(batch=8)))
  epochs = [_which(b) for b in _take(it, 3)]
  for order in epochs:
    assert sorted(order) == list(range(8))  # every image once per epoch
  assert epochs[0] != epochs[1] or epochs[1] != epochs[2]


def test_iterator_state_round_trips(embedded_train):
  cfg = _config()
  it = input_pipeline.train_iterator(input_pipeline.train_dataset(embedded_train, cfg))
  _take(it, 3)  # 12 records of 11 images: crosses an epoch
  state = it.get_state()
  x = next(it)
  resumed = input_pipeline.train_iterator(input_pipeline.train_dataset(embedded_train, cfg))
  resumed.set_state(state)
  _assert_batches_equal(next(resumed), x)


def test_process_shards_cover_the_global_batch(embedded_train):
  cfg = _config()
  shards = [next(input_pipeline.train_iterator(input_pipeline.train_dataset(
      embedded_train, cfg, process_index=i, process_count=2))) for i in range(2)]
  assert sum(s['hr'].shape[0] for s in shards) == cfg.train.batch_size
  for s in shards:
    assert s['hr'].shape == (2, PATCH, PATCH, 3) and s['lr'].shape == (2, PATCH // 4, PATCH // 4, 3)
  assert not np.array_equal(shards[0]['hr'], shards[1]['hr'])
  # each process reads its own images: in an epoch (two global batches of 4 of the 8) none twice
  src = _constant_source(8)
  seen = [set(), set()]
  for i in range(2):
    it = input_pipeline.train_iterator(input_pipeline.train_dataset(
        src, _config(batch=4), process_index=i, process_count=2))
    for b in _take(it, 2):
      seen[i].update(_which(b))
  assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(8))
  with pytest.raises(ValueError):
    input_pipeline.train_dataset(src, _config(batch=3), process_index=0, process_count=2)


def test_validation_batch_shapes(embedded_eval, image_tree):
  cfg = _config()
  val = input_pipeline.validation_batch(embedded_eval, cfg)
  side = cfg.data.val_patch_size
  assert val['hr'].shape == (len(embedded_eval), side, side, 3)
  assert val['lr'].shape == (len(embedded_eval), side // SCALE, side // SCALE, 3)
  # mixed small sizes: one common side, the largest multiple of the scale that fits them all
  root, _ = image_tree
  src = datasets.open_source(f'folder:{root}')
  val = input_pipeline.validation_batch(src, _config('data.val_patch_size=256', patch=32))
  smallest = min(min(s) for s in src.sizes())
  side = val['hr'].shape[1]
  assert side == smallest - smallest % SCALE
  assert val['hr'].shape == (len(src), side, side, 3)
  assert val['lr'].shape == (len(src), side // SCALE, side // SCALE, 3)
  assert val['hr'].dtype == val['lr'].dtype == np.float32
  for i, (lr, hr) in enumerate(zip(val['lr'], val['hr'])):
    np.testing.assert_array_equal(hr, degradations.center_crop(src[i], side) / np.float32(255))
    np.testing.assert_allclose(lr, degradations.bicubic_down_blur(hr, SCALE, 1.5), atol=1e-6)


def test_degradation_draws_from_the_record_seed(embedded_train):
  """A random degradation (report 001's noise at x1) is part of the seeded pipeline: the same seed
  gives the same LR, and the LR differs from patch to patch."""
  def batches(seed):
    cfg = _config('model.scale=1', "data.degradation=one_of('salt_pepper(0.3, 0.6)', 'darken(0.3, 0.6)')",
                  f'seed={seed}')
    return _take(input_pipeline.train_iterator(input_pipeline.train_dataset(embedded_train, cfg)), 2)
  a, b, c = batches(0), batches(0), batches(1)
  for x, y in zip(a, b):
    _assert_batches_equal(x, y)
  assert not all(np.array_equal(x['lr'], z['lr']) for x, z in zip(a, c))
  kinds = []
  for batch in a:
    assert batch['lr'].shape == batch['hr'].shape == (4, PATCH, PATCH, 3)
    for lr, hr in zip(batch['lr'], batch['hr']):
      hit = np.any(lr != hr, axis=-1) & np.all((lr == 0) | (lr == 1), axis=-1)
      if hit.mean() > 0.2:  # salt and pepper: 30-60 % of the pixels black or white, the rest kept
        kinds.append('salt_pepper')
        assert 0.3 - 0.1 <= hit.mean() <= 0.6 + 0.1
        np.testing.assert_array_equal(lr[~hit], hr[~hit])
      else:  # darkened: every pixel times one factor 1 - p, p in [0.3, 0.6]
        kinds.append('darken')
        f = float(np.median(lr[hr > 0.05] / hr[hr > 0.05]))
        assert 0.4 - 1e-6 <= f <= 0.7 + 1e-6
        np.testing.assert_allclose(lr, hr * f, atol=1e-6)
  assert set(kinds) == {'salt_pepper', 'darken'}, kinds


def test_validation_lr_uses_fixed_per_image_seeds(embedded_eval):
  cfg = _config('model.scale=1', 'data.degradation=salt_pepper(0.3, 0.6)', 'data.val_patch_size=64')
  val = input_pipeline.validation_batch(embedded_eval, cfg)
  assert val['lr'].shape == val['hr'].shape == (len(embedded_eval), 64, 64, 3)
  np.testing.assert_array_equal(input_pipeline.validation_batch(embedded_eval, cfg)['lr'], val['lr'])
  np.testing.assert_array_equal(np.stack(input_pipeline.degrade_fixed(val['hr'], cfg)), val['lr'])
  masks = [np.any(lr != hr, axis=-1) for lr, hr in zip(val['lr'], val['hr'])]
  for mask in masks:
    assert 0.3 - 0.05 <= mask.mean() <= 0.6 + 0.05
  assert not np.array_equal(masks[0], masks[1])  # a seed per image, not one for all
  # the seed is (config.seed, offset + index): a single image gets the noise it gets in the batch
  one = input_pipeline.degrade_fixed(val['hr'][1:], cfg, seed_offset=1)[0]
  np.testing.assert_array_equal(one, val['lr'][1])
  other = input_pipeline.validation_batch(embedded_eval, _config(
      'model.scale=1', 'data.degradation=salt_pepper(0.3, 0.6)', 'data.val_patch_size=64', 'seed=1'))
  assert not np.array_equal(other['lr'], val['lr'])
  np.testing.assert_array_equal(other['hr'], val['hr'])


def test_patch_sides_may_differ():
  assert input_pipeline.patch_hw(_config()) == (PATCH, PATCH)
  assert input_pipeline.patch_hw(ml_collections.ConfigDict({'data': {'patch_size': (16, 24)}})) == (16, 24)
  image = (np.arange(16 * 24 * 3).reshape(16, 24, 3) % 251).astype(np.uint8)  # the patch itself
  hr = image.astype(np.float32) / 255
  flips = {np.ascontiguousarray(degradations.flip_rot90(hr, h, v, False)).tobytes()
           for h in (False, True) for v in (False, True)}
  degrade = degradations.parse('bicubic(4)')
  seen = set()
  for seed in range(32):
    pair = input_pipeline.make_pair(image, np.random.default_rng(seed), patch_size=(16, 24),
                                    augment=True, degrade=degrade)
    assert pair['hr'].shape == (16, 24, 3) and pair['lr'].shape == (4, 6, 3)
    np.testing.assert_allclose(pair['lr'], degradations.bicubic_down(pair['hr'], 4), atol=1e-6)
    seen.add(pair['hr'].tobytes())
  assert seen == flips  # both flips occur; rot90, which would swap the sides, never does


def test_prefetch_to_device_pairs_batches_with_their_state(embedded_train):
  n = jax.device_count()
  cfg = _config(batch=8 if 8 % n == 0 else n)
  mesh = parallel.make_mesh()
  sharding = parallel.batch_sharding(mesh)
  ds = input_pipeline.train_dataset(embedded_train, cfg)
  plain = input_pipeline.train_iterator(ds)
  expected = []
  for _ in range(4):
    batch = next(plain)
    expected.append((batch, plain.get_state()))
  fetched = input_pipeline.prefetch_to_device(input_pipeline.train_iterator(ds), sharding, size=2)
  for (want, want_state), (got, got_state) in zip(expected, fetched):
    for k in ('lr', 'hr'):
      assert isinstance(got[k], jax.Array)
      assert got[k].sharding.is_equivalent_to(sharding, got[k].ndim)
    _assert_batches_equal(jax.device_get(got), want)
    assert got_state == want_state
  # resuming from a state the prefetcher handed out gives the batch that followed it
  resumed = input_pipeline.train_iterator(ds)
  resumed.set_state(expected[1][1])
  _assert_batches_equal(next(resumed), expected[2][0])
