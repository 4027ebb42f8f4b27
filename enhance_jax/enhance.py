"""Enhance your own images with a trained or a released generator, tiled so that any size fits.

  python -m enhance_jax.enhance photos/ -o out/ --workdir runs/esrgan --tile 256
  python -m enhance_jax.enhance cat.png -o cat_x4.png --weights RealESRGAN_x4plus.pth
  python -m enhance_jax.enhance scan.tif -o scan_x2.png --workdir runs/esrgan --outscale 2 --precision bf16

Each image is cut into tiles of one fixed shape (edge tiles padded) that overlap by --tile-overlap
input pixels. Batches of --batch tiles run through one compiled program whatever the image size,
and the outputs are blended with feathered weights: zero over the outer 3/8 of each overlap, where a
tile lacks context, then a linear ramp across the middle quarter, so no seam shows. Rows of tiles are finished as they
complete: host float memory is one band of tiles, device memory one tile batch. Alpha is enlarged by
the model (or bicubic, --alpha), grey stays grey, 16-bit stays 16-bit, EXIF orientation is applied.
"""

import argparse
import collections
import math
import pathlib
import sys
import threading

from absl import logging as absl_logging
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from enhance_jax import image_io
from enhance_jax import inference
from enhance_jax import models
from enhance_jax.errors import UserError

MIN_SIDE = 4  # smaller images carry too little for any model (and reflect padding needs 2 pixels)
MAX_TILE = 4096  # larger tiles pad every image to gigabytes; --tile 0 runs an image whole instead
MAX_BATCH_PIXELS = 1 << 26  # input pixels per device call (4 tiles of 4096^2)


# ---------------------------------------------------------------- tiles


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
  """Start offsets of tiles of side TILE covering LENGTH with at least OVERLAP shared pixels; the
  last tile ends at LENGTH (a side shorter than a tile gets one, padded)."""
  if length <= tile:
    return [0]
  n = math.ceil((length - overlap) / (tile - overlap))
  return [min(i * (tile - overlap), length - tile) for i in range(n)]


def feather(size: int, before: int, after: int) -> np.ndarray:
  """Blend weights along one side of SIZE output pixels that shares BEFORE / AFTER pixels with its
  neighbours: 0 over the outer 3/8 of each overlap (where the tile lacks context), a linear ramp over
  the middle quarter, 1 elsewhere and along the image's own border."""
  u = np.arange(size, dtype=np.float32) + 0.5
  w = np.ones(size, np.float32)
  if before:
    w = np.minimum(w, np.clip((u - before * 3 / 8) / (before / 4), 0.0, 1.0))
  if after:
    w = np.minimum(w, np.clip((size - u - after * 3 / 8) / (after / 4), 0.0, 1.0))
  return w


def _axis_weights(starts: list[int], tile: int, scale: int) -> list[np.ndarray]:
  """Per tile along one axis, its feather weights in output pixels."""
  out = []
  for i, s in enumerate(starts):
    before = (starts[i - 1] + tile - s) * scale if i else 0
    after = (s + tile - starts[i + 1]) * scale if i + 1 < len(starts) else 0
    out.append(feather(tile * scale, before, after))
  return out


def _pad_to(image: np.ndarray, h: int, w: int) -> np.ndarray:
  """IMAGE padded at the bottom/right to at least h x w by reflection (what the model sees beyond an
  edge is a mirror of the image, not a black bar)."""
  ph, pw = max(0, h - image.shape[0]), max(0, w - image.shape[1])
  if not ph and not pw:
    return image
  return np.pad(image, ((0, ph), (0, pw), (0, 0)), mode='symmetric')


# ---------------------------------------------------------------- the engine


def default_batch() -> int:
  """Tiles per call: 1 on a CPU (one tile already keeps every core busy, and a partly filled batch
  would compute padding), 4 on an accelerator (small tiles alone leave it idle)."""
  return 1 if jax.default_backend() == 'cpu' else 4


