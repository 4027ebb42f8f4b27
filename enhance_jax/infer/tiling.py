"""Images of any size through a generator, in windows that give the whole-image output.

Each output pixel comes from exactly one window, in which it has at least `pad` input pixels of
context on every side, or the image's own border (where the whole-image run sees the same border);
no blending. A model's output at a pixel depends on its receptive field, which for deep nets
(RRDBNet: 23 blocks, 350 convolutions) is far wider than any tile, but its effective field decays
fast: the default pad per architecture and depth (`default_pad`, measured with the released weights
by benchmarks/tile_pad.py) keeps tiled output within a level or two of 8 bits of the whole image.
Windows are one fixed shape, so every image at least a window large runs through one compiled
program; smaller sides run whole. Images are padded to the model's input multiple first, exactly
as a whole-image run pads them, and windows start at multiples of it.
"""

import collections
import math
import threading

import jax
import jax.numpy as jnp
import numpy as np

from enhance_jax import models
from enhance_jax.errors import UserError
from enhance_jax.infer import restoring
from enhance_jax.io import image_io

MIN_SIDE = 4  # smaller images carry too little for any model (and reflect padding needs 2 pixels)
MAX_TILE = 4096  # larger windows pad every image to gigabytes; tile=0 runs an image whole instead
MAX_BATCH_PIXELS = 1 << 26  # input pixels per device call (4 windows of 4096^2)
DEFAULT_TILE = 512  # input pixels per window side: whole up to 512 x 512, one program beyond
# Context per window side, in input pixels, by architecture and depth. benchmarks/tile_pad.py measured
# the released weights on crops of skimage's photos (results/cpu-2core_tile_pad.json): the pad whose
# output stays within 2 levels of 8 bits, under 0.1 % of pixels more than 1 level off, is 80 for
# realesrgan-x4plus (23 blocks; 64 leaves 3 levels), 40-48 for the 6-block anime model and 12-16 for
# animevideov3 (16 convs); these rules add a margin. EDSR and MSRResNet follow their depth (unmeasured).
PAD_RULES = {
    'RRDBNet': lambda m: 40 + 2 * m.num_blocks,
    'SRVGGNetCompact': lambda m: 8 + m.num_convs,
    'EDSR': lambda m: 8 + 2 * m.num_blocks,
    'MSRResNet': lambda m: 8 + 2 * m.num_blocks,
    # Issue 23's architectures, unmeasured with released weights (none downloadable here): windows of
    # a window transformer see whole windows, so their context is counted in windows; tested on trained
    # small models (tests/training/test_new_bars.py). Omni-SR's grid attention and RCAN's channel
    # attention see the whole input, so no pad makes their tiles exact.
    'SwinIR': lambda m: 4 * m.window_size,
    'HAT': lambda m: 4 * m.window_size,
    'DAT': lambda m: 2 * max(m.split_size),
    'SPAN': lambda m: 32,
    'RealPLKSR': lambda m: 16 + 2 * m.n_blocks,
    'OmniSR': lambda m: 8 * m.window_size,
    'RCAN': lambda m: 8 + m.num_groups * m.num_blocks // 4,
}
FALLBACK_PAD = 32


def default_pad(model) -> int:
  """The context each window side gets for MODEL (a generator module), a multiple of 8."""
  rule = PAD_RULES.get(type(model).__name__)
  pad = rule(model) if rule else FALLBACK_PAD
  return pad + -pad % 8


