"""Turns a folder of images into a TFDS dataset of PNG (sub-)images for fast random-access training.

  python data/prepare.py --src DIV2K_train_HR --out data/div2k_sub --crop 480 --step 240
  python -m enhance_jax.train --exp esrgan --set data.source=records:data/div2k_sub

OUT/1.0.0 is a TensorFlow Datasets dataset in array_record shards, written and read without
TensorFlow: tfds.data_source, grain and records:OUT read it. Crops follow BasicSR's
extract_subimages. Every source image's header is checked before anything is written. Shard k holds
the records of source images [k * images_per_shard, (k + 1) * images_per_shard) in sorted order;
each is written under a temporary name and renamed when complete, so an interrupted run continues
where it stopped when rerun. OUT/dataset.json, written last, marks a finished dataset.
"""

import argparse
import collections
import concurrent.futures
import contextlib
import errno
import hashlib
import io
import itertools
import json
import math
import os
import pathlib
import re
import shutil
import sys

import numpy as np
from array_record.python import array_record_module
from PIL import Image

from enhance_jax.data import datasets
from enhance_jax.errors import UserError

SHARD = '{name}-train.array_record-{k:05d}-of-{n:05d}'  # tfds's default file name template
PARTIAL = '.partial'  # settings, one index per finished shard, temporary files; until dataset.json
WRITER_OPTIONS = 'group_size:1,uncompressed'  # a record per chunk: random access; PNG is compressed
PNG_LEVEL = 3  # BasicSR's compression_level
MIN_SIZE = 32  # default --min-size: twice the smallest data.patch_size (16); smaller are icons
TFDS_NAME = re.compile(r'[a-z][a-z0-9_]*')  # names tfds.data_source finds (it snake-cases capitals)
LISTED = 5  # files named in one error message; the rest are counted


def crop_starts(length, crop, step, thresh_size):
  """BasicSR's offsets on an axis: every STEP, plus one at the border if the rest exceeds THRESH."""
  if length <= crop:
    return [0]  # a side shorter than the crop is kept whole (BasicSR would fail)
  starts = list(range(0, length - crop + 1, step))
  if length - (starts[-1] + crop) > thresh_size:
    starts.append(length - crop)
  return starts


def sub_images(image, name, crop=None, step=None, thresh_size=0):
  """[(name, array)] of IMAGE's crops, NAME_s001, ... row by row; the whole image without CROP."""
  if not crop:
    return [(name, image)]
  rows = crop_starts(image.shape[0], crop, step, thresh_size)
  cols = crop_starts(image.shape[1], crop, step, thresh_size)
  return [(f'{name}_s{i + 1:03d}', image[y:y + crop, x:x + crop])
          for i, (y, x) in enumerate(itertools.product(rows, cols))]


def encode_png(array):
  """uint8 HxWx3 -> PNG bytes (lossless)."""
  buf = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(array)).save(buf, format='PNG', compress_level=PNG_LEVEL)
  return buf.getvalue()


def load(path, name, origin, settings):
  """Source image ORIGIN -> [(name, record bytes, (h, w))]; runs in a worker thread."""
  image = datasets.read_image(path)
  crops = sub_images(image, name, settings['crop'], settings['step'], settings['thresh_size'])
  return [(n, datasets.encode_record(n, encode_png(a), origin), a.shape[:2]) for n, a in crops]


def _ordered(executor, fn, items, window):
  """fn(*item) for each item, computed up to WINDOW ahead on EXECUTOR, yielded in order."""
  queue = collections.deque()
  for item in items:
    queue.append(executor.submit(fn, *item))
    if len(queue) >= window:
      yield queue.popleft().result()
  while queue:
    yield queue.popleft().result()


def tfds_name(folder):
  """FOLDER if tfds.data_source can look the dataset up by that name, else a snake case one."""
  if TFDS_NAME.fullmatch(folder):
    return folder
  name = re.sub(r'[^a-z0-9]+', '_', folder.lower()).strip('_')
  return name if name[:1].isalpha() else f'images_{name}'.rstrip('_')


