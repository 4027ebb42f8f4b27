"""data/prepare.py (image folder -> tfds dataset in array_record) and `records:PATH`, reading it."""

import errno
import importlib.util
import io
import json
import os
import re
import pathlib
import pickle
import signal
import subprocess
import sys
import time

import grain
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from enhance_jax.data import datasets
from enhance_jax.data import input_pipeline
from enhance_jax.errors import UserError
from enhance_jax.training import config as config_lib

CROP, STEP = 64, 32
# (relative path, height, width): larger than the crop, exactly the crop, narrower, a lossy jpg.
IMAGES = (('a.png', 100, 150), ('b.png', 150, 100), ('c/d.bmp', 64, 64), ('c/e.png', 40, 90),
          ('f.jpg', 97, 130), ('g.png', 96, 128))  # g: the strided crops end at the border


def _load_prepare():
  path = pathlib.Path(__file__).resolve().parents[2] / 'data' / 'prepare.py'
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


def _tree(out):
  """{relative path: bytes} of every file under OUT."""
  return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob('*'))
          if p.is_file()}


def _one_error_line(capsys, *fragments):
  """The single 'error: ...' line the CLI printed (besides progress bars), with every FRAGMENT."""
  err = [l for l in capsys.readouterr().err.strip().splitlines()
         if l and not re.search(r'(img/s|s/img)\]$', l)]  # progress bars, at any host speed
  assert len(err) == 1 and err[0].startswith('error:'), err
  for fragment in fragments:
    assert fragment in err[0], (fragment, err[0])
  return err[0]


def test_crops_match_basicsr_pixel_for_pixel(src, tmp_path):
  out = tmp_path / 'out'
  flags = ('--crop', CROP, '--step', STEP, '--images-per-shard', 2, '--workers', 3)
  assert _run(src, out, *flags) == 0
  expected = _expected(src)
  assert len(expected) == 12 + 12 + 1 + 2 + 12 + 6  # 3x4, 4x3, 1, 1x2, 3x4, 2x3
  manifest = json.loads((out / 'dataset.json').read_text())
  assert (manifest['format'], manifest['version']) == (datasets.RECORDS_FORMAT, 2)
  assert (manifest['count'], manifest['images'], manifest['crop'], manifest['step']) == (
      len(expected), len(IMAGES), CROP, STEP)
  assert manifest['source'] == str(src.resolve())
  assert manifest['tfds'] == {'name': 'out', 'version': '1.0.0', 'dir': '1.0.0', 'split': 'train'}
  assert [(s['file'], s['count']) for s in manifest['shards']] == [
      ('1.0.0/out-train.array_record-00000-of-00003', 24),
      ('1.0.0/out-train.array_record-00001-of-00003', 3),
      ('1.0.0/out-train.array_record-00002-of-00003', 18)]
  assert sorted(_tree(out)) == sorted([  # no temporary files left
      'dataset.json', '1.0.0/dataset_info.json', '1.0.0/features.json',
      *(s['file'] for s in manifest['shards'])])
  assert manifest['names'] == [n for n, _ in expected]
  assert manifest['sizes'] == [list(a.shape[:2]) for _, a in expected]
  origins = [sorted(IMAGES).index(next(im for im in IMAGES if im[0].rsplit('.', 1)[0] == n.rsplit(
      '_s', 1)[0])) for n, _ in expected]
  assert manifest['origins'] == origins
  records = _raw_records(out)
  assert len(records) == len(expected)
  for record, (name, array), origin in zip(records, expected, origins):
    assert datasets.decode_record(record)[::2] == (name, origin)
    png = datasets.decode_record(record)[1]
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
  assert _run(src, tmp_path / 'straight' / 'out', *flags) == 0  # same folder name, same tfds name
  out = tmp_path / 'out'
  finish = prepare.ShardWriter.finish

  def finish_then_die(self):
    finish(self)
    raise KeyboardInterrupt

  monkeypatch.setattr(prepare.ShardWriter, 'finish', finish_then_die)
  assert _run(src, out, *flags) == 130
  assert not (out / 'dataset.json').exists()
  assert sorted(p.name for p in out.glob('1.0.0/*')) == ['out-train.array_record-00000-of-00003']
  shard0 = (out / '1.0.0' / 'out-train.array_record-00000-of-00003').stat()
  monkeypatch.setattr(prepare.ShardWriter, 'finish', finish)
  loaded = []
  load = prepare.load
  monkeypatch.setattr(prepare, 'load', lambda path, *a: loaded.append(path) or load(path, *a))
  assert _run(src, out, *flags) == 0
  assert sorted(pathlib.Path(p).relative_to(src).as_posix() for p in loaded) == [
      rel for rel, _, _ in sorted(IMAGES)[2:]]  # shard 0's two images are not redone
  assert (out / '1.0.0' / 'out-train.array_record-00000-of-00003').stat().st_mtime_ns == (
      shard0.st_mtime_ns)
  assert _tree(out) == _tree(tmp_path / 'straight' / 'out')  # byte for byte, no leftovers


