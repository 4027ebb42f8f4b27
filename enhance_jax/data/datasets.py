"""Image sources: random-access sequences of uint8 RGB arrays [H,W,3] that grain reads.

`embedded` ships with scikit-image (no download), `folder:PATH` reads a directory tree of image
files, `tfds:NAME` reads a prepared TensorFlow Datasets dataset through `tfds.data_source` (no
TensorFlow), `records:PATH` the tfds dataset (array_record, a PNG per record) data/prepare.py writes.
"""

import dataclasses
import functools
import json
import pathlib
from typing import Sequence

import numpy as np
from PIL import Image

from enhance_jax.data import ava
from enhance_jax.errors import UserError
from enhance_jax.io.image_io import read_image, to_rgb  # uint8 RGB for the pipeline

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.webp', '.bmp')
# scikit-image photographs that load offline; the last two are held out for evaluation.
EMBEDDED_TRAIN = ('chelsea', 'rocket', 'hubble_deep_field', 'retina', 'immunohistochemistry',
                  'stereo_motorcycle', 'camera', 'brick', 'grass', 'gravel', 'moon')
EMBEDDED_EVAL = ('astronaut', 'coffee')
# data/prepare.py's output: a tfds dataset in DIR/1.0.0 (array_record shards, dataset_info.json) and
# DIR/dataset.json, written last, with every record's name, size and source image.
RECORDS_MANIFEST = 'dataset.json'
RECORDS_FORMAT = 'enhance_jax.records'
RECORDS_VERSION = 2  # 1: a custom record layout that tfds cannot read
RECORDS_TFDS_VERSION = '1.0.0'
RECORDS_LAYOUT = 'tf.train.Example: image (PNG), name (text), origin (int64 source image index)'
_AGAIN = 'python data/prepare.py --src IMAGES --out NEW_FOLDER'


@dataclasses.dataclass(frozen=True)
class ArraySource:
  """Images already in memory."""
  images: Sequence[np.ndarray]
  names: Sequence[str]

  def __len__(self):
    return len(self.images)

  def __getitem__(self, i):
    return self.images[i]

  def sizes(self):
    return [im.shape[:2] for im in self.images]


@dataclasses.dataclass(frozen=True)
class FolderSource:
  """Image files, decoded when read (in the grain worker)."""
  paths: Sequence[str]

  def __len__(self):
    return len(self.paths)

  def __getitem__(self, i):
    return read_image(self.paths[i])

  @property
  def names(self):
    return [pathlib.Path(p).stem for p in self.paths]

  def sizes(self):
    """(H, W) of every file from its header only; unreadable files raise UserError."""
    out = []
    for p in self.paths:
      try:
        with Image.open(p) as im:
          w, h = im.size
          im.verify()
      except (OSError, ValueError, SyntaxError, IndexError, Image.DecompressionBombError) as e:
        why = 'no pixel data after the header' if isinstance(e, IndexError) else e  # PNG verify()
        raise UserError(f'cannot read image {p} ({why}); remove or replace it.') from None
      out.append((h, w))
    return out


@dataclasses.dataclass(frozen=True)
class TfdsSource:
  """A tfds data_source; records' KEY image feature ('image', DIV2K's 'hr') converted to uint8 RGB."""
  source: object
  key: str = 'image'

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    return to_rgb(self.source[i][self.key])

  @property
  def names(self):
    return [f'{i:06d}' for i in range(len(self))]

  def sizes(self):
    return None  # decoding every record to learn its size would cost a full pass