def _listing(items):
  """'a, b, c and 4 more': the first LISTED items of a list, then how many were left out."""
  shown = ', '.join(items[:LISTED])
  return shown if len(items) <= LISTED else f'{shown} and {len(items) - LISTED} more'


def _index_path(out, k):
  return out / PARTIAL / f'shard-{k:05d}.json'


def _write_json(path, obj):
  """Writes dict OBJ to PATH atomically (temporary file, then rename), one key a line."""
  tmp = path.with_name(path.name + '.tmp')
  tmp.write_text('{\n' + ',\n'.join(f' {json.dumps(k)}: {json.dumps(v)}' for k, v in obj.items())
                 + '\n}\n')
  os.replace(tmp, path)


def _shard_path(out, settings, k):
  """Where shard K of a finished run lives: OUT/1.0.0/NAME-train.array_record-0000k-of-0000n."""
  return out / datasets.RECORDS_TFDS_VERSION / SHARD.format(name=settings['name'], k=k,
                                                           n=settings['shards'])


@contextlib.contextmanager
def _out_errors(out):
  """OSError reading or writing OUT (a file in the way, no permission, a full disk) -> UserError."""
  try:
    yield
  except OSError as e:
    raise UserError(f'cannot write {e.filename or out} ({e.strerror or e}); free disk space, fix '
                    'the permissions or pick another --out, then rerun to continue.') from None


@contextlib.contextmanager
def _as_os_error(path):
  """array_record reports a failed open or write (a full disk) as RuntimeError: an OSError here."""
  try:
    yield
  except RuntimeError as e:
    raise OSError(errno.EIO, str(e), str(path)) from None


class ShardWriter:
  """One shard: records go to a temporary file in OUT/.partial, moved in once its index is saved."""

  def __init__(self, out, settings, index):
    self.index = index
    self.path = _shard_path(out, settings, index)
    self.tmp = out / PARTIAL / (self.path.name + '.tmp')
    self.index_path = _index_path(out, index)
    self.writer = array_record_module.ArrayRecordWriter(str(self.tmp), WRITER_OPTIONS)
    if not self.writer.ok():
      with _as_os_error(self.tmp):
        self.writer.close()  # array_record says why only when the writer is used
      raise OSError(errno.EIO, 'cannot create the file', str(self.tmp))
    self.entries = {'num_bytes': 0, 'names': [], 'sizes': [], 'origins': []}

  def add(self, origin, records):
    """Appends the records cut from source image ORIGIN."""
    for name, record, (h, w) in records:
      with _as_os_error(self.tmp):
        self.writer.write(record)
      self.entries['num_bytes'] += len(record)
      self.entries['names'].append(name)
      self.entries['sizes'].append([int(h), int(w)])
      self.entries['origins'].append(origin)

  def finish(self):
    """Closes the file, saves its index, then gives it its final name: the shard is complete."""
    with _as_os_error(self.tmp):
      self.writer.close()
    _write_json(self.index_path, self.entries)
    self.path.parent.mkdir(exist_ok=True)
    os.replace(self.tmp, self.path)

  def abort(self):
    """Drops the unfinished temporary file."""
    if self.writer.is_open():
      try:
        self.writer.close()
      except RuntimeError:
        pass  # the file is deleted anyway
    self.tmp.unlink(missing_ok=True)


