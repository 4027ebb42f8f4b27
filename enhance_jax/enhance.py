"""Enhance your own images with a released model (by name), a trained run or a weights file.

  python -m enhance_jax.enhance photo.jpg -o photo_x4.png            # realesrgan-x4plus
  python -m enhance_jax.enhance photos/ -o out/ --model realesr-animevideov3-x2
  python -m enhance_jax.enhance cat.png -o cat_x4.png --weights RealESRGAN_x4plus.pth
  python -m enhance_jax.enhance scan.tif -o scan_x2.png --workdir runs/esrgan --outscale 2 --precision bf16
  python -m enhance_jax.enhance --list-models

Images up to --tile pixels a side run whole; larger ones run in windows of that side, each output
pixel taken from the one window where it has --tile-pad pixels of context (default: measured per
architecture), so the output is the whole-image output to a level or two of 8 bits, with no seam
(enhance_jax.infer.tiling). Alpha is enlarged by the model (or bicubic, --alpha), grey stays grey, 16-bit
stays 16-bit, EXIF orientation is applied.
"""

import argparse
import math
import pathlib
import sys

from absl import logging as absl_logging
import numpy as np
from PIL import Image

from enhance_jax import stops
from enhance_jax.errors import UserError
from enhance_jax.infer import restoring
from enhance_jax.infer import tiling
from enhance_jax.io import image_io
from enhance_jax.io import zoo

# ---------------------------------------------------------------- one image, many files


def _resize(image: np.ndarray, hw: tuple[int, int], method) -> np.ndarray:
  """HxWxC uint16/float -> hw, channel by channel in float (Pillow's 'F' mode keeps 16-bit detail)."""
  channels = []
  for c in range(image.shape[-1]):
    plane = Image.fromarray(np.asarray(image[..., c], np.float32))
    channels.append(np.asarray(plane.resize((hw[1], hw[0]), method), np.float32))
  out = np.stack(channels, -1)
  if image.dtype == np.uint16:
    return np.clip(np.round(out), 0, 65535).astype(np.uint16)
  return out


def enhance_image(enhancer: tiling.Enhancer, image: np.ndarray, outscale: float | None = None,
                  alpha: str = 'model') -> np.ndarray:
  """A read image (float HxWxC, C 1..4) enhanced to uint16 with the same channels: colour through the
  model, alpha through the model (repeated to RGB) or bicubic, then resized to OUTSCALE x the input
  (Lanczos) when that differs from the model's scale."""
  h, w, c = image.shape
  colour, a = image_io.split_alpha(image)
  out = enhancer(colour, dtype=np.uint16)
  if c in (1, 2):
    out = np.round(out.mean(-1, keepdims=True, dtype=np.float32)).astype(np.uint16)
  if a is not None:
    if alpha == 'model':
      a_out = enhancer(np.repeat(a, 3, -1), dtype=np.uint16)
      a_out = np.round(a_out.mean(-1, keepdims=True, dtype=np.float32)).astype(np.uint16)
    else:
      a_out = _resize(image_io.quantise(a, 16), (h * enhancer.scale, w * enhancer.scale),
                      Image.Resampling.BICUBIC)
    out = np.concatenate([out, a_out], -1)
  if outscale and abs(outscale - enhancer.scale) > 1e-9:
    size = (max(1, round(h * outscale)), max(1, round(w * outscale)))
    out = _resize(out, size, Image.Resampling.LANCZOS)
  return out


def _output_ext(src: pathlib.Path, ext: str, has_alpha: bool) -> str:
  """The output's extension: --ext, else the input's when writable (PNG when it has alpha and the
  format cannot hold it, or the input's format cannot be written)."""
  if ext != 'auto':
    out = '.' + ext.lower().lstrip('.')
  else:
    out = src.suffix.lower() if src.suffix.lower() in image_io.EXTENSIONS else '.png'
  return '.png' if has_alpha and out in image_io.NO_ALPHA else out


def plan_outputs(files, output: str, suffix: str) -> list[tuple[pathlib.Path, pathlib.Path | None]]:
  """[(input, output path without extension or with the one -o names)]: -o is a file for one input
  with an image extension, else a folder mirroring the inputs' tree."""
  out = pathlib.Path(output)
  if len(files) == 1 and out.suffix.lower() in image_io.EXTENSIONS and not out.is_dir():
    if not out.parent.is_dir():
      raise UserError(f'the folder {out.parent} of -o {out} does not exist; create it or choose '
                      'another output path.')
    return [(files[0][0], out)]
  if out.suffix.lower() in image_io.EXTENSIONS and not out.is_dir():
    raise UserError(f'-o {out} names one file but {len(files)} images were given; give a folder.')
  return [(src, out / rel.parent / f'{rel.stem}{suffix}') for src, rel in files]


DEFAULT_MODEL = 'realesrgan-x4plus'


def _restore(args) -> restoring.Restored:
  given = [x for x in (args.workdir, args.weights, args.model) if x]
  if len(given) > 1:
    raise UserError('give one of --model (a released model by name), --workdir (a training run or '
                    'a converted model) and --weights (a .pth/.safetensors/ncnn file).')
  restored = restoring.restore(given[0] if given else DEFAULT_MODEL, args.arch, args.checkpoint)
  return restoring.at_scale(restored, args.scale)


