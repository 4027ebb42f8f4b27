"""How much context a window needs for the whole-image output: error against distance to a cut.

  python benchmarks/tile_pad.py --json benchmarks/results/cpu-2core_tile_pad.json

For each released model and real photo: the model's output on the whole photo, and on the photo cut
along its right and bottom edges (what a window sees at a cut). Each output pixel's error in levels
of 8 bits is binned by its distance, in input pixels, to the nearest cut: a window pad of d keeps
every pixel at distance >= d, so the smallest d whose pixels all stay within 2 levels, with under
0.1 % more than 1 level off, is the pad that architecture needs (enhance_jax.infer.tiling.PAD_RULES).
"""

import argparse
import json
import pathlib
import platform
import sys
import time

import jax
import numpy as np
import skimage.data

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from enhance_jax.infer import restoring# pylint: disable=g-import-not-at-top,wrong-import-position
from enhance_jax.infer import tiling# pylint: disable=g-import-not-at-top,wrong-import-position

BINS = (0, 4, 8, 12, 16, 24, 32, 40, 48, 64, 80, 96)


def crop(name: str, size: int) -> np.ndarray:
  """A SIZE x SIZE crop from the middle of skimage's photo NAME, float32 [0, 1]."""
  img = getattr(skimage.data, name)()
  h, w = img.shape[:2]
  y, x = max(0, (h - size) // 2), max(0, (w - size) // 2)
  return np.asarray(img[y:y + size, x:x + size, :3], np.float32) / 255.0


def profile(enhancer, image: np.ndarray, cut: int) -> list[dict]:
  """Error rows by distance to a cut CUT pixels from the bottom and right of IMAGE."""
  s = enhancer.scale
  whole = enhancer(image, dtype=np.uint8).astype(np.int32)
  h, w = image.shape[0] - cut, image.shape[1] - cut
  part = enhancer(image[:h, :w], dtype=np.uint8).astype(np.int32)
  err = np.abs(part - whole[:h * s, :w * s]).max(-1)
  dist = np.minimum((h * s - 1 - np.arange(h * s))[:, None], (w * s - 1 - np.arange(w * s))[None]) // s
  rows = []
  for lo in BINS:
    sel = err[dist >= lo]
    rows.append({'pad': lo, 'max_levels': int(sel.max()), 'mean_levels': float(sel.mean()),
                 'frac_over_1': float((sel > 1).mean())})
  return rows


def needed_pad(rows) -> int | None:
  """The smallest binned pad within 2 levels and under 0.1 % of pixels over 1 level."""
  return next((r['pad'] for r in rows if r['max_levels'] <= 2 and r['frac_over_1'] < 1e-3), None)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--models', default='realesrgan-x4plus,realesrgan-x4plus-anime,'
                 'realesr-animevideov3-x4')
  p.add_argument('--photos', default='coffee,chelsea')
  p.add_argument('--size', type=int, default=224, help='side of the crop from each photo')
  p.add_argument('--cut', type=int, default=32, help='input pixels cut off the bottom and right')
  p.add_argument('--json', default=None)
  args = p.parse_args(argv)
  result = {'what': __doc__.splitlines()[0], 'size': args.size, 'cut': args.cut,
            'device': jax.devices()[0].device_kind, 'host': platform.node(),
            'jax': jax.__version__, 'models': {}}
  for name in args.models.split(','):
    enhancer = tiling.enhancer_for(restoring.restore(name), 'fp32', tile=0)
    per_photo = {}
    for photo in args.photos.split(','):
      t = time.perf_counter()
      rows = profile(enhancer, crop(photo, args.size), args.cut)
      per_photo[photo] = {'rows': rows, 'needed_pad': needed_pad(rows),
                          'seconds': round(time.perf_counter() - t, 1)}
      print(name, photo, 'needs pad', per_photo[photo]['needed_pad'], flush=True)
      for r in rows:
        print(f"  pad {r['pad']:3d}: max {r['max_levels']:3d} mean {r['mean_levels']:.3f} "
              f"over-1 {100 * r['frac_over_1']:.3f} %", flush=True)
    result['models'][name] = {'arch': enhancer.model.__class__.__name__, 'photos': per_photo,
                              'default_pad': tiling.default_pad(enhancer.model)}
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(result, indent=2) + '\n')
  return 0


if __name__ == '__main__':
  sys.exit(main())