def _sources(src):
  """(root, sorted image paths, names relative to SRC without suffix), or UserError."""
  root = pathlib.Path(src).expanduser()
  if not root.is_dir():
    raise UserError(f'--src {root} is not a directory; pass the folder that holds the images.')
  try:
    paths = datasets.folder(root).paths
  except UserError:
    raise UserError(f'--src {root} holds no {"/".join(s[1:] for s in datasets.IMAGE_SUFFIXES)} '
                    'images; point --src at a folder of photos.') from None
  names = [pathlib.Path(p).relative_to(root).with_suffix('').as_posix() for p in paths]
  undecodable = [n.encode('utf-8', 'backslashreplace').decode() for n in names
                 if _not_utf8(n)]
  if undecodable:
    raise UserError(f'records are named after their file, and {_listing(undecodable)} under '
                    f'{_shown(root)} have names that are not UTF-8 text; rename them.')
  by_name = collections.defaultdict(list)
  for name, path in zip(names, paths):
    by_name[name].append(pathlib.Path(path).relative_to(root).as_posix())
  clashes = [' and '.join(group) for group in by_name.values() if len(group) > 1]
  if clashes:
    raise UserError(f'records are named after their file without its suffix, so '
                    f'{_listing(clashes)} under {root} would share a name; rename or remove one of '
                    'each.')
  return root, paths, names


def _not_utf8(name):
  try:
    name.encode('utf-8')
  except UnicodeEncodeError:
    return True
  return False


def _shown(text):
  """TEXT (a path, a message) printable on any UTF-8 stream: undecodable bytes escaped."""
  return str(text).encode('utf-8', 'backslashreplace').decode('utf-8')


def _header(path):
  """(h, w) from PATH's header (PIL also checks the file's structure), or the reason it fails."""
  try:
    with Image.open(path) as im:
      w, h = im.size
      im.verify()
    return (h, w), None
  except (OSError, ValueError, SyntaxError, IndexError, Image.DecompressionBombError) as e:
    if isinstance(e, IndexError):  # Pillow's PNG verify() on a file without pixel data
      return None, 'no pixel data after the header (truncated)'
    return None, str(e) or type(e).__name__


def _check_images(root, paths, min_size, workers, progress):
  """UserError listing every unreadable image, else every one smaller than MIN_SIZE."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  with concurrent.futures.ThreadPoolExecutor(workers) as executor:
    headers = list(tqdm(executor.map(_header, paths), total=len(paths), unit='img', desc='check',
                        disable=not progress))
  rel = [pathlib.Path(p).relative_to(root).as_posix() for p in paths]
  bad = [(r, why) for r, (_, why) in zip(rel, headers) if why]
  if bad:
    raise UserError(f'{len(bad)} of {len(paths)} images under {root} cannot be read '
                    f'({bad[0][0]}: {bad[0][1]}): {_listing([r for r, _ in bad])}; remove or '
                    'replace them and rerun.')
  small = [f'{r} ({w}x{h})' for r, ((h, w), _) in zip(rel, headers) if min(h, w) < min_size]
  if small:
    raise UserError(f'{len(small)} of {len(paths)} images under {root} have a side shorter than '
                    f'--min-size {min_size}: {_listing(small)}; remove them or lower --min-size.')


def _check_out(out, src_root):
  """UserError unless OUT is new, empty, or an unfinished run of this script, away from SRC_ROOT."""
  if (out / datasets.RECORDS_MANIFEST).exists():
    raise UserError(f'{out} already holds a finished dataset; pick another --out or delete {out}.')
  if out.exists() and not out.is_dir():
    raise UserError(f'--out {out} is a file; pass a new or empty folder for the dataset.')
  o, s = out.resolve(), src_root.resolve()
  if o == s or s in o.parents or o in s.parents:
    raise UserError(f'--out {out} overlaps --src {src_root}; write the dataset to a folder outside '
                    'the images and not above them.')
  if out.is_dir() and any(out.iterdir()) and not (out / PARTIAL).is_dir():
    raise UserError(f'--out {out} is not empty and holds no data/prepare.py dataset; pass a new or '
                    'empty folder.')


def _check_settings(out, settings):
  """Records SETTINGS for a new run, or checks that an unfinished run used the same ones."""
  path = out / PARTIAL / 'settings.json'
  if path.is_file() and json.loads(path.read_text()) != settings:
    raise UserError(f'{out} holds an unfinished dataset prepared from other images or settings; '
                    f'rerun with the same arguments, or delete {out}.')
  path.parent.mkdir(parents=True, exist_ok=True)
  _write_json(path, settings)


def _validate(crop, step, thresh_size, workers, images_per_shard, min_size):
  """UserError for flags that make no sense together."""
  if crop is None and step is not None:
    raise UserError('--step only applies to sub-image crops; add --crop SIZE or drop --step.')
  if crop is not None and (crop < 1 or step < 1):
    raise UserError(f'--crop {crop} and --step {step} must be positive; e.g. --crop 480 --step '
                    '240.')
  if thresh_size < 0 or workers < 1 or images_per_shard < 1 or min_size < 1:
    raise UserError('--thresh-size must be >= 0, and --workers, --images-per-shard and --min-size '
                    '>= 1.')


def _write_shards(out, paths, names, settings, workers, progress):
  """Writes every shard not yet complete; finished shards are skipped."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  per, n_shards = settings['images_per_shard'], settings['shards']
  todo = [k for k in range(n_shards)
          if not (_shard_path(out, settings, k).is_file() and _index_path(out, k).is_file())]
  items = [(i, k) for k in todo for i in range(k * per, min(len(paths), (k + 1) * per))]
  bar = tqdm(total=len(paths), initial=len(paths) - len(items), unit='img', desc='prepare',
             disable=not progress)
  executor = concurrent.futures.ThreadPoolExecutor(workers)  # PIL's codecs release the GIL
  shard = None
  try:
    jobs = ((paths[i], names[i], i, settings) for i, _ in items)
    for (i, k), records in zip(items, _ordered(executor, load, jobs, 2 * workers)):
      if shard is None or shard.index != k:
        if shard is not None:
          shard.finish()
        shard = ShardWriter(out, settings, k)
      shard.add(i, records)
      bar.update()
    if shard is not None:
      shard.finish()
      shard = None
  except BaseException:
    if shard is not None:
      shard.abort()
    raise
  finally:
    executor.shutdown(cancel_futures=True)
    bar.close()


