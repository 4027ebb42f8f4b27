"""AVA (Murray et al. 2012), the aesthetic ratings NIMA learns, and a stand-in for offline runs.

AVA's AVA.txt has one line per image: index, image id, the vote counts for the scores 1..10, two
semantic tag ids and a challenge id (15 integers). `AVASource(DIR)` reads DIR/AVA.txt and the photos
DIR/images/{id}.jpg; items are (uint8 RGB image [H, W, 3], normalised histogram float32[10]).

`synthetic_histogram(image)` gives photos without ratings (the embedded scikit-image ones) a fixed
rating histogram so that NIMA can train offline: see its docstring for the function.
"""

import logging
import os
import pathlib
import sys
from collections.abc import Sequence

import numpy as np

from enhance_jax.errors import UserError
from enhance_jax.io.image_io import read_image

AVA_TXT = 'AVA.txt'
IMAGES_DIR = 'images'
NUM_BUCKETS = 10
_FIELDS = 2 + NUM_BUCKETS + 3


def read_ava_txt(path: str | os.PathLike) -> list[tuple[str, np.ndarray]]:
  """[(image id, vote counts int64[10] for the scores 1..10)] of an AVA.txt, in file order.

  Blank lines are skipped; a line that is not 15 non-negative integers with at least one vote raises
  UserError naming the file and its line number.
  """
  path = pathlib.Path(path)
  try:
    text = path.read_text(encoding='utf-8', errors='replace')
  except OSError as e:
    raise UserError(f'cannot read {path} ({e.strerror or e}); give the AVA.txt from the AVA '
                    'dataset.') from None
  out = []
  for number, line in enumerate(text.splitlines(), start=1):
    fields = line.split()
    if not fields:
      continue
    problem = None
    if len(fields) != _FIELDS:
      problem = f'has {len(fields)} fields, want {_FIELDS}'
    elif not all(f.isdigit() for f in fields):
      bad = next(f for f in fields if not f.isdigit())
      problem = f'has {bad!r} where a non-negative integer belongs'
    else:
      counts = np.asarray([int(f) for f in fields[2:2 + NUM_BUCKETS]], np.int64)
      if counts.sum() == 0:
        problem = 'has no votes'
    if problem:
      raise UserError(f'{path} line {number} {problem} (index, image id, 10 vote counts, 2 tags, '
                      'challenge id); fix or remove that line.')
    out.append((fields[1], counts))
  if not out:
    raise UserError(f'{path} lists no images; give the AVA.txt from the AVA dataset.')
  return out


def normalise(counts) -> np.ndarray:
  """Vote counts [..., 10] -> a float32 histogram summing to 1."""
  counts = np.asarray(counts, np.float64)
  return (counts / counts.sum(axis=-1, keepdims=True)).astype(np.float32)


class AVASource:
  """AVA images with their rating histograms: ROOT/AVA.txt and ROOT/images/{id}.jpg.

  ids: only these image ids (e.g. a published split), else every listed one. Images listed but
  absent are skipped, counted (`missing`) and reported once, here; an image file that exists but cannot
  be decoded raises UserError when read. Items: (uint8 RGB [H, W, 3], histogram float32[10]).
  """

  def __init__(self, root: str | os.PathLike, ids: Sequence[str] | None = None):
    root = pathlib.Path(root).expanduser()
    txt = root / AVA_TXT
    if not txt.is_file():
      raise UserError(f'{root} holds no {AVA_TXT}; point it at the AVA folder (AVA.txt and images/).')
    rows = read_ava_txt(txt)
    if ids is not None:
      wanted = set(ids)
      rows = [r for r in rows if r[0] in wanted]
    present = [(i, c) for i, c in rows if (root / IMAGES_DIR / f'{i}.jpg').is_file()]
    if not present:
      raise UserError(f'none of the {len(rows)} images {AVA_TXT} lists is in {root / IMAGES_DIR} '
                      '(as ID.jpg); download the AVA images there.')
    self.root = str(root)
    self.ids = tuple(i for i, _ in present)
    self.histograms = normalise(np.stack([c for _, c in present]))
    self.missing = len(rows) - len(present)
    if self.missing:
      msg = (f'AVA: {self.missing} of {len(rows)} images listed in {txt} are missing from '
             f'{root / IMAGES_DIR}; using the other {len(present)}.')
      logging.warning(msg)
      print(msg, file=sys.stderr, flush=True)

  def __len__(self):
    return len(self.ids)

  def __getitem__(self, i):
    return read_image(self.path(i)), self.histograms[i]

  def path(self, i) -> str:
    return os.path.join(self.root, IMAGES_DIR, f'{self.ids[i]}.jpg')

  @property
  def names(self):
    return list(self.ids)

  def sizes(self):
    return None  # reading 255,000 JPEG headers would cost a pass over the disk


# ---------------------------------------------------------------- a rating for unrated photos

SYNTHETIC_STD = 1.4  # AVA's mean standard deviation of ratings (report 002)


def synthetic_histogram(image) -> np.ndarray:
  """A fixed, deterministic stand-in rating histogram float32[10] for an image (crop).

  From the luma Y (BT.601, in [0, 1]) of IMAGE (uint8, or float in [0, 1]; grey or RGB):
    exposure = 1 - |2 * mean(Y) - 1|          (1 for mid-grey on average, 0 for black or white)
    contrast = min(std(Y) / 0.25, 1)
    m = 2 + 7 * (exposure + contrast) / 2     (a mean score in [2, 9])
    p_k proportional to exp(-(k - m)^2 / (2 * 1.4^2)), k = 1..10, normalised
  i.e. a discretised Gaussian of AVA's typical spread around a mean that rewards well-exposed,
  contrasty crops.
  """
  x = np.asarray(image)
  x = x.astype(np.float64) / 255.0 if x.dtype == np.uint8 else x.astype(np.float64)
  if x.ndim == 3 and x.shape[-1] >= 3:
    y = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
  else:
    y = x.reshape(x.shape[:2]) if x.ndim == 3 else x
  exposure = 1.0 - abs(2.0 * float(y.mean()) - 1.0)
  contrast = min(float(y.std()) / 0.25, 1.0)
  m = 2.0 + 7.0 * (exposure + contrast) / 2.0
  k = np.arange(1, NUM_BUCKETS + 1, dtype=np.float64)
  p = np.exp(-((k - m) ** 2) / (2.0 * SYNTHETIC_STD ** 2))
  return (p / p.sum()).astype(np.float32)