class Enhancer:
  """MODEL with VARIABLES applied to images of any size, tiled (or whole with tile=0).

  Compiled programs are kept per input shape in a bounded LRU (MAX_PROGRAMS); a shape compiles once
  even when several threads ask for it together, and running a program takes no lock, so concurrent
  requests do not serialise. `compiles` counts the programs compiled.
  """

  def __init__(self, model, variables, scale: int, *, tile: int = 256, overlap: int = 32,
               batch: int | None = None, max_programs: int = 8):
    multiple = models.input_multiple(model)
    batch = default_batch() if batch is None else batch
    if tile < 0 or overlap < 0 or batch < 1:  # pylint: disable=chained-comparison
      raise UserError(f'--tile {tile}, --tile-overlap {overlap} and --batch {batch} must be >= 0 '
                      '(tile, overlap) and >= 1 (batch).')
    if tile > MAX_TILE or batch * max(tile, 1) ** 2 > MAX_BATCH_PIXELS:
      raise UserError(f'--tile {tile} with --batch {batch} is too large: at most --tile {MAX_TILE} '
                      f'and --batch x tile^2 <= {MAX_BATCH_PIXELS}; use --tile 0 to run each image '
                      'whole.')
    if tile:
      tile = max(tile, MIN_SIDE)
      tile += -tile % multiple
      if overlap * 2 >= tile:
        raise UserError(f'--tile-overlap {overlap} must be under half the tile ({tile}); '
                        f'use at most {max(0, (tile - 1) // 2)}.')
    self.model, self.scale, self.multiple = model, int(scale), multiple
    self.tile, self.overlap, self.batch = tile, overlap, batch
    self.variables = jax.device_put(variables)
    self.max_programs = max_programs
    self._programs = collections.OrderedDict()
    self._pending = {}
    self._lock = threading.Lock()
    self.compiles = 0

  def _forward(self, variables, x, wy, wx):
    """The model's images of X, clipped and multiplied by the blend weights outer(wy, wx) per image
    (on the device, fused: the host only adds the tiles up)."""
    out = models.as_outputs(self.model.apply(variables, x, train=False))['image']
    out = jnp.clip(out.astype(jnp.float32), 0.0, 1.0)
    return out * wy[:, :, None, None] * wx[:, None, :, None]

  def program(self, shape):
    """The compiled forward pass for float32 inputs of SHAPE (N, H, W, 3)."""
    shape = tuple(shape)
    while True:
      with self._lock:
        if shape in self._programs:
          self._programs.move_to_end(shape)
          return self._programs[shape]
        waiting = self._pending.get(shape)
        if waiting is None:
          self._pending[shape] = threading.Event()
          break
      waiting.wait()  # another thread compiles this shape; then take it from the cache
    try:
      n, h, w, _ = shape
      spec = lambda *dims: jax.ShapeDtypeStruct(dims, jnp.float32)
      compiled = jax.jit(self._forward).lower(self.variables, spec(*shape), spec(n, h * self.scale),
                                              spec(n, w * self.scale)).compile()
      with self._lock:
        self._programs[shape] = compiled
        self.compiles += 1
        while len(self._programs) > self.max_programs:
          self._programs.popitem(last=False)
      return compiled
    finally:
      with self._lock:
        self._pending.pop(shape).set()

  def __call__(self, image: np.ndarray, dtype=np.float32) -> np.ndarray:
    """HxWx3 float in [0, 1] -> (H*scale)x(W*scale)x3 in DTYPE (float32, or uint8/uint16 quantised
    row band by row band, which keeps a huge output's memory at its final size)."""
    image = np.asarray(image, np.float32)
    if image.ndim != 3 or image.shape[-1] != 3:
      raise ValueError(f'Enhancer takes HxWx3 images, got shape {image.shape}.')
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIDE:
      raise UserError(f'the image is {w}x{h} pixels; enhance needs at least {MIN_SIDE}x{MIN_SIDE}.')
    if not self.tile:
      return self._whole(image, dtype)
    return self._tiled(image, dtype)

  def _whole(self, image, dtype):
    h, w = image.shape[:2]
    m = self.multiple
    x = _pad_to(image, h + -h % m, w + -w % m)
    ones = lambda n: np.ones((1, n * self.scale), np.float32)
    out = np.asarray(self.program((1, *x.shape))(self.variables, x[None], ones(x.shape[0]),
                                                 ones(x.shape[1])))[0]
    return _convert(out[:h * self.scale, :w * self.scale], dtype)

  def _tiled(self, image, dtype):
    t, s, b = self.tile, self.scale, self.batch
    h, w = image.shape[:2]
    image = _pad_to(image, max(h, t), max(w, t))
    ys, xs = tile_starts(image.shape[0], t, self.overlap), tile_starts(image.shape[1], t, self.overlap)
    wy, wx = _axis_weights(ys, t, s), _axis_weights(xs, t, s)
    norm_y, norm_x = _weight_sums(ys, wy, s), _weight_sums(xs, wx, s)
    out = np.empty((h * s, w * s, 3), dtype)
    band = np.zeros((t * s, image.shape[1] * s, 3), np.float32)  # output rows of the current tile row
    run = self.program((b, t, t, 3))
    queue = [(r, c) for r in range(len(ys)) for c in range(len(xs))]

    def finish_row(r):
      """Writes the rows no later tile touches, then moves the band down to the next tile row."""
      top = ys[r] * s
      done = (ys[r + 1] - ys[r]) * s if r + 1 < len(ys) else t * s
      n = min(top + done, h * s) - top
      if n > 0:
        block = band[:n, :w * s]
        block /= np.maximum(norm_y[top:top + n, None, None] * norm_x[None, :w * s, None], 1e-8)
        out[top:top + n] = _convert(block, dtype)
      band[:t * s - done] = band[done:]
      band[t * s - done:] = 0.0

    def place(items, tiles_out):
      for (r, c), tile_out in zip(items, tiles_out):
        band[:, xs[c] * s:(xs[c] + t) * s] += tile_out
        if c == len(xs) - 1:
          finish_row(r)

    pending = None  # dispatch batch k+1 before reading batch k back: device and host overlap
    for i in range(0, len(queue), b):
      items = queue[i:i + b]
      x = np.zeros((b, t, t, 3), np.float32)
      bwy, bwx = np.zeros((b, t * s), np.float32), np.zeros((b, t * s), np.float32)
      for j, (r, c) in enumerate(items):
        x[j] = image[ys[r]:ys[r] + t, xs[c]:xs[c] + t]
        bwy[j], bwx[j] = wy[r], wx[c]
      result = run(self.variables, x, bwy, bwx)
      if pending is not None:
        place(pending[0], np.asarray(pending[1]))
      pending = (items, result)
    place(pending[0], np.asarray(pending[1]))
    return out