def require_tfds(what):
  """tensorflow_datasets, or UserError naming the extra that installs it (WHAT needs it)."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError(f"{what} needs tensorflow-datasets: pip install 'enhance_jax[tfds]'.") from None
  return tfds


@functools.cache
def record_features():
  """tfds features of one record: PNG 'image', its 'name', 'origin' (index of its source image)."""
  tfds = require_tfds('records:PATH')
  return tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=(None, None, 3), encoding_format='png'),
      'name': tfds.features.Text(), 'origin': tfds.features.Scalar(np.int64)})


@functools.cache
def _record_serializer():
  tfds = require_tfds('records:PATH')
  return tfds.core.example_serializer.ExampleSerializer(record_features().get_serialized_info())


def encode_record(name, png, origin):
  """One record: record_features() as a tf.train.Example (no TensorFlow needed).

  Serialized with sorted keys: tfds's serialize_example orders them by string hash, which changes
  from process to process, so a resumed run would write other bytes.
  """
  example = record_features().encode_example({'image': png, 'name': name, 'origin': origin})
  return _record_serializer().get_tf_example(example).SerializeToString(deterministic=True)


def decode_record(record):
  """A record -> (name, PNG bytes, origin), the image left encoded."""
  tfds = require_tfds('records:PATH')
  example = record_features().deserialize_example_np(
      record, decoders={'image': tfds.decode.SkipDecoding()})
  return example['name'].decode('utf-8'), example['image'], int(example['origin'])


@dataclasses.dataclass(frozen=True)
class RecordsSource:
  """A data/prepare.py dataset (or a subset of its records by KEYS), read through tfds."""
  root: str
  builder_dir: str  # the tfds dataset folder (ROOT/1.0.0): dataset_info.json, features, shards
  all_names: tuple
  all_sizes: tuple  # (H, W) per record
  origins: tuple  # index of the source image each record was cut from
  keys: tuple  # the records this source serves, in order

  @functools.cached_property
  def _reader(self):
    """tfds's random-access data source over the shards, opened on first read."""
    tfds = require_tfds('records:PATH')
    return tfds.builder_from_directory(self.builder_dir).as_data_source('train')

  def __getstate__(self):
    return {k: v for k, v in self.__dict__.items() if k != '_reader'}  # workers open their own

  def __len__(self):
    return len(self.keys)

  def __getitem__(self, i):
    k = self.keys[i]
    try:
      return to_rgb(self._reader[k]['image'])
    except Exception as e:  # pylint: disable=broad-except  # PIL, protobuf and array_record errors
      raise UserError(f'record {k} ({self.all_names[k]}) in {self.root} is unreadable '
                      f'({type(e).__name__}: {e}); prepare the dataset again.') from None

  @property
  def names(self):
    return [self.all_names[k] for k in self.keys]

  def sizes(self):
    return [self.all_sizes[k] for k in self.keys]

  def subset(self, indices):
    """The records at INDICES (positions in this source)."""
    return dataclasses.replace(self, keys=tuple(self.keys[i] for i in indices))


def _read_manifest(root):
  """DIR/dataset.json as a dict, or UserError saying how to make it."""
  path = root / RECORDS_MANIFEST
  if not path.is_file():
    raise UserError(f'{root} holds no finished dataset ({RECORDS_MANIFEST} is missing); run python '
                    f'data/prepare.py --src IMAGES --out {root} (again, if it was interrupted).')
  try:
    manifest = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise UserError(f'cannot read {path} ({e}); prepare the dataset again: {_AGAIN}.') from None
  if not isinstance(manifest, dict) or manifest.get('format') != RECORDS_FORMAT:
    raise UserError(f'{path} is not a {RECORDS_FORMAT} manifest; point records:PATH at a folder '
                    f'that data/prepare.py wrote, or run {_AGAIN}.')
  if manifest.get('version') != RECORDS_VERSION:
    raise UserError(f'{root} is a version-{manifest.get("version")} dataset but this enhance_jax '
                    f'reads version {RECORDS_VERSION} (a tfds dataset); prepare it again: '
                    f'{_AGAIN}.')
  return manifest


def records(path):
  """The dataset data/prepare.py wrote to PATH (its folder or its dataset.json)."""
  root = pathlib.Path(path).expanduser()
  root = root.parent if root.name == RECORDS_MANIFEST else root
  manifest = _read_manifest(root)
  for shard in manifest['shards']:
    if not (root / shard['file']).is_file():
      raise UserError(f'shard {root / shard["file"]} listed in {root / RECORDS_MANIFEST} is '
                      'missing; copy the whole folder or prepare the dataset again.')
  builder_dir = root / manifest['tfds']['dir']
  tfds = require_tfds('records:PATH')
  try:
    count = tfds.builder_from_directory(str(builder_dir)).info.splits['train'].num_examples
  except Exception as e:  # pylint: disable=broad-except  # tfds raises many types for bad metadata
    raise UserError(f'cannot open the tfds dataset {builder_dir} ({type(e).__name__}: {e}); copy '
                    'the whole folder or prepare the dataset again.') from None
  if count != manifest['count']:
    raise UserError(f'{builder_dir} holds {count} records but {root / RECORDS_MANIFEST} lists '
                    f'{manifest["count"]}; prepare the dataset again into a new folder.')
  return RecordsSource(str(root), str(builder_dir), tuple(manifest['names']),
                       tuple(tuple(hw) for hw in manifest['sizes']), tuple(manifest['origins']),
                       tuple(range(manifest['count'])))