def windows(length: int, tile: int, pad: int, multiple: int = 1) -> list[tuple[int, int, int]]:
  """(window start, core start, core end) along a side of LENGTH: cores partition the side, and each
  window of side TILE holds its core plus PAD pixels of context on both sides, or reaches the
  image's border (so the first and last cores may reach TILE - PAD). A side no longer than TILE is
  one window. LENGTH, TILE and PAD are multiples of MULTIPLE (the Enhancer pads and rounds them),
  and so are the starts."""
  del multiple  # every cut below is a sum of multiples
  if length <= tile:
    return [(0, 0, length)]
  first, last = tile - pad, length - tile + pad  # the first core's end, the last core's start
  core = tile - 2 * pad
  middle = max(0, math.ceil((last - first) / core))  # windows between the first and the last
  cuts = [0] + [min(first + i * core, last) for i in range(middle + 1)] + [length]
  cuts = sorted(set(cuts))
  return [(min(max(lo - pad, 0), length - tile), lo, hi) for lo, hi in zip(cuts, cuts[1:])]


def _pad_to(image: np.ndarray, h: int, w: int) -> np.ndarray:
  """IMAGE padded at the bottom/right to at least h x w by reflection (what the model sees beyond an
  edge is a mirror of the image, not a black bar)."""
  ph, pw = max(0, h - image.shape[0]), max(0, w - image.shape[1])
  if not ph and not pw:
    return image
  return np.pad(image, ((0, ph), (0, pw), (0, 0)), mode='symmetric')


def default_batch() -> int:
  """Windows per call: 1 on a CPU (one window already keeps every core busy, and a partly filled
  batch would compute padding), 4 on an accelerator (small windows alone leave it idle)."""
  return 1 if jax.default_backend() == 'cpu' else 4