def _manifest(out, settings):
  """dataset.json's content, gathered from the per-shard indexes."""
  shards, entries = [], {'names': [], 'sizes': [], 'origins': []}
  for k in range(settings['shards']):
    index = json.loads(_index_path(out, k).read_text())
    shards.append({'file': _shard_path(out, settings, k).relative_to(out).as_posix(),
                   'count': len(index['names']), 'num_bytes': index.pop('num_bytes')})
    for key, values in index.items():
      entries[key].extend(values)
  return {'format': datasets.RECORDS_FORMAT, 'version': datasets.RECORDS_VERSION,
          'record': datasets.RECORDS_LAYOUT,
          'tfds': {'name': settings['name'], 'version': datasets.RECORDS_TFDS_VERSION,
                   'dir': datasets.RECORDS_TFDS_VERSION, 'split': 'train'},
          'count': len(entries['names']),
          **{k: settings[k] for k in ('source', 'images', 'crop', 'step', 'thresh_size')},
          'shards': shards, **entries}


def _write_tfds_metadata(out, manifest):
  """OUT/1.0.0's dataset_info.json and features.json, which make the shards a tfds dataset."""
  tfds = datasets.require_tfds('data/prepare.py')
  data_dir = str(out / manifest['tfds']['dir'])
  crop, step = manifest['crop'], manifest['step']
  what = f'{crop}x{crop} crops (step {step})' if crop else 'whole images'
  split = tfds.core.SplitInfo(
      name='train', shard_lengths=[s['count'] for s in manifest['shards']],
      num_bytes=sum(s['num_bytes'] for s in manifest['shards']),
      filename_template=tfds.core.ShardedFileTemplate(
          data_dir=data_dir, dataset_name=manifest['tfds']['name'], split='train',
          filetype_suffix='array_record'))
  tfds.folder_dataset.write_metadata(
      data_dir=data_dir, features=datasets.record_features(), split_infos=[split], check_data=False,
      description=f'{manifest["count"]} PNG {what} of the {manifest["images"]} images in '
                  f'{manifest["source"]}, by data/prepare.py.')


