"""Score images with no reference: NIMA's aesthetics (the mean rating 1..10 and its standard deviation)
or NIQE's naturalness (lower is more natural).

  python -m enhance_jax.score photo.jpg photos/ --nima nima_mnasnet.pth
  python -m enhance_jax.score photos/ --nima runs/nima --json > scores.json
  python -m enhance_jax.score photos/ --metric niqe --crop-border 4

--nima: a `nima` training run's workdir (its best checkpoint), a weights file in torchvision layout (.pth/.pt/.safetensors/.npz: mobilenet_v2 `features.*`
or mnasnet1_0 `layers.*` plus the 10-way head `classifier.1.weight`/`.bias`), or a model directory
(model.json {'name': 'nima', 'backbone': ...} + variables.npz). Each image is made RGB (grey
repeated, alpha dropped) and resized to --size x --size (0 keeps its own size) before scoring.
--metric niqe: BasicSR's NIQE on the Y channel in whole 96x96 blocks, with the pristine parameters of
--niqe-params, else an installed basicsr's, the model cache's, or downloaded (niqe_pris_params.npz).
Unreadable images are skipped with a message (exit 1); bad weights stop before scoring (exit 2).
"""

import argparse
import json
import pathlib
import sys

from enhance_jax import stops
from enhance_jax.errors import UserError
from enhance_jax.infer import scoring
from enhance_jax.io import image_io
from enhance_jax.models import nima as nima_model

MIN_SIDE = 8  # smaller images (icons, 1x1 pixels) carry no aesthetics to rate
MAX_SIZE = 4096  # --size beyond this resizes every image to gigabytes
COLUMNS = {'nima': ('mean', 'std'), 'niqe': ('niqe',)}  # what each metric reports per image


def collect(inputs: list[str]) -> list[pathlib.Path]:
  """Image files of INPUTS (files as given, folders searched recursively for image extensions)."""
  return [path for path, _ in image_io.collect(inputs)]


def run(args, out=None) -> int:
  """Scores every input; returns how many were skipped (each reported on stderr)."""
  out = out or sys.stdout
  files = collect(args.inputs)
  if args.metric == 'niqe':
    niqe_scorer = scoring.NiqeScorer(args.niqe_params or None, args.crop_border)
    scorer = lambda image: (niqe_scorer(image),)
  else:
    scorer = scoring.Scorer(args.nima, args.backbone, args.size)
  columns = COLUMNS[args.metric]
  rows, failed = [], 0
  for path in files:
    try:
      image, _ = image_io.read(path)
      if min(image.shape[:2]) < MIN_SIDE:
        raise UserError(f'the image is {image.shape[1]}x{image.shape[0]} pixels; score needs at '
                        f'least {MIN_SIDE}x{MIN_SIDE}.')
      values = scorer(image)
    except UserError as e:
      failed += 1
      print(image_io.shown(f'skipped {path}: {e}'), file=sys.stderr, flush=True)
      continue
    rows.append({'image': image_io.shown(path), **{c: round(v, 4) for c, v in zip(columns, values)}})
  if args.json:
    json.dump(rows, out, indent=2)
    out.write('\n')
  else:
    width = max([len('image')] + [len(r['image']) for r in rows])
    out.write(f"{'image':<{width}}" + ''.join(f'  {c:>6}' for c in columns) + '\n')
    for r in rows:
      out.write(f"{r['image']:<{width}}" + ''.join(f'  {r[c]:6.3f}' for c in columns) + '\n')
  out.flush()
  return failed


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog='\n'.join(__doc__.splitlines()[2:4]))
  p.add_argument('inputs', nargs='+', help='image files and/or folders (searched recursively)')
  p.add_argument('--metric', choices=tuple(COLUMNS), default='nima',
                 help="'nima' (aesthetics, needs --nima) or 'niqe' (naturalness, lower is better)")
  p.add_argument('--nima', default=None,
                 help='a `nima` run\'s workdir, NIMA weights (.pth/.safetensors/.npz, torchvision '
                      'layout) or a converted model directory')
  p.add_argument('--backbone', choices=nima_model.IMPORTABLE + ('mobilenet',), default=None,
                 help='the backbone of a weights file (default: told from its keys)')
  p.add_argument('--size', type=int, default=224,
                 help='images are resized to SIZE x SIZE before scoring; 0 keeps their size')
  p.add_argument('--niqe-params', default='',
                 help="NIQE's niqe_pris_params.npz (default: basicsr's, the cache's or downloaded)")
  p.add_argument('--crop-border', type=int, default=0, help='NIQE: pixels dropped from each side')
  p.add_argument('--json', action='store_true',
                 help='print a JSON list of {image, mean, std} (niqe: {image, niqe})')
  return p.parse_args(argv)


def main(argv=None):
  stops.begin()
  args = parse_args(argv)
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  absl_logging.set_verbosity(absl_logging.ERROR)  # orbax's notes on reading a `nima` workdir
  if args.metric == 'nima' and not args.nima:
    print('error: score --metric nima needs --nima (a `nima` run, NIMA weights or a model directory); '
          'or use --metric niqe, which needs none.', file=sys.stderr)
    return 2
  if args.crop_border < 0:
    print(f'error: --crop-border {args.crop_border} must be 0 or more.', file=sys.stderr)
    return 2
  if args.size < 0 or 0 < args.size < 32 or args.size > MAX_SIZE:
    print(f'error: --size {args.size} must be 0 (keep) or from 32 to {MAX_SIZE} (NIMA was trained '
          'at 224).', file=sys.stderr)
    return 2
  try:
    failed = run(args)
  except UserError as e:
    print(f'error: {image_io.shown(e)}', file=sys.stderr)
    return 2
  except stops.Stopped as stop:
    print(stops.stop_sentence(stop, 'no scores were printed (they come once every image is scored) '
                                    'and score writes no file; rerun to score'),
          file=sys.stderr, flush=True)
    return stop.exit_code
  if failed:
    print(f'{failed} file(s) skipped; see the messages above.', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  stops.finish(main())
