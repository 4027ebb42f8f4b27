"""data/prepare.py (image folder -> ArrayRecord shards) and the `records:PATH` source that reads them."""

import importlib.util
import io
import json
import pathlib
import pickle

import grain
import numpy as np
import pytest
from PIL import Image

from enhance_jax import config as config_lib
from enhance_jax import datasets
from enhance_jax import input_pipeline
from enhance_jax.errors import UserError

CROP, STEP = 64, 32
# (relative path, height, width): larger than the crop, exactly the crop, narrower than it, lossy jpg.
IMAGES = (('a.png', 100, 150), ('b.png', 150, 100), ('c/d.bmp', 64, 64), ('c/e.png', 40, 90),
          ('f.jpg', 97, 130), ('g.png', 96, 128))  # g: the strided crops end at the border


def _load_prepare():
  path = pathlib.Path(__file__).resolve().parent.parent / 'data' / 'prepare.py'
  spec = importlib.util.spec_from_file_location('enhance_jax_data_prepare', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


prepare = _load_prepare()


@pytest.fixture(name='src')
def src_fixture(tmp_path):
  """A folder of random images of different sizes, one of them nested, plus a non-image file."""
  root = tmp_path / 'src'
  for i, (rel, h, w) in enumerate(IMAGES):
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(i).integers(0, 256, (h, w, 3), np.uint8)).save(root / rel)
  (root / 'notes.txt').write_text('not an image')
  return root


def _run(src, out, *flags):
  return prepare.main(['--src', str(src), '--out', str(out), *map(str, flags)])


def _basicsr_crops(image, crop, step, thresh_size):
  """BasicSR's extract_subimages loop, written out independently, for sides at least CROP."""
  h, w = image.shape[:2]
  h_space = np.arange(0, h - crop + 1, step)
  if h - (h_space[-1] + crop) > thresh_size:
    h_space = np.append(h_space, h - crop)
  w_space = np.arange(0, w - crop + 1, step)
  if w - (w_space[-1] + crop) > thresh_size:
    w_space = np.append(w_space, w - crop)
  return [image[x:x + crop, y:y + crop] for x in h_space for y in w_space]


def _expected(src, crop=CROP, step=STEP, thresh_size=0):
  """[(name, uint8 array)] the dataset should hold, in order."""
  out = []
  for rel, h, w in sorted(IMAGES):
    image = datasets.read_image(src / rel)
    stem = rel.rsplit('.', 1)[0]
    if crop is None:
      crops = [image]
    elif min(h, w) >= crop:
      crops = _basicsr_crops(image, crop, step, thresh_size)
    else:  # a side narrower than the crop is kept whole along that side
      xs = [0] if h <= crop else list(range(0, h - crop + 1, step)) + [h - crop]
      ys = [0] if w <= crop else list(range(0, w - crop + 1, step)) + [w - crop]
      crops = [image[x:x + crop, y:y + crop] for x in xs for y in ys]
    out += [(stem if crop is None else f'{stem}_s{i + 1:03d}', c) for i, c in enumerate(crops)]
  return out


def _raw_records(out):
  """Every record's bytes, read shard by shard with grain's ArrayRecord reader."""
  manifest = json.loads((out / 'dataset.json').read_text())
  return [bytes(r) for s in manifest['shards']
          for r in grain.sources.ArrayRecordDataSource(str(out / s['file']))]


def test_crops_match_basicsr_pixel_for_pixel(src, tmp_path):
  out = tmp_path / 'out'
  assert _run(src, out, '--crop', CROP, '--step', STEP, '--images-per-shard', 2, '--workers', 3) == 0
  expected = _expected(src)
  assert len(expected) == 12 + 12 + 1 + 2 + 12 + 6  # 3x4, 4x3, 1, 1x2, 3x4, 2x3
  manifest = json.loads((out / 'dataset.json').read_text())
  assert manifest['format'] == datasets.RECORDS_FORMAT and manifest['version'] == datasets.RECORDS_VERSION
  assert (manifest['count'], manifest['images'], manifest['crop'], manifest['step']) == (
      len(expected), len(IMAGES), CROP, STEP)
  assert manifest['source'] == str(src.resolve())
  assert [(s['file'], s['count']) for s in manifest['shards']] == [
      ('images.array_record-00000-of-00003', 24), ('images.array_record-00001-of-00003', 3),
      ('images.array_record-00002-of-00003', 18)]
  assert sorted(p.name for p in out.iterdir()) == sorted(['dataset.json', *(
      s['file'] for s in manifest['shards'])])  # no temporary files left
  assert manifest['names'] == [n for n, _ in expected]
  assert manifest['sizes'] == [list(a.shape[:2]) for _, a in expected]
  records = _raw_records(out)
  assert len(records) == len(expected)
  for record, (name, array) in zip(records, expected):
    got_name, png = datasets.decode_record(record)
    assert got_name == name
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), array)
  source = datasets.open_source(f'records:{out}')
  assert len(source) == len(expected) and source.names == manifest['names']
  for i in (0, 7, len(expected) - 1):
    assert source[i].dtype == np.uint8 and source[i].flags['C_CONTIGUOUS']
    np.testing.assert_array_equal(source[i], expected[i][1])