def test_run_stopped_before_its_manifest_resumes(src, tmp_path, monkeypatch):
  assert _run(src, tmp_path / 'straight' / 'out', '--images-per-shard', 2) == 0
  out, write_json = tmp_path / 'out', prepare._write_json

  def stop_before_manifest(path, obj):
    if path.name == datasets.RECORDS_MANIFEST:
      raise KeyboardInterrupt
    write_json(path, obj)

  with monkeypatch.context() as m:
    m.setattr(prepare, '_write_json', stop_before_manifest)
    assert _run(src, out, '--images-per-shard', 2) == 130
  assert (out / '1.0.0' / 'dataset_info.json').is_file() and (out / '.partial').is_dir()
  assert _run(src, out, '--images-per-shard', 2) == 0  # the tfds metadata is written again
  assert _tree(out) == _tree(tmp_path / 'straight' / 'out')


def test_resume_with_other_settings_is_refused(src, tmp_path, monkeypatch):
  def fail(self):
    raise RuntimeError('disk full')

  with monkeypatch.context() as m:
    m.setattr(prepare.ShardWriter, 'finish', fail)
    with pytest.raises(RuntimeError, match='disk full'):
      prepare.prepare(src, tmp_path / 'out', crop=CROP, images_per_shard=2, progress=False)
  with pytest.raises(UserError, match='same arguments'):
    prepare.prepare(src, tmp_path / 'out', crop=48, images_per_shard=2, progress=False)
  assert not list((tmp_path / 'out').rglob('*.tmp'))  # the aborted shard's temporary file is gone


def _config(out, *overrides):
  return config_lib.get_config('esrgan_cpu', [
      f'data.source=records:{out}', 'data.patch_size=32', 'train.batch_size=4',
      'data.augment=False', *overrides])


def test_records_feed_the_train_pipeline(src, tmp_path):
  out = tmp_path / 'out'
  assert _run(src, out, '--crop', CROP, '--step', STEP, '--images-per-shard', 2) == 0
  cfg = _config(out, 'data.val_fraction=0.2')
  train, val = datasets.train_val_sources(cfg.data)
  datasets.check_sizes(train, 32, 'data.patch_size')
  with pytest.raises(UserError, match=r'c/e_s001 is 64x40'):
    datasets.check_sizes(train, 48, 'data.patch_size')
  first = train[0]  # opens the tfds reader, which pickling leaves out: each worker opens its own
  train = pickle.loads(pickle.dumps(train))  # grain workers receive the source pickled
  assert '_reader' not in vars(train)
  np.testing.assert_array_equal(train[0], first)
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
  (out / '1.0.0' / 'out-train.array_record-00001-of-00003').unlink()
  with pytest.raises(UserError, match='00001-of-00003 listed in'):
    datasets.open_source(f'records:{out}')


# ----------------------------------------------------------------------------------- tfds and grain


def _check_examples(source, expected, origins=None):
  """SOURCE (a tfds data source) holds EXPECTED's names and pixels, in order."""
  assert len(source) == len(expected)
  for i, (name, array) in enumerate(expected):
    example = source[i]
    assert example['name'].decode() == name
    np.testing.assert_array_equal(example['image'], array)
    if origins is not None:
      assert int(example['origin']) == origins[i]