def _weight_sums(starts, weights, scale) -> np.ndarray:
  """The sum of the tiles' feather weights along one axis, per output pixel: the tiles form a grid,
  so the blend's divisor at (y, x) is sum_y[y] * sum_x[x] (1 up to rounding: neighbours' ramps are
  complementary)."""
  size = weights[0].shape[0]
  total = np.zeros(starts[-1] * scale + size, np.float32)
  for start, w in zip(starts, weights):
    total[start * scale:start * scale + size] += w
  return total


def _convert(image: np.ndarray, dtype) -> np.ndarray:
  """float [0, 1] -> DTYPE (uint8/uint16 rounded; float unchanged)."""
  dtype = np.dtype(dtype)
  if dtype.kind == 'f':
    return image.astype(dtype)
  return image_io.quantise(image, 16 if dtype == np.uint16 else 8)


def enhancer_for(restored: inference.Restored, precision='fp32', **kwargs) -> Enhancer:
  """An Enhancer running RESTORED's generator at PRECISION."""
  return Enhancer(inference.generator(restored, precision), restored.variables, restored.scale,
                  **kwargs)


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


def enhance_image(enhancer: Enhancer, image: np.ndarray, outscale: float | None = None,
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


def _restore(args) -> inference.Restored:
  if bool(args.workdir) == bool(args.weights):
    raise UserError('give exactly one of --workdir (a training run or a converted model) and '
                    '--weights (a .pth/.safetensors file).')
  restored = inference.restore(args.workdir or args.weights, args.arch, args.checkpoint)
  return inference.at_scale(restored, args.scale)


def run(args) -> int:
  """Enhances every input; returns the number of files that failed (each reported, others written)."""
  files = image_io.collect(args.inputs)
  plan = plan_outputs(files, args.output, args.suffix)
  restored = _restore(args)
  enhancer = enhancer_for(restored, args.precision, tile=args.tile, overlap=args.tile_overlap,
                          batch=args.batch)
  print(f'{restored.name} x{restored.scale} from {restored.source} ({args.precision}, '
        f'tile {enhancer.tile or "off"}); {len(plan)} image(s)', flush=True)
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
  p.add_argument('inputs', nargs='+', help='image files and/or folders (searched recursively)')
  p.add_argument('-o', '--output', required=True, help='output file (one input) or folder')
  p.add_argument('--workdir', help='a training workdir or a directory written by enhance_jax.convert')
  p.add_argument('--weights', help='a released .pth/.safetensors/.npz file (architecture inferred)')
  p.add_argument('--arch', help='the architecture of --weights, when inference should not guess')
  p.add_argument('--checkpoint', default='best', help='best | latest | STEP (with --workdir)')
  p.add_argument('--tile', type=int, default=256, help='tile side in input pixels; 0 = whole image')
  p.add_argument('--tile-overlap', type=int, default=32, help='pixels neighbouring tiles share')
  p.add_argument('--batch', type=int, default=None,
                 help='tiles per device call (default 1 on a CPU, 4 on a GPU)')
  p.add_argument('--outscale', type=float, default=None,
                 help="final scale (default: the model's); other values resize with Lanczos")
  p.add_argument('--scale', type=int, default=None,
                 help='the model scale to run: any of a multi-scale model\'s (MDSR: 2, 3, 4); '
                      'default its default scale')
  p.add_argument('--precision', default='fp32', choices=inference.PRECISIONS)
  p.add_argument('--alpha', default='model', choices=('model', 'bicubic'),
                 help='enlarge an alpha channel with the model or with bicubic')
  p.add_argument('--suffix', default='', help='appended to each output name (e.g. _x4)')
  p.add_argument('--ext', default='auto', choices=('auto', 'png', 'jpg', 'tif', 'webp'),
                 help="output format; auto keeps the input's (PNG for alpha into JPEG)")
  p.add_argument('--overwrite', action='store_true', help='replace existing outputs')
  return p.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
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
  if failed:
    print(f'{failed} file(s) skipped; see the messages above.', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