def test_whole_images_and_thresh_size(src, tmp_path):
  assert _run(src, tmp_path / 'whole', '--workers', 1) == 0
  whole = datasets.records(tmp_path / 'whole' / 'dataset.json')
  expected = _expected(src, crop=None)
  assert whole.names == [n for n, _ in expected] and whole.sizes() == [
      (h, w) for _, h, w in sorted(IMAGES)]
  for i, (_, array) in enumerate(expected):
    np.testing.assert_array_equal(whole[i], array)
  # remainders of at most 22 pixels (4, 22, 1, 2 here; not 26) get no border-aligned crop
  assert _run(src, tmp_path / 'thresh', '--crop', CROP, '--step', STEP, '--thresh-size', 22) == 0
  manifest = json.loads((tmp_path / 'thresh' / 'dataset.json').read_text())
  big = [rel for rel, h, w in IMAGES if min(h, w) >= CROP]
  counts = {rel: len(_basicsr_crops(datasets.read_image(src / rel), CROP, STEP, 22)) for rel in big}
  assert counts == {'a.png': 2 * 3, 'b.png': 3 * 2, 'c/d.bmp': 1, 'f.jpg': 2 * 3, 'g.png': 2 * 3}
  counts['c/e.png'] = 2
  assert manifest['count'] == sum(counts.values())
  names = manifest['names']
  for rel, n in counts.items():
    assert sum(name.startswith(rel.rsplit('.', 1)[0] + '_s') for name in names) == n, rel


def test_default_step_is_half_the_crop(src, tmp_path):
  assert _run(src, tmp_path / 'out', '--crop', CROP) == 0
  assert json.loads((tmp_path / 'out' / 'dataset.json').read_text())['step'] == CROP // 2


def test_finished_dataset_is_not_overwritten(src, tmp_path, capsys):
  out = tmp_path / 'out'
  assert _run(src, out, '--crop', CROP) == 0
  before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
  capsys.readouterr()
  assert _run(src, out, '--crop', 48) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error:') and '--out' in err[0]
  assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
  with pytest.raises(UserError, match='another --out or delete'):
    prepare.prepare(src, out)


def test_interrupted_run_resumes_with_the_same_records(src, tmp_path, monkeypatch):
  flags = ('--crop', CROP, '--step', STEP, '--images-per-shard', 2, '--workers', 2)
  assert _run(src, tmp_path / 'straight', *flags) == 0
  out = tmp_path / 'out'
  finish = prepare.ShardWriter.finish

  def finish_then_die(self):
    finish(self)
    raise KeyboardInterrupt

  monkeypatch.setattr(prepare.ShardWriter, 'finish', finish_then_die)
  assert _run(src, out, *flags) == 130
  assert not (out / 'dataset.json').exists()
  assert sorted(p.name for p in out.glob('images.*')) == ['images.array_record-00000-of-00003']
  shard0 = (out / 'images.array_record-00000-of-00003').stat()
  monkeypatch.setattr(prepare.ShardWriter, 'finish', finish)
  loaded = []
  load = prepare.load
  monkeypatch.setattr(prepare, 'load', lambda path, *a: loaded.append(path) or load(path, *a))
  assert _run(src, out, *flags) == 0
  assert sorted(pathlib.Path(p).relative_to(src).as_posix() for p in loaded) == [
      rel for rel, _, _ in sorted(IMAGES)[2:]]  # shard 0's two images are not redone
  assert (out / 'images.array_record-00000-of-00003').stat().st_mtime_ns == shard0.st_mtime_ns
  assert _raw_records(out) == _raw_records(tmp_path / 'straight')
  assert (out / 'dataset.json').read_text() == (tmp_path / 'straight' / 'dataset.json').read_text()
  assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / 'straight').iterdir())