def embedded(names):
  """scikit-image's bundled photographs (grey textures turned to RGB)."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  images = []
  for name in names:
    image = getattr(skimage.data, name)()
    images.append(to_rgb(image[0] if name == 'stereo_motorcycle' else image))
  return ArraySource(images, list(names))


def folder(path):
  """Every image file under PATH (recursive, sorted), or UserError when there is none."""
  root = pathlib.Path(path).expanduser()
  if not root.is_dir():
    raise UserError(f'data folder {root} does not exist; pass an existing directory as folder:PATH.')
  paths = sorted(str(p) for p in root.rglob('*') if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
  if not paths:
    raise UserError(f'data folder {root} holds no {"/".join(s[1:] for s in IMAGE_SUFFIXES)} images; '
                    'point folder:PATH at a directory of photos.')
  return FolderSource(paths)


# tfds features that hold the photo to train on, in order of preference: most datasets' 'image', else
# DIV2K's 'hr' (its 'lr' goes unused: the pipeline degrades HR by the experiment's own protocol).
TFDS_IMAGE_FEATURES = ('image', 'hr')


def _tfds_image_key(tfds, name, features):
  """The first of TFDS_IMAGE_FEATURES that FEATURES has as an Image, or UserError naming them."""
  for key in TFDS_IMAGE_FEATURES:
    if key in features and isinstance(features[key], tfds.features.Image):
      return key
  found = ', '.join(f'{k} ({type(v).__name__})' for k, v in features.items()) or 'none'
  raise UserError(f'tfds dataset {name!r} has no photo to train on: its features are {found}, but '
                  "data.source=tfds:NAME needs an Image feature named 'image' (or 'hr', as in div2k).")


def _tfds_skip_others(tfds, features, key):
  """Decoders that leave every Image feature but KEY encoded (DIV2K's 'lr'): decoding it is wasted."""
  return {k: tfds.decode.SkipDecoding() for k, v in features.items()
          if k != key and isinstance(v, tfds.features.Image)}


def tfds_source(name, split, data_dir=None):
  """A prepared tfds dataset split (NAME or NAME/CONFIG, e.g. div2k/bicubic_x4) read without
  TensorFlow, from its 'image' feature, else its 'hr' one; never downloads (DIV2K is gigabytes)."""
  tfds = require_tfds(f'data.source=tfds:{name}')
  try:
    features = tfds.builder(name, data_dir=data_dir or None).info.features
  except Exception as e:  # pylint: disable=broad-except  # tfds raises many types for unknown names
    raise _tfds_missing(name, split, e) from None
  key = _tfds_image_key(tfds, name, features)
  try:
    return TfdsSource(tfds.data_source(name, split=split, data_dir=data_dir or None, download=False,
                                       decoders=_tfds_skip_others(tfds, features, key)), key)
  except Exception as e:  # pylint: disable=broad-except  # and for an unprepared dataset or split
    raise _tfds_missing(name, split, e) from None


def _tfds_missing(name, split, e):
  """UserError for a tfds dataset or split that cannot be opened (E, tfds's own reason)."""
  return UserError(f'cannot open tfds dataset {name!r} split {split!r} ({type(e).__name__}: {e}); '
                   f'prepare it first (tfds build {name} --file_format=array_record, or '
                   'data/prepare.py) and set data.data_dir.')


def _split_indices(n, fraction):
  """(train, val) positions in range(N): every k-th held out, so both splits span the source."""
  n_val = max(1, int(round(n * fraction))) if n > 1 else 0
  if n_val == 0 or n_val >= n:
    raise UserError(f'{n} image(s) are too few to hold {fraction:.0%} out for validation and train on '
                    'the rest; add images, lower data.val_fraction or set data.val_source.')
  val_idx = set(np.linspace(0, n - 1, n_val).round().astype(int).tolist())
  return [i for i in range(n) if i not in val_idx], sorted(val_idx)


@dataclasses.dataclass(frozen=True)
class Subset:
  """The records of SOURCE at INDICES (a share of a dataset, or one side of a split)."""
  source: object
  indices: Sequence[int]

  def __len__(self):
    return len(self.indices)

  def __getitem__(self, i):
    return self.source[self.indices[i]]

  @property
  def names(self):
    names = list(self.source.names)
    return [names[i] for i in self.indices]

  def sizes(self):
    sizes = self.source.sizes()
    return None if sizes is None else [sizes[i] for i in self.indices]


def take_fraction(source, fraction):
  """Every (1/fraction)-th record of SOURCE (report 000's data.fraction; at least one), spread over it."""
  if fraction >= 1 or len(source) <= 1:
    return source
  n = max(1, int(round(len(source) * fraction)))
  keep = np.linspace(0, len(source) - 1, n).round().astype(int).tolist()
  if isinstance(source, FolderSource):
    return FolderSource([source.paths[i] for i in keep])
  if isinstance(source, RecordsSource):
    return source.subset(keep)
  return Subset(source, keep)


def _split(source, fraction):
  """Deterministic hold-out of a folder's files, or of a records dataset's source images.

  Records are split by the image they were cut from, so overlapping crops never straddle the splits.
  """
  if isinstance(source, RecordsSource):
    groups = sorted(set(source.origins[k] for k in source.keys))
    val_groups = {groups[i] for i in _split_indices(len(groups), fraction)[1]}
    held = [source.origins[k] in val_groups for k in source.keys]
    return (source.subset([i for i, h in enumerate(held) if not h]),
            source.subset([i for i, h in enumerate(held) if h]))
  train, val = _split_indices(len(source), fraction)
  if isinstance(source, FolderSource):
    return FolderSource([source.paths[i] for i in train]), FolderSource([source.paths[i] for i in val])
  return Subset(source, train), Subset(source, val)


def open_source(spec, data_dir='', split='train'):
  """One source from a spec: 'embedded', 'folder:PATH', 'records:PATH', 'tfds:NAME[:SPLIT]' or
  'ava:DIR' (AVA's AVA.txt + images/ID.jpg: items are (image, rating histogram), for NIMA)."""
  kind, _, arg = spec.partition(':')
  if kind == 'embedded':
    return embedded(EMBEDDED_EVAL if split != 'train' else EMBEDDED_TRAIN)
  if kind == 'folder' and arg:
    return folder(arg)
  if kind == 'records' and arg:
    return records(arg)
  if kind == 'tfds' and arg:
    name, _, tfds_split = arg.partition(':')
    return tfds_source(name, tfds_split or split, data_dir)
  if kind == 'ava' and arg:
    return ava.AVASource(arg)
  raise UserError(f'data source {spec!r} is not one of: embedded, folder:PATH, records:PATH, '
                  'tfds:NAME, ava:DIR.')


def train_val_sources(data):
  """(train, val) sources for the config's data section: data.fraction of the data (report 000),
  then the held-out share: data.val_source, the embedded hold-outs, a tfds dataset's validation
  (else test) split, or every k-th image (data.val_fraction, 40 % in report 000)."""
  fraction = data.fraction
  if data.val_source:
    return (take_fraction(open_source(data.source, data.data_dir, 'train'), fraction),
            open_source(data.val_source, data.data_dir, 'validation'))
  kind = data.source.partition(':')[0]
  if kind == 'embedded':
    return embedded(EMBEDDED_TRAIN), embedded(EMBEDDED_EVAL)
  if kind == 'tfds' and ':' not in data.source.partition(':')[2]:
    train = take_fraction(open_source(data.source, data.data_dir, 'train'), fraction)
    for split in ('validation', 'test'):
      try:
        return train, take_fraction(open_source(data.source, data.data_dir, split), fraction)
      except UserError:
        continue
    return _split(train, data.val_fraction)  # e.g. cats_vs_dogs: a train split only
  return _split(take_fraction(open_source(data.source, data.data_dir), fraction), data.val_fraction)


def check_sizes(source, min_side, what):
  """Raises UserError naming the first image smaller than MIN_SIDE on either side."""
  sizes = source.sizes()
  if sizes is None:
    return
  for name, (h, w) in zip(getattr(source, 'paths', source.names), sizes):
    if min(h, w) < min_side:
      raise UserError(f'image {name} is {w}x{h}, smaller than {what}={min_side}; remove it or lower '
                      f'{what}.')
