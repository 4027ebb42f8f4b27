"""Turns a folder of images into ArrayRecord shards of PNG (sub-)images for fast random-access training.

  python data/prepare.py --src DIV2K_train_HR --out data/div2k_sub --crop 480 --step 240
  python -m enhance_jax.train --exp esrgan --set data.source=records:data/div2k_sub

Crops follow BasicSR's extract_subimages. Shard k holds the records of source images
[k * images_per_shard, (k + 1) * images_per_shard) in sorted order; each is written under a temporary
name and renamed when complete, so an interrupted run continues where it stopped when rerun.
dataset.json is written last: its presence marks a finished dataset.
"""

import argparse
import collections
import concurrent.futures
import hashlib
import io
import itertools
import json
import math
import os
import pathlib
import shutil
import sys

import numpy as np
from array_record.python import array_record_module
from PIL import Image

from enhance_jax import datasets
from enhance_jax.errors import UserError

SHARD = 'images.array_record-{:05d}-of-{:05d}'
PARTIAL = '.partial'  # the run's settings and one index per finished shard, until dataset.json exists
WRITER_OPTIONS = 'group_size:1,uncompressed'  # one record per chunk: random access; PNG is compressed
PNG_LEVEL = 3  # BasicSR's compression_level


def crop_starts(length, crop, step, thresh_size):
  """BasicSR's offsets along one axis: every STEP, plus one aligned to the border if the rest > THRESH."""
  if length <= crop:
    return [0]  # a side shorter than the crop is kept whole (BasicSR would fail)
  starts = list(range(0, length - crop + 1, step))
  if length - (starts[-1] + crop) > thresh_size:
    starts.append(length - crop)
  return starts


def sub_images(image, name, crop=None, step=None, thresh_size=0):
  """[(name, array)] of IMAGE's crops named NAME_s001, ... row by row; the whole image without CROP."""
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


def load(path, name, settings):
  """One source image -> [(name, record bytes, (h, w))]; runs in a worker thread."""
  image = datasets.read_image(path)
  crops = sub_images(image, name, settings['crop'], settings['step'], settings['thresh_size'])
  return [(n, datasets.encode_record(n, encode_png(a)), a.shape[:2]) for n, a in crops]


def _ordered(executor, fn, items, window):
  """fn(*item) for each item, computed up to WINDOW ahead on EXECUTOR, yielded in order."""
  queue = collections.deque()
  for item in items:
    queue.append(executor.submit(fn, *item))
    if len(queue) >= window:
      yield queue.popleft().result()
  while queue:
    yield queue.popleft().result()


def _index_path(out, k):
  return out / PARTIAL / f'shard-{k:05d}.json'


def _write_json(path, obj):
  """Writes dict OBJ to PATH atomically (temporary file, then rename), one key a line."""
  tmp = path.with_name(path.name + '.tmp')
  tmp.write_text('{\n' + ',\n'.join(f' {json.dumps(k)}: {json.dumps(v)}' for k, v in obj.items()) + '\n}\n')
  os.replace(tmp, path)


class ShardWriter:
  """One shard: records go to a temporary file, renamed once its index is saved."""

  def __init__(self, out, index, n_shards):
    self.index = index
    self.path = out / SHARD.format(index, n_shards)
    self.tmp = self.path.with_name(self.path.name + '.tmp')
    self.index_path = _index_path(out, index)
    self.writer = array_record_module.ArrayRecordWriter(str(self.tmp), WRITER_OPTIONS)
    self.entries = {'names': [], 'sizes': [], 'origins': []}

  def add(self, origin, records):
    """Appends the records cut from source image ORIGIN."""
    for name, record, (h, w) in records:
      self.writer.write(record)
      self.entries['names'].append(name)
      self.entries['sizes'].append([int(h), int(w)])
      self.entries['origins'].append(origin)

  def finish(self):
    """Closes the file, saves its index, then gives it its final name: the shard is complete."""
    self.writer.close()
    _write_json(self.index_path, self.entries)
    os.replace(self.tmp, self.path)

  def abort(self):
    """Drops the unfinished temporary file."""
    if self.writer.is_open():
      self.writer.close()
    self.tmp.unlink(missing_ok=True)


def _sources(src):
  """(sorted image paths, names relative to SRC without suffix), or UserError."""
  root = pathlib.Path(src).expanduser()
  if not root.is_dir():
    raise UserError(f'--src {root} is not a directory; pass the folder that holds the images.')
  try:
    paths = datasets.folder(root).paths
  except UserError:
    raise UserError(f'--src {root} holds no {"/".join(s[1:] for s in datasets.IMAGE_SUFFIXES)} '
                    'images; point --src at a folder of photos.') from None
  names = [pathlib.Path(p).relative_to(root).with_suffix('').as_posix() for p in paths]
  return paths, names