def test_resume_with_other_settings_is_refused(src, tmp_path, monkeypatch):
  def fail(self):
    raise RuntimeError('disk full')

  with monkeypatch.context() as m:
    m.setattr(prepare.ShardWriter, 'finish', fail)
    with pytest.raises(RuntimeError, match='disk full'):
      prepare.prepare(src, tmp_path / 'out', crop=CROP, images_per_shard=2, progress=False)
  with pytest.raises(UserError, match='same arguments'):
    prepare.prepare(src, tmp_path / 'out', crop=48, images_per_shard=2, progress=False)
  assert not list((tmp_path / 'out').glob('*.tmp'))  # the aborted shard's temporary file is gone


def _config(out, *overrides):
  return config_lib.get_config('esrgan_cpu', [f'data.source=records:{out}', 'data.patch_size=32',
                                              'train.batch_size=4', 'data.augment=False', *overrides])


def test_records_feed_the_train_pipeline(src, tmp_path):
  out = tmp_path / 'out'
  assert _run(src, out, '--crop', CROP, '--step', STEP, '--images-per-shard', 2) == 0
  cfg = _config(out, 'data.val_fraction=0.2')
  train, val = datasets.train_val_sources(cfg.data)
  datasets.check_sizes(train, 32, 'data.patch_size')
  with pytest.raises(UserError, match=r'c/e_s001 is 64x40'):
    datasets.check_sizes(train, 48, 'data.patch_size')
  train = pickle.loads(pickle.dumps(train))  # grain workers receive the source pickled
  it = input_pipeline.train_iterator(input_pipeline.train_dataset(train, cfg))
  windows = [np.lib.stride_tricks.sliding_window_view(train[i], (32, 32, 3)).reshape(-1, 32, 32, 3)
             for i in range(len(train))]
  for _ in range(3):
    batch = next(it)
    assert batch['hr'].shape == (4, 32, 32, 3) and batch['lr'].shape == (4, 8, 8, 3)
    for hr in np.round(batch['hr'] * 255).astype(np.uint8):  # each patch is cut from a record
      assert any((w == hr).all(axis=(1, 2, 3)).any() for w in windows)
  assert input_pipeline.validation_batch(val, cfg)['hr'].shape[0] == len(val)


def test_held_out_split_is_disjoint_by_source_image(src, tmp_path):
  out = tmp_path / 'out'
  assert _run(src, out, '--crop', CROP, '--step', STEP) == 0
  cfg = _config(out, 'data.val_fraction=0.4')
  train, val = datasets.train_val_sources(cfg.data)
  stems = lambda s: {n.rsplit('_s', 1)[0] for n in s.names}
  assert stems(val) == {'a', 'g'}  # 2 of 6 images: the first and the last
  assert not stems(train) & stems(val)
  assert sorted(train.names + val.names) == sorted(datasets.records(out).names)
  again = datasets.train_val_sources(cfg.data)
  assert again[0].names == train.names and again[1].names == val.names
  np.testing.assert_array_equal(val[0], datasets.records(out)[0])
  with pytest.raises(UserError, match='val_fraction'):
    datasets.train_val_sources(_config(out, 'data.val_fraction=0.95').data)


def test_bad_inputs_are_user_errors(src, tmp_path, capsys):
  empty = tmp_path / 'empty'
  empty.mkdir()
  (empty / 'readme.txt').write_text('x')
  cases = [((tmp_path / 'nowhere', tmp_path / 'o1'), 'not a directory'),
           ((empty, tmp_path / 'o2'), 'no png'),
           ((src, tmp_path / 'o3', '--step', 8), 'add --crop'),
           ((src, tmp_path / 'o4', '--crop', 0), 'must be positive')]
  for args, message in cases:
    capsys.readouterr()
    assert _run(*args) == 2, args
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error:') and message in err[0], err
  (src / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really')
  with pytest.raises(UserError, match='broken.png'):
    prepare.prepare(src, tmp_path / 'o5', crop=CROP, progress=False)
  assert not (tmp_path / 'o5' / 'dataset.json').exists()


def test_records_source_errors_name_the_fix(src, tmp_path):
  with pytest.raises(UserError, match='records:PATH'):
    datasets.open_source('record:x')
  with pytest.raises(UserError, match='data/prepare.py'):
    datasets.open_source(f'records:{tmp_path}')
  out = tmp_path / 'out'
  assert _run(src, out, '--images-per-shard', 2) == 0
  (out / 'images.array_record-00001-of-00003').unlink()
  with pytest.raises(UserError, match='00001-of-00003 listed in'):
    datasets.open_source(f'records:{out}')