def test_tfds_and_grain_read_every_record(src, tmp_path, capsys):
  out = tmp_path / 'photos'
  assert _run(src, out, '--crop', CROP, '--step', STEP, '--images-per-shard', 4) == 0
  printed = capsys.readouterr().out
  assert f"tfds.data_source('photos:1.0.0', data_dir='{tmp_path}', split='train')" in printed
  assert f"tfds.builder_from_directory('{out / '1.0.0'}')" in printed
  assert f'data.source=records:{out}' in printed
  expected, manifest = _expected(src), json.loads((out / 'dataset.json').read_text())
  by_name = tfds.data_source('photos', data_dir=str(tmp_path), split='train')
  _check_examples(by_name, expected, manifest['origins'])
  _check_examples(tfds.data_source('photos:1.0.0', data_dir=str(tmp_path), split='train'), expected)
  from_dir = tfds.builder_from_directory(str(out / '1.0.0')).as_data_source(split='train')
  _check_examples(from_dir, expected)
  names = list(grain.MapDataset.source(from_dir).map(lambda ex: ex['name'].decode()))
  assert names == [n for n, _ in expected]
  batch = next(iter(grain.MapDataset.source(by_name).map(lambda ex: ex['image']).batch(3)))
  assert batch.shape == (3, CROP, CROP, 3) and batch.dtype == np.uint8


_ENCODE = """
import sys
from enhance_jax.data import datasets
sys.stdout.buffer.write(datasets.encode_record('c/e_s001', b'png bytes', 4))
"""


def test_records_are_tfds_examples_with_the_same_bytes_in_every_process():
  features = datasets.record_features()
  example = {'image': b'png bytes', 'name': 'c/e_s001', 'origin': 4}
  record = datasets.encode_record('c/e_s001', b'png bytes', 4)
  parse = features.deserialize_example_np
  assert parse(record, decoders={'image': tfds.decode.SkipDecoding()}) == parse(
      features.serialize_example(example), decoders={'image': tfds.decode.SkipDecoding()})
  assert datasets.decode_record(record) == ('c/e_s001', b'png bytes', 4)
  root = pathlib.Path(__file__).resolve().parents[2]
  for seed in range(1, 4):  # serialize_example's field order follows the hash seed; resume needs one
    env = {**os.environ, 'PYTHONPATH': str(root), 'PYTHONHASHSEED': str(seed)}
    assert subprocess.run([sys.executable, '-c', _ENCODE], env=env, capture_output=True,
                          check=True).stdout == record, seed


def test_a_damaged_shard_is_a_user_error(src, tmp_path):
  out = tmp_path / 'out'
  assert _run(src, out) == 0
  (out / '1.0.0' / 'out-train.array_record-00000-of-00001').write_bytes(b'not array_record')
  source = datasets.records(out)
  with pytest.raises(UserError, match=r'record 0 \(a\) in .* prepare the dataset again'):
    source[0]  # pylint: disable=pointless-statement


def test_folder_names_tfds_cannot_look_up(src, tmp_path, capsys):
  folders = ('div2k_sub', 'DIV2K-sub', 'My Photos (2)', '2024', '__')
  assert [prepare.tfds_name(n) for n in folders] == [
      'div2k_sub', 'div2k_sub', 'my_photos_2', 'images_2024', 'images']
  out = tmp_path / 'My Photos'
  assert _run(src, out) == 0
  assert '(tfds.data_source finds it by name only once the folder is renamed my_photos)' in (
      capsys.readouterr().out)
  assert json.loads((out / 'dataset.json').read_text())['tfds']['name'] == 'my_photos'
  expected = _expected(src, crop=None)
  _check_examples(tfds.builder_from_directory(str(out / '1.0.0')).as_data_source('train'), expected)
  assert datasets.open_source(f'records:{out}').names == [n for n, _ in expected]
  # a tfds catalog name: the version makes tfds.data_source read these files, not build DIV2K
  assert _run(src, tmp_path / 'div2k') == 0
  _check_examples(tfds.data_source('div2k:1.0.0', data_dir=str(tmp_path), split='train'), expected)


def test_version_1_dataset_is_refused(tmp_path):
  old = tmp_path / 'old'
  old.mkdir()
  (old / 'images.array_record-00000-of-00001').write_bytes(b'')
  (old / 'dataset.json').write_text(json.dumps({
      'format': datasets.RECORDS_FORMAT, 'version': 1, 'count': 0, 'names': [], 'sizes': [],
      'origins': [], 'shards': [{'file': 'images.array_record-00000-of-00001', 'count': 0}]}))
  with pytest.raises(UserError, match=r'version-1 dataset .* prepare it again: python data/'):
    datasets.open_source(f'records:{old}')
  (old / 'dataset.json').write_text('{"format": "something.else"}')
  with pytest.raises(UserError, match='not a enhance_jax.records manifest'):
    datasets.records(old)