def run(args) -> int:
  """Enhances every input; returns the number of files that failed (each reported, others written)."""
  files = image_io.collect(args.inputs)
  plan = plan_outputs(files, args.output, args.suffix)
  restored = _restore(args)
  enhancer = tiling.enhancer_for(restored, args.precision, tile=args.tile, pad=args.tile_pad,
                                 batch=args.batch)
  windows = f'windows of {enhancer.tile}, pad {enhancer.pad}' if enhancer.tile else 'whole images'
  print(f'{restored.name} x{restored.scale} from {restored.source} ({args.precision}, {windows}); '
        f'{len(plan)} image(s)', flush=True)
  failed = 0
  progress = None
  if len(plan) > 1:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    progress = tqdm(total=len(plan), unit='img', file=sys.stderr)
  for src, dst in plan:
    try:
      image, info = image_io.read(src)
      if dst.suffix.lower() not in image_io.EXTENSIONS or len(plan) > 1:
        dst = dst.with_name(dst.name + _output_ext(src, args.ext, image.shape[-1] in (2, 4)))
      if dst.exists() and not args.overwrite:
        raise UserError(f'{image_io.shown(dst)} exists; pass --overwrite to replace it.')
      out = enhance_image(enhancer, image, args.outscale, args.alpha)
      dst.parent.mkdir(parents=True, exist_ok=True)
      image_io.write(dst, out, info.bits, info.icc_profile)
      (progress.write if progress else print)(
          f'{image_io.shown(src)} -> {image_io.shown(dst)} ({out.shape[1]}x{out.shape[0]})')
    except UserError as e:
      failed += 1
      message = image_io.shown(f'skipped {src}: {e}')
      if progress:  # above the progress bar, not glued to it
        progress.write(message, file=sys.stderr)
      else:
        print(message, file=sys.stderr, flush=True)
    if progress:
      progress.update()
  if progress:
    progress.close()
  return failed


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog='\n'.join(__doc__.splitlines()[2:5]))
  p.add_argument('inputs', nargs='*', help='image files and/or folders (searched recursively)')
  p.add_argument('-o', '--output', help='output file (one input) or folder')
  p.add_argument('--model', help=f'a released model by name (default {DEFAULT_MODEL}; see '
                                 '--list-models)')
  p.add_argument('--list-models', action='store_true',
                 help='print the released models: name, architecture, scale, licence, where found')
  p.add_argument('--workdir', help='a training workdir or a directory written by enhance_jax.convert')
  p.add_argument('--weights', help='a released .pth/.safetensors/.npz file or ncnn NAME.param '
                                   '(architecture inferred)')
  p.add_argument('--arch', help='the architecture of --weights, when inference should not guess')
  p.add_argument('--checkpoint', default='best', help='best | latest | STEP (with --workdir)')
  p.add_argument('--tile', type=int, default=tiling.DEFAULT_TILE,
                 help='window side in input pixels: larger images run in windows (default '
                      f'{tiling.DEFAULT_TILE}); 0 = every image whole')
  p.add_argument('--tile-pad', type=int, default=None,
                 help="context pixels each window has beyond the part it gives (default: the "
                      "architecture's, measured with released weights)")
  p.add_argument('--batch', type=int, default=None,
                 help='windows per device call (default 1 on a CPU, 4 on a GPU)')
  p.add_argument('--outscale', type=float, default=None,
                 help="final scale (default: the model's); other values resize with Lanczos")
  p.add_argument('--scale', type=int, default=None,
                 help='the model scale to run: any of a multi-scale model\'s (MDSR: 2, 3, 4); '
                      'default its default scale')
  p.add_argument('--precision', default='fp32', choices=restoring.PRECISIONS)
  p.add_argument('--alpha', default='model', choices=('model', 'bicubic'),
                 help='enlarge an alpha channel with the model or with bicubic')
  p.add_argument('--suffix', default='', help='appended to each output name (e.g. _x4)')
  p.add_argument('--ext', default='auto', choices=('auto', 'png', 'jpg', 'tif', 'webp'),
                 help="output format; auto keeps the input's (PNG for alpha into JPEG)")
  p.add_argument('--overwrite', action='store_true', help='replace existing outputs')
  return p.parse_args(argv)


def main(argv=None):
  stops.begin()
  args = parse_args(argv)
  if args.list_models:
    print(zoo.listing())
    return 0
  if not args.inputs or not args.output:
    print('error: give images and -o OUTPUT (or --list-models).', file=sys.stderr)
    return 2
  if args.outscale is not None and not (math.isfinite(args.outscale) and args.outscale > 0):
    print(f'error: --outscale {args.outscale} must be a positive number (e.g. --outscale 2).',
          file=sys.stderr)
    return 2
  absl_logging.set_verbosity(absl_logging.ERROR)  # orbax's notes on read-only checkpoints
  try:
    failed = run(args)
  except UserError as e:
    print(f'error: {image_io.shown(e)}', file=sys.stderr)
    return 2
  except stops.Stopped as stop:
    print(stops.stop_sentence(stop, f'each output already in {args.output} is whole and the one in '
                                    'progress was not written; rerun the same command to finish'),
          file=sys.stderr, flush=True)
    return stop.exit_code
  if failed:
    print(f'{failed} file(s) skipped; see the messages above.', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  stops.finish(main())