def _check_settings(out, settings):
  """Records SETTINGS for a new run, or checks that an unfinished run used the same ones."""
  path = out / PARTIAL / 'settings.json'
  if path.is_file() and json.loads(path.read_text()) != settings:
    raise UserError(f'{out} holds an unfinished dataset prepared from other images or settings; '
                    f'rerun with the same arguments, or delete {out}.')
  path.parent.mkdir(parents=True, exist_ok=True)
  _write_json(path, settings)


def _validate(crop, step, thresh_size, workers, images_per_shard):
  """UserError for flags that make no sense together."""
  if crop is None and step is not None:
    raise UserError('--step only applies to sub-image crops; add --crop SIZE or drop --step.')
  if crop is not None and (crop < 1 or step < 1):
    raise UserError(f'--crop {crop} and --step {step} must be positive; e.g. --crop 480 --step 240.')
  if thresh_size < 0 or workers < 1 or images_per_shard < 1:
    raise UserError('--thresh-size must be >= 0, and --workers and --images-per-shard >= 1.')


def _write_shards(out, paths, names, settings, workers, progress):
  """Writes every shard not yet complete; finished shards are skipped."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  per, n_shards = settings['images_per_shard'], settings['shards']
  todo = [k for k in range(n_shards)
          if not ((out / SHARD.format(k, n_shards)).is_file() and _index_path(out, k).is_file())]
  items = [(i, k) for k in todo for i in range(k * per, min(len(paths), (k + 1) * per))]
  bar = tqdm(total=len(paths), initial=len(paths) - len(items), unit='img', desc='prepare',
             disable=not progress)
  executor = concurrent.futures.ThreadPoolExecutor(workers)  # PIL's codecs release the GIL
  shard = None
  try:
    jobs = ((paths[i], names[i], settings) for i, _ in items)
    for (i, k), records in zip(items, _ordered(executor, load, jobs, 2 * workers)):
      if shard is None or shard.index != k:
        if shard is not None:
          shard.finish()
        shard = ShardWriter(out, k, n_shards)
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
  n_shards = settings['shards']
  shards, entries = [], {'names': [], 'sizes': [], 'origins': []}
  for k in range(n_shards):
    index = json.loads(_index_path(out, k).read_text())
    shards.append({'file': SHARD.format(k, n_shards), 'count': len(index['names'])})
    for key, values in index.items():
      entries[key].extend(values)
  return {'format': datasets.RECORDS_FORMAT, 'version': datasets.RECORDS_VERSION,
          'record': datasets.RECORDS_LAYOUT, 'count': len(entries['names']),
          'source': settings['source'], 'images': settings['images'], 'crop': settings['crop'],
          'step': settings['step'], 'thresh_size': settings['thresh_size'], 'shards': shards,
          **entries}


def prepare(src, out, crop=None, step=None, thresh_size=0, workers=1, images_per_shard=50,
            progress=True):
  """Writes OUT's shards and then OUT/dataset.json; returns the manifest."""
  out = pathlib.Path(out).expanduser()
  if (out / datasets.RECORDS_MANIFEST).exists():
    raise UserError(f'{out} already holds a finished dataset; pick another --out or delete {out}.')
  step = step if step is not None or crop is None else crop // 2
  _validate(crop, step, thresh_size, workers, images_per_shard)
  paths, names = _sources(src)
  settings = {'source': str(pathlib.Path(src).expanduser().resolve()), 'images': len(paths),
              'files': hashlib.sha256('\n'.join(names).encode()).hexdigest(), 'crop': crop,
              'step': step, 'thresh_size': thresh_size, 'images_per_shard': images_per_shard,
              'shards': math.ceil(len(paths) / images_per_shard)}
  _check_settings(out, settings)
  _write_shards(out, paths, names, settings, workers, progress)
  manifest = _manifest(out, settings)
  _write_json(out / datasets.RECORDS_MANIFEST, manifest)
  shutil.rmtree(out / PARTIAL)
  return manifest


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--src', required=True, help='folder of images (searched recursively)')
  parser.add_argument('--out', required=True, help='new folder for the shards and dataset.json')
  parser.add_argument('--crop', type=int, default=None, help='sub-image side (default: whole images)')
  parser.add_argument('--step', type=int, default=None, help='sub-image stride (default: crop / 2)')
  parser.add_argument('--thresh-size', type=int, default=0,
                      help='drop a border remainder of at most this many pixels')
  parser.add_argument('--workers', type=int, default=os.cpu_count() or 1, help='decode/encode threads')
  parser.add_argument('--images-per-shard', type=int, default=50, help='source images per shard')
  args = parser.parse_args(argv)
  try:
    manifest = prepare(args.src, args.out, args.crop, args.step, args.thresh_size, args.workers,
                       args.images_per_shard)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print('interrupted; rerun the same command to continue.', file=sys.stderr)
    return 130
  print(f'{manifest["count"]} records from {manifest["images"]} images in {len(manifest["shards"])} '
        f'shards: use data.source=records:{args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