def test_without_tensorflow_datasets_the_extra_is_named(src, tmp_path, monkeypatch, capsys):
  assert _run(src, tmp_path / 'out') == 0
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', None)
  with pytest.raises(UserError, match=r"pip install 'enhance_jax\[tfds\]'"):
    datasets.open_source(f'records:{tmp_path / "out"}')
  capsys.readouterr()
  assert _run(src, tmp_path / 'new') == 2
  _one_error_line(capsys, 'data/prepare.py needs tensorflow-datasets', "'enhance_jax[tfds]'")
  assert not (tmp_path / 'new').exists()


# ------------------------------------------------------------------------------------- bad inputs


def test_every_unreadable_image_is_listed_before_anything_is_written(src, tmp_path, capsys):
  good = (src / 'a.png').read_bytes()
  broken = {'bad1.png': b'\x89PNG\r\n\x1a\n not really', 'bad2.jpg': b'', 'bad3.png': good[:200],
            'c/bad4.bmp': b'BM', 'bad5.webp': b'RIFF', 'bad6.png': b'x' * 100,
            'bad7.jpeg': b'\xff\xd8\xff'}
  for rel, data in broken.items():
    (src / rel).write_bytes(data)
  out = tmp_path / 'out'
  assert _run(src, out, '--crop', CROP) == 2
  line = _one_error_line(capsys, f'7 of {len(IMAGES) + 7} images under {src} cannot be read',
                         'bad1.png, bad2.jpg, bad3.png, bad5.webp, bad6.png and 2 more',
                         'remove or replace them')
  assert 'bad7' not in line  # the 6th and 7th are counted, not named
  assert not out.exists()


def test_images_below_min_size_are_refused(src, tmp_path, capsys):
  assert prepare.MIN_SIZE == 32
  Image.fromarray(np.zeros((20, 50, 3), np.uint8)).save(src / 'thumb.png')
  Image.fromarray(np.zeros((31, 31, 3), np.uint8)).save(src / 'c' / 'icon.jpg')
  assert _run(src, tmp_path / 'out') == 2
  _one_error_line(capsys, f'2 of {len(IMAGES) + 2} images', 'shorter than --min-size 32',
                  'c/icon.jpg (31x31), thumb.png (50x20)', 'lower --min-size')
  assert not (tmp_path / 'out').exists()
  assert _run(src, tmp_path / 'out', '--min-size', 20, '--crop', CROP) == 0
  names = datasets.records(tmp_path / 'out').names
  assert 'thumb_s001' in names and 'c/icon_s001' in names  # kept whole, as BasicSR's rule says
  capsys.readouterr()
  assert _run(src, tmp_path / 'o2', '--min-size', 0) == 2
  _one_error_line(capsys, '--min-size')


def test_out_must_be_new_empty_or_an_unfinished_run(src, tmp_path, capsys):
  unrelated = tmp_path / 'unrelated'
  unrelated.mkdir()
  (unrelated / 'thesis.tex').write_text('keep me')
  (tmp_path / 'file.txt').write_text('keep me too')
  cases = [(unrelated, 'is not empty and holds no data/prepare.py dataset'),
           (src, 'overlaps --src'), (src / 'prepared', 'overlaps --src'),
           (tmp_path, 'overlaps --src'),  # the images are inside it
           (tmp_path / 'file.txt', 'is a file'),
           (tmp_path / 'file.txt' / 'sub', 'cannot write')]
  for out, message in cases:
    capsys.readouterr()
    assert _run(src, out) == 2, out
    _one_error_line(capsys, message)
  assert (unrelated / 'thesis.tex').read_text() == 'keep me'
  assert (tmp_path / 'file.txt').read_text() == 'keep me too'
  assert not (src / 'prepared').exists()
  assert sorted(unrelated.iterdir()) == [unrelated / 'thesis.tex']
  (tmp_path / 'empty').mkdir()
  assert _run(src, tmp_path / 'empty') == 0