def readers(out, manifest):
  """How to read OUT: the calls that find it, one a line."""
  out = pathlib.Path(out).expanduser()
  name, version, full = manifest['tfds']['name'], manifest['tfds']['version'], out.resolve()
  lines = [f'enhance_jax: --set data.source=records:{out}',
           f"tfds: tfds.builder_from_directory('{full / version}').as_data_source('train')"]
  if full.name == name:  # the version picks these files over a tfds catalog dataset of that name
    lines.append(f"tfds: tfds.data_source('{name}:{version}', data_dir='{full.parent}', "
                 "split='train')")
  else:
    lines.append(f'(tfds.data_source finds it by name only once the folder is renamed {name})')
  return lines


def prepare(src, out, crop=None, step=None, thresh_size=0, workers=1, images_per_shard=50,
            min_size=MIN_SIZE, progress=True):
  """Checks the images, writes OUT's shards, the tfds metadata and then OUT/dataset.json."""
  datasets.require_tfds('data/prepare.py')
  out = pathlib.Path(out).expanduser()
  step = step if step is not None or crop is None else crop // 2
  _validate(crop, step, thresh_size, workers, images_per_shard, min_size)
  root, paths, names = _sources(src)
  with _out_errors(out):
    _check_out(out, root)
  _check_images(root, paths, min_size, workers, progress)
  settings = {'source': str(root.resolve()), 'images': len(paths),
              'files': hashlib.sha256('\n'.join(names).encode()).hexdigest(), 'crop': crop,
              'step': step, 'thresh_size': thresh_size, 'images_per_shard': images_per_shard,
              'shards': math.ceil(len(paths) / images_per_shard),
              'name': tfds_name(out.resolve().name)}
  with _out_errors(out):
    _check_settings(out, settings)
    _write_shards(out, paths, names, settings, workers, progress)
    manifest = _manifest(out, settings)
    _write_tfds_metadata(out, manifest)
    _write_json(out / datasets.RECORDS_MANIFEST, manifest)
    shutil.rmtree(out / PARTIAL)
  return manifest


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--src', required=True, help='folder of images (searched recursively)')
  parser.add_argument('--out', required=True,
                      help='new or empty folder: the tfds dataset in OUT/1.0.0, then dataset.json')
  parser.add_argument('--crop', type=int, default=None,
                      help='sub-image side (default: whole images)')
  parser.add_argument('--step', type=int, default=None, help='sub-image stride (default: crop / 2)')
  parser.add_argument('--thresh-size', type=int, default=0,
                      help='drop a border remainder of at most this many pixels')
  parser.add_argument('--workers', type=int, default=os.cpu_count() or 1,
                      help='decode/encode threads')
  parser.add_argument('--images-per-shard', type=int, default=50, help='source images per shard')
  parser.add_argument('--min-size', type=int, default=MIN_SIZE,
                      help=f'refuse images whose shorter side is smaller (default {MIN_SIZE})')
  args = parser.parse_args(argv)
  try:
    manifest = prepare(args.src, args.out, args.crop, args.step, args.thresh_size, args.workers,
                       args.images_per_shard, args.min_size)
  except UserError as e:
    print(f'error: {_shown(e)}', file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print('interrupted; rerun the same command to continue.', file=sys.stderr)
    return 130
  print(f'{manifest["count"]} records from {manifest["images"]} images in '
        f'{len(manifest["shards"])} shards; read them with')
  print('\n'.join(f'  {line}' for line in readers(args.out, manifest)))
  return 0


if __name__ == '__main__':
  sys.exit(main())