class Enhancer:
  """MODEL with VARIABLES applied to images of any size, in windows of TILE (0: whole images) with
  PAD pixels of context per side (None: the architecture's `default_pad`).

  BUCKET > 0 trades exactness at the bottom/right border for fewer programs (a server seeing every
  size): a side shorter than the window is mirrored out to a multiple of BUCKET first, so only a few
  shapes compile; 0 (enhance's default) runs such sides at their own size, exactly.
  Compiled programs are kept per input shape in a bounded LRU (MAX_PROGRAMS); a shape compiles once
  even when several threads ask for it together, and running a program takes no lock, so concurrent
  requests do not serialise. `compiles` counts the programs compiled.
  """

  def __init__(self, model, variables, scale: int, *, tile: int = DEFAULT_TILE,
               pad: int | None = None, batch: int | None = None, max_programs: int = 8,
               bucket: int = 0):
    multiple = models.input_multiple(model)
    batch = default_batch() if batch is None else batch
    pad = default_pad(model) if pad is None else pad
    if tile < 0 or pad < 0 or batch < 1:
      raise UserError(f'--tile {tile}, --tile-pad {pad} and --batch {batch} must be >= 0 '
                      '(tile, pad) and >= 1 (batch).')
    if tile > MAX_TILE or batch * max(tile, 1) ** 2 > MAX_BATCH_PIXELS:
      raise UserError(f'--tile {tile} with --batch {batch} is too large: at most --tile {MAX_TILE} '
                      f'and --batch x tile^2 <= {MAX_BATCH_PIXELS}; use --tile 0 to run each image '
                      'whole.')
    if tile:
      tile = max(tile, MIN_SIDE)
      tile += -tile % multiple
      pad += -pad % multiple
      if tile - 2 * pad < multiple:
        raise UserError(f'--tile {tile} leaves no room inside --tile-pad {pad} on both sides; use '
                        f'--tile {2 * pad + max(multiple, 16)} or more (or --tile 0).')
    self.model, self.scale, self.multiple = model, int(scale), multiple
    self.tile, self.pad, self.batch, self.bucket = tile, pad, batch, bucket
    self.variables = jax.device_put(variables)
    self.max_programs = max_programs
    self._programs = collections.OrderedDict()
    self._pending = {}
    self._lock = threading.Lock()
    self.compiles = 0

  def _forward(self, variables, x):
    """The model's images of X, clipped to [0, 1] (on the device)."""
    out = models.as_outputs(self.model.apply(variables, x, train=False))['image']
    return jnp.clip(out.astype(jnp.float32), 0.0, 1.0)

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
      compiled = jax.jit(self._forward).lower(
          self.variables, jax.ShapeDtypeStruct(shape, jnp.float32)).compile()
      with self._lock:
        self._programs[shape] = compiled
        self.compiles += 1
        while len(self._programs) > self.max_programs:
          self._programs.popitem(last=False)
      return compiled
    finally:
      with self._lock:
        self._pending.pop(shape).set()

  def _padded_size(self, h: int, w: int) -> tuple[int, int]:
    """H x W rounded up to the input multiple (as a whole-image run pads it), then to the bucket's
    multiple where a side is shorter than the window."""
    m = self.multiple
    size = [h + -h % m, w + -w % m]
    if self.bucket and self.tile:
      step = math.lcm(self.bucket, m)
      size = [n if n >= self.tile else min(self.tile, n + -n % step) for n in size]
    return size[0], size[1]

  def program_shape(self, h: int, w: int) -> tuple[int, int, int, int]:
    """The input shape of the program an H x W image runs through."""
    ph, pw = self._padded_size(h, w)
    if not self.tile:
      return 1, ph, pw, 3  # a whole image is one window
    return self.batch, min(self.tile, ph), min(self.tile, pw), 3

  def __call__(self, image: np.ndarray, dtype=np.float32) -> np.ndarray:
    """HxWx3 float in [0, 1] -> (H*scale)x(W*scale)x3 in DTYPE (float32, or uint8/uint16 quantised
    window by window, which keeps a huge output's memory at its final size)."""
    image = np.asarray(image, np.float32)
    if image.ndim != 3 or image.shape[-1] != 3:
      raise ValueError(f'Enhancer takes HxWx3 images, got shape {image.shape}.')
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIDE:
      raise UserError(f'the image is {w}x{h} pixels; enhance needs at least {MIN_SIDE}x{MIN_SIDE}.')
    s = self.scale
    x = _pad_to(image, *self._padded_size(h, w))
    tile = self.tile or max(x.shape[:2])
    ys = windows(x.shape[0], tile, self.pad, self.multiple)
    xs = windows(x.shape[1], tile, self.pad, self.multiple)
    nb, wh, ww, _ = self.program_shape(h, w)
    out = np.empty((h * s, w * s, 3), dtype)
    queue = [(r, c) for r in ys for c in xs]
    run = self.program((nb, wh, ww, 3))

    def place(items, result):
      for ((ry, y0, y1), (rx, x0, x1)), window in zip(items, result):
        y1, x1 = min(y1, h), min(x1, w)  # the multiple's padding is cropped away
        if y1 > y0 and x1 > x0:
          core = window[(y0 - ry) * s:(y1 - ry) * s, (x0 - rx) * s:(x1 - rx) * s]
          out[y0 * s:y1 * s, x0 * s:x1 * s] = _convert(core, dtype)

    pending = None  # dispatch batch k+1 before reading batch k back: device and host overlap
    for i in range(0, len(queue), nb):
      items = queue[i:i + nb]
      batch = np.zeros((nb, wh, ww, 3), np.float32)
      for j, ((ry, _, _), (rx, _, _)) in enumerate(items):
        batch[j] = x[ry:ry + wh, rx:rx + ww]
      result = run(self.variables, batch)
      if pending is not None:
        place(pending[0], np.asarray(pending[1]))
      pending = (items, result)
    place(pending[0], np.asarray(pending[1]))
    return out


def _convert(image: np.ndarray, dtype) -> np.ndarray:
  """float [0, 1] -> DTYPE (uint8/uint16 rounded; float unchanged)."""
  dtype = np.dtype(dtype)
  if dtype.kind == 'f':
    return image.astype(dtype)
  return image_io.quantise(image, 16 if dtype == np.uint16 else 8)


def enhancer_for(restored: restoring.Restored, precision='fp32', **kwargs) -> Enhancer:
  """An Enhancer running RESTORED's generator at PRECISION, with its architecture's default pad."""
  return Enhancer(restoring.generator(restored, precision), restored.variables, restored.scale,
                  **kwargs)