def test_permission_denied_is_one_sentence(src, tmp_path, monkeypatch, capsys):
  locked = tmp_path / 'locked' / 'out'
  mkdir = pathlib.Path.mkdir

  def refuse(self, *args, **kwargs):  # as for a user without write access (tests may run as root)
    if locked.parent in self.parents:
      raise PermissionError(errno.EACCES, 'Permission denied', str(self))
    return mkdir(self, *args, **kwargs)

  monkeypatch.setattr(pathlib.Path, 'mkdir', refuse)
  assert _run(src, locked) == 2
  _one_error_line(capsys, f'cannot write {locked}', 'Permission denied', 'fix the permissions')


def test_files_that_share_a_name_are_refused(src, tmp_path, capsys):
  Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(src / 'a.jpg')
  Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(src / 'c' / 'd.png')
  assert _run(src, tmp_path / 'out') == 2
  _one_error_line(capsys, 'a.jpg and a.png, c/d.bmp and c/d.png', 'rename or remove one of each')
  assert not (tmp_path / 'out').exists()


def test_write_failure_is_one_sentence_and_keeps_finished_shards(src, tmp_path, monkeypatch,
                                                                  capsys):
  flags = ('--crop', CROP, '--step', STEP, '--images-per-shard', 2)
  assert _run(src, tmp_path / 'straight' / 'out', *flags) == 0
  real = prepare.array_record_module.ArrayRecordWriter

  class FullDisk:
    """array_record's writer, failing as on a full disk once shard 2 has 5 records."""

    def __init__(self, path, options):
      self.path, self.writer, self.n = path, real(path, options), 0

    def write(self, record):
      self.n += 1
      if '00002-of' in self.path and self.n > 5:
        raise RuntimeError('No space left on device')
      self.writer.write(record)

    def __getattr__(self, name):
      return getattr(self.writer, name)

  out = tmp_path / 'out'
  with monkeypatch.context() as m:
    m.setattr(prepare.array_record_module, 'ArrayRecordWriter', FullDisk)
    capsys.readouterr()
    assert _run(src, out, *flags) == 2
  _one_error_line(capsys, 'No space left on device', 'free disk space', 'rerun to continue')
  assert sorted(p.relative_to(out).as_posix() for p in out.rglob('*') if p.is_file()) == [
      '.partial/settings.json', '.partial/shard-00000.json', '.partial/shard-00001.json',
      '1.0.0/out-train.array_record-00000-of-00003', '1.0.0/out-train.array_record-00001-of-00003']
  assert _run(src, out, *flags) == 0
  assert _tree(out) == _tree(tmp_path / 'straight' / 'out')


_KILLABLE = """
import importlib.util, pathlib, sys, time
spec = importlib.util.spec_from_file_location('prepare', sys.argv[1])
prepare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prepare)
add = prepare.ShardWriter.add

def add_then_wait(self, origin, records):  # halfway through shard 1: say so, then wait to be killed
  add(self, origin, records)
  if self.index == 1:
    pathlib.Path(sys.argv[2]).touch()
    time.sleep(120)

prepare.ShardWriter.add = add_then_wait
sys.exit(prepare.main(sys.argv[3:]))
"""


@pytest.mark.parametrize('sig', [signal.SIGKILL, signal.SIGINT])
def test_killed_or_interrupted_run_resumes_to_identical_files(src, tmp_path, sig):
  flags = ['--crop', str(CROP), '--step', str(STEP), '--images-per-shard', '2', '--workers', '2']
  assert _run(src, tmp_path / 'straight' / 'out', *flags) == 0
  out, marker = tmp_path / 'out', tmp_path / 'halfway'
  root = pathlib.Path(__file__).resolve().parents[2]
  proc = subprocess.Popen(  # pylint: disable=consider-using-with
      [sys.executable, '-c', _KILLABLE, str(root / 'data' / 'prepare.py'), str(marker),
       '--src', str(src), '--out', str(out), *flags], cwd=root,
      env={**os.environ, 'PYTHONPATH': str(root)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  deadline = time.monotonic() + 120
  while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
    time.sleep(0.05)
  assert marker.exists(), proc.communicate()
  proc.send_signal(sig)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == (-9 if sig == signal.SIGKILL else 130), err
  if sig == signal.SIGINT:
    assert b'rerun the same command to continue' in err
  assert not (out / 'dataset.json').exists()
  assert (out / '1.0.0' / 'out-train.array_record-00000-of-00003').is_file()
  assert not (out / '1.0.0' / 'out-train.array_record-00001-of-00003').exists()
  assert _run(src, out, *flags) == 0
  assert _tree(out) == _tree(tmp_path / 'straight' / 'out')
