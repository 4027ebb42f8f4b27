"""Degradations and augmentations: pure functions written once for numpy (grain workers) and jnp (device).

Resizing and blurring are small [out, in] matrices applied separably along H and W, so one `tensordot`
per axis serves numpy and jax.numpy alike; boundary handling is folded into the matrices.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage

from enhance_jax.errors import UserError


def _xp(x):
  """The array namespace of `x`: jnp for jax arrays and tracers, numpy otherwise."""
  return jnp if isinstance(x, jax.Array) else np


def _cubic(x, a=-0.5):
  """Keys' cubic convolution kernel; a = -0.5 is MATLAB imresize's bicubic."""
  x = np.abs(x)
  near = ((a + 2) * x - (a + 3)) * x * x + 1
  far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
  return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _triangle(x):
  """The bilinear (tent) kernel."""
  return np.maximum(1.0 - np.abs(x), 0.0)


_KERNELS = {'bicubic': (_cubic, 4.0), 'bilinear': (_triangle, 2.0)}  # kernel, support width


def _fold_symmetric(idx, size):
  """Maps any integer index into [0, size) by mirroring with the edge repeated (MATLAB 'symmetric')."""
  idx = np.mod(idx, 2 * size)
  return np.where(idx < size, idx, 2 * size - 1 - idx)


def _to_matrix(rows, cols, weights, in_size, out_size):
  """Scatters (row, col, weight) taps into a dense [out, in] float32 read-only matrix."""
  m = np.zeros((out_size, in_size), np.float64)
  np.add.at(m, (rows, _fold_symmetric(cols, in_size)), weights)
  m = m.astype(np.float32)
  m.setflags(write=False)
  return m


def _nearest_matrix(in_size, out_size):
  """One-hot rows picking source pixel floor((i + 0.5) * in / out)."""
  src = np.minimum(np.floor((np.arange(out_size) + 0.5) * in_size / out_size), in_size - 1)
  return _to_matrix(np.arange(out_size), src.astype(np.int64), 1.0, in_size, out_size)


@functools.lru_cache(maxsize=256)
def resize_matrix(in_size: int, out_size: int, method: str = 'bicubic',
                  antialias: bool = True) -> np.ndarray:
  """The [out_size, in_size] matrix of a 1-D resize with MATLAB imresize semantics; rows sum to 1.

  Pixel centres map as x_in = (x_out + 0.5) * in / out - 0.5; on downscaling with `antialias` the kernel
  is stretched by in / out. Out-of-range taps are mirrored (symmetric padding) into the matrix.
  """
  if in_size < 1 or out_size < 1:
    raise ValueError(f'resize sizes must be positive, got {in_size} -> {out_size}.')
  if method == 'nearest':
    return _nearest_matrix(in_size, out_size)
  if method not in _KERNELS:
    raise ValueError(f"Unknown resize method {method!r}; use one of {['nearest', *_KERNELS]}.")
  kernel, support = _KERNELS[method]
  scale = out_size / in_size
  stretch = 1.0 / scale if (antialias and scale < 1) else 1.0
  centre = (np.arange(out_size) + 0.5) / scale - 0.5
  taps = int(math.ceil(support * stretch)) + 2
  cols = np.floor(centre - support * stretch / 2)[:, None].astype(np.int64) + np.arange(taps)
  weights = kernel((centre[:, None] - cols) / stretch)
  weights /= weights.sum(axis=1, keepdims=True)
  rows = np.broadcast_to(np.arange(out_size)[:, None], cols.shape)
  return _to_matrix(rows, cols, weights, in_size, out_size)


@functools.lru_cache(maxsize=256)
def gaussian_matrix(size: int, sigma: float) -> np.ndarray:
  """The [size, size] matrix of a 1-D Gaussian blur (radius ceil(3 sigma), reflect boundary)."""
  if sigma < 0:
    raise ValueError(f'Gaussian sigma must be >= 0, got {sigma}.')
  radius = int(math.ceil(3 * sigma))
  offsets = np.arange(-radius, radius + 1)
  taps = np.exp(-0.5 * (offsets / sigma) ** 2) if sigma > 0 else np.ones(1)
  taps /= taps.sum()
  rows = np.broadcast_to(np.arange(size)[:, None], (size, offsets.size))
  return _to_matrix(rows, rows + offsets, np.broadcast_to(taps, rows.shape), size, size)


def _apply_along(m, x, axis):
  """Contracts matrix `m` [out, in] with axis `axis` of `x`, keeping the axis in place."""
  xp = _xp(x)
  extra = {'precision': jax.lax.Precision.HIGHEST} if xp is jnp else {}  # no TF32/bf16 on GPU/TPU
  y = xp.tensordot(m, x, axes=([1], [axis]), **extra)
  return xp.moveaxis(y, 0, axis)


def _hw(img):
  """Height and width of an HWC or NHWC image; other ranks are a ValueError."""
  if img.ndim not in (3, 4):
    raise ValueError(f'Expected an HWC or NHWC image, got shape {img.shape}.')
  return img.shape[-3:-1]


def _separable(img, mh, mw):
  """Applies mh along H and mw along W of an HWC or NHWC image, as float32."""
  x = _xp(img).asarray(img, dtype=np.float32)
  return _apply_along(mw, _apply_along(mh, x, -3), -2)


def resize(img, out_hw, method: str = 'bicubic', antialias: bool = True):
  """Resizes an HWC or NHWC image (numpy or jax) to `out_hw`; float32, not clipped."""
  h, w = _hw(img)
  oh, ow = (int(s) for s in out_hw)
  return _separable(img, resize_matrix(h, oh, method, antialias), resize_matrix(w, ow, method, antialias))


def imresize_scale(img, scale: float, method: str = 'bicubic', antialias: bool = True):
  """Resizes by a factor to round(h * scale) x round(w * scale) (halves round up), like MATLAB imresize."""
  h, w = _hw(img)
  return resize(img, (math.floor(h * scale + 0.5), math.floor(w * scale + 0.5)), method, antialias)


def gaussian_blur(img, sigma: float):
  """Separable Gaussian blur of an HWC or NHWC image, reflect boundary, truncated at 3 sigma."""
  h, w = _hw(img)
  return _separable(img, gaussian_matrix(h, float(sigma)), gaussian_matrix(w, float(sigma)))


def _check_divisible(hr, scale):
  """Raises ValueError unless the HR height and width are multiples of `scale` (see `mod_crop`)."""
  h, w = _hw(hr)
  if h % scale or w % scale:
    raise ValueError(f'HR size {h}x{w} is not divisible by scale {scale}; mod_crop the image first.')


def bicubic_down(hr, scale: int = 4, antialias: bool = True):
  """Plain bicubic downscale by an integer `scale` (the classic SR degradation), clipped to [0, 1]."""
  _check_divisible(hr, scale)
  h, w = _hw(hr)
  lr = resize(hr, (h // scale, w // scale), 'bicubic', antialias)
  return _xp(lr).clip(lr, 0.0, 1.0)


def bicubic_down_blur(hr, scale: int = 4, blur_sigma: float = 1.5):
  """Report 004's LQ: antialiased bicubic downscale, then a Gaussian blur (sigma = PIL radius) on the LR."""
  _check_divisible(hr, scale)
  h, w = _hw(hr)
  lr = gaussian_blur(resize(hr, (h // scale, w // scale), 'bicubic', True), blur_sigma)
  return _xp(lr).clip(lr, 0.0, 1.0)


def flip_rot90(img, hflip: bool, vflip: bool, rot90: bool):
  """BasicSR's augment: optional horizontal flip, vertical flip, then H<->W transpose (HWC or NHWC view)."""
  if hflip:
    img = img[..., ::-1, :]
  if vflip:
    img = img[..., ::-1, :, :]
  if rot90:
    img = img.swapaxes(-3, -2)
  return img


def random_flip_rot90(img, rng: np.random.Generator):
  """`flip_rot90` with the three bits drawn from `rng`, each with probability 1/2."""
  hflip, vflip, rot90 = (bool(b) for b in rng.random(3) < 0.5)
  return flip_rot90(img, hflip, vflip, rot90)


def random_crop(img, size: int, rng: np.random.Generator):
  """A random size x size patch of an HWC numpy image."""
  h, w = img.shape[:2]
  if h < size or w < size:
    raise UserError(f'An image of {h}x{w} pixels is smaller than the {size}x{size} training patch; '
                    'lower data.patch_size or remove the image.')
  top = int(rng.integers(0, h - size + 1))
  left = int(rng.integers(0, w - size + 1))
  return img[top:top + size, left:left + size]


def center_crop(img, size: int):
  """The centred size x size square of an HWC or NHWC image (top-left rounding when odd)."""
  h, w = _hw(img)
  top, left = (h - size) // 2, (w - size) // 2
  return img[..., top:top + size, left:left + size, :]


def square_resize(img, side: int):
  """Reports 003/004's HR preparation: the largest centred square, resized (bicubic, antialiased) to
  side x side. uint8 (0..255) or float ([0, 1]) HWC/NHWC in, float32 in [0, 1] out."""
  h, w = _hw(img)
  xp = _xp(img)
  sq = center_crop(img, min(h, w))
  sq = xp.asarray(sq, np.float32) / (255.0 if img.dtype == np.uint8 else 1.0)
  if min(h, w) != side:
    sq = resize(sq, (side, side), 'bicubic', True)
  return xp.clip(sq, 0.0, 1.0)


def affine_matrix(h: int, w: int, theta=0.0, tx=0.0, ty=0.0, shear=0.0, zx=1.0, zy=1.0):
  """Keras' `apply_affine_transform` matrix (keras-preprocessing 1.1, the scipy version): 3x3, mapping an
  output (row, col, 1) to the input point it samples, about the image centre (size / 2 - 0.5).

  rotation(theta deg) @ shift(tx rows, ty cols) @ shear(deg: [[1, -sin], [0, cos]]) @ zoom(zx rows, zy cols).
  """
  t, s = np.deg2rad(theta), np.deg2rad(shear)
  m = (np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
       @ np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
       @ np.array([[1, -np.sin(s), 0], [0, np.cos(s), 0], [0, 0, 1]])
       @ np.diag([zx, zy, 1.0]))
  o = np.array([[1, 0, h / 2 - 0.5], [0, 1, w / 2 - 0.5], [0, 0, 1]])
  return o @ m @ np.linalg.inv(o)


def apply_affine(img, theta=0.0, tx=0.0, ty=0.0, shear=0.0, zx=1.0, zy=1.0):
  """Resamples an HWC numpy image through `affine_matrix`: bilinear (order 1), fill_mode 'nearest'
  (edge pixels repeated), per channel, like Keras. float32 out."""
  x = np.asarray(img, np.float32)
  m = affine_matrix(x.shape[0], x.shape[1], theta, tx, ty, shear, zx, zy)
  return np.stack([scipy.ndimage.affine_transform(x[..., c], m[:2, :2], m[:2, 2], order=1, mode='nearest')
                   for c in range(x.shape[-1])], axis=-1)


def random_affine(img, rng: np.random.Generator, rotation=0.0, shift=0.0, shear=0.0, zoom=0.0,
                  hflip=False):
  """Keras `ImageDataGenerator(rotation_range=rotation, width_shift_range=shift,
  height_shift_range=shift, shear_range=shear, zoom_range=zoom, horizontal_flip=hflip,
  fill_mode='nearest')` on one HWC float image, every draw from `rng`.

  As in Keras' `get_random_transform`: theta ~ U(-rotation, rotation) degrees; row and column shifts
  ~ U(-shift, shift) * H and * W; shear ~ U(-shear, shear) degrees; zx, zy independently
  ~ U(1 - zoom, 1 + zoom); then a horizontal flip with probability 1/2. A zero range draws nothing;
  all zero and no flip returns `img` itself (no resampling).
  """
  h, w = img.shape[:2]
  theta = rng.uniform(-rotation, rotation) if rotation else 0.0
  tx = rng.uniform(-shift, shift) * h if shift else 0.0
  ty = rng.uniform(-shift, shift) * w if shift else 0.0
  sh = rng.uniform(-shear, shear) if shear else 0.0
  zx, zy = rng.uniform(1 - zoom, 1 + zoom, 2) if zoom else (1.0, 1.0)
  if rotation or shift or shear or zoom:
    img = apply_affine(img, theta, tx, ty, sh, zx, zy)
  if hflip and rng.random() < 0.5:
    img = img[:, ::-1]
  return img


def mod_crop(img, scale: int):
  """Crops H and W (HWC or NHWC) down to multiples of `scale`, keeping the top-left corner."""
  h, w = _hw(img)
  return img[..., :h - h % scale, :w - w % scale, :]


# ------------------------------------------------------------------------------------------------
# Degradation ops: `op(image, rng) -> image` on one HWC float image in [0, 1], composed from a spec
# such as 'bicubic(4)|blur(1.5)' or "one_of('darken(0.3, 0.6)', 'brighten(0.3, 0.6)')". `rng` is a
# numpy Generator in grain workers and a jax key on the device (`apply_batch` vmaps an op over a
# batch with one key per image); each op is written once against both through `_split`/`_uniform`.
# A new op is one factory `(*spec args) -> op` and one line in OPS.
# ------------------------------------------------------------------------------------------------


def _split(rng, n):
  """N independent generators: jax keys split; a numpy Generator is sequential, so itself N times."""
  if isinstance(rng, np.random.Generator):
    return [rng] * n
  return list(jax.random.split(rng, n))


def _uniform(rng, shape=(), low=0.0, high=1.0):
  """float32 uniform draws in [low, high) from a numpy Generator or a jax key."""
  if isinstance(rng, np.random.Generator):
    return np.asarray(rng.uniform(low, high, shape), np.float32)
  return jax.random.uniform(rng, shape, jnp.float32, low, high)


def _check_range(name, low, high):
  if not 0 <= low <= high <= 1:
    raise UserError(f'{name}({low}, {high}): the proportion range must satisfy 0 <= low <= high <= 1.')


def _check_factor(name, factor, integer=False):
  if not (isinstance(factor, (int, float)) and factor >= 1) or (integer and factor != int(factor)):
    kind = 'an integer' if integer else 'a number'
    raise UserError(f'{name}({factor!r}): the factor must be {kind} >= 1 (e.g. {name}(4)).')


def bicubic_op(factor):
  """HR -> LR by antialiased bicubic downscaling by an integer factor (the classic SR degradation)."""
  _check_factor('bicubic', factor, integer=True)
  return lambda img, rng: bicubic_down(img, int(factor))


def bicubic_blur_op(factor, sigma=1.5):
  """Report 004's LQ: bicubic down by `factor`, then a Gaussian blur of `sigma` on the LR."""
  _check_factor('bicubic_blur', factor, integer=True)
  return lambda img, rng: bicubic_down_blur(img, int(factor), float(sigma))


def blur_op(sigma):
  """A Gaussian blur of `sigma` pixels (same size)."""
  return lambda img, rng: gaussian_blur(img, float(sigma))


def down_up_op(factor, method='bicubic'):
  """Report 000: downscale to 1/factor and back up to the original size (same size out), clipped."""
  _check_factor('down_up', factor)

  def op(img, rng):
    h, w = _hw(img)
    small = resize(img, (max(1, round(h / factor)), max(1, round(w / factor))), method, True)
    up = resize(small, (h, w), method, False)
    return _xp(up).clip(up, 0.0, 1.0)
  return op


def salt_pepper_op(low=0.3, high=0.6):
  """Report 001: a proportion p ~ U(low, high) of the pixels set to black or white (1/2 each)."""
  _check_range('salt_pepper', low, high)

  def op(img, rng):
    kp, km, kv = _split(rng, 3)
    hit = _uniform(km, img.shape[:-1]) < _uniform(kp, (), low, high)
    white = (_uniform(kv, img.shape[:-1]) < 0.5).astype(np.float32)
    return _xp(img).where(hit[..., None], white[..., None], img)
  return op


def color_noise_op(low=0.3, high=0.6):
  """Report 001: a proportion p ~ U(low, high) of the pixels replaced by a uniformly random colour."""
  _check_range('color_noise', low, high)

  def op(img, rng):
    kp, km, kc = _split(rng, 3)
    hit = _uniform(km, img.shape[:-1]) < _uniform(kp, (), low, high)
    return _xp(img).where(hit[..., None], _uniform(kc, img.shape), img)
  return op


def darken_op(low=0.3, high=0.6):
  """Report 001: every pixel lowered by a fraction p ~ U(low, high): x * (1 - p)."""
  _check_range('darken', low, high)
  return lambda img, rng: img * (1.0 - _uniform(rng, (), low, high))


def brighten_op(low=0.3, high=0.6):
  """Report 001: every pixel multiplied by 1 + p, p ~ U(low, high), clipped to [0, 1]."""
  _check_range('brighten', low, high)
  return lambda img, rng: _xp(img).clip(img * (1.0 + _uniform(rng, (), low, high)), 0.0, 1.0)


def clip_op():
  """Clips to [0, 1]."""
  return lambda img, rng: _xp(img).clip(img, 0.0, 1.0)


def identity_op():
  """The image unchanged."""
  return lambda img, rng: img


def one_of_op(*specs):
  """One of the given specs per image, uniformly (report 001 draws one noise type per image)."""
  if not specs:
    raise UserError('one_of() needs at least one spec, e.g. one_of("darken(0.3, 0.6)", "brighten").')
  ops = [parse(s) for s in specs]

  def op(img, rng):
    kc, kop = _split(rng, 2)
    u = _uniform(kc)
    if isinstance(rng, np.random.Generator):
      return ops[min(int(u * len(ops)), len(ops) - 1)](img, kop)
    index = jnp.minimum((u * len(ops)).astype(jnp.int32), len(ops) - 1)
    return jax.lax.switch(index, [lambda x, f=f: f(x, kop).astype(jnp.float32) for f in ops],
                          jnp.asarray(img, jnp.float32))
  op.branches = ops
  return op


OPS = {'bicubic': bicubic_op, 'bicubic_blur': bicubic_blur_op, 'blur': blur_op,
       'down_up': down_up_op, 'salt_pepper': salt_pepper_op, 'color_noise': color_noise_op,
       'darken': darken_op, 'brighten': brighten_op, 'clip': clip_op, 'identity': identity_op,
       'one_of': one_of_op}


def _top_level_split(spec, sep='|'):
  """Splits SPEC on SEP outside brackets and quotes."""
  parts, depth, quote, start = [], 0, None, 0
  for i, ch in enumerate(spec):
    if quote:
      quote = None if ch == quote else quote
    elif ch in '\'"':
      quote = ch
    elif ch in '([':
      depth += 1
    elif ch in ')]':
      depth -= 1
    elif ch == sep and depth == 0:
      parts.append(spec[start:i])
      start = i + 1
  return parts + [spec[start:]]


def _parse_call(text):
  """'name' or 'name(literal args, key=literal)' -> (name, args, kwargs), or UserError."""
  import ast  # pylint: disable=g-import-not-at-top
  try:
    node = ast.parse(text.strip(), mode='eval').body
    if isinstance(node, ast.Name):
      return node.id, (), {}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
      names = [k.arg for k in node.keywords]
      if None not in names and len(set(names)) == len(names):
        return (node.func.id, tuple(ast.literal_eval(a) for a in node.args),
                {k.arg: ast.literal_eval(k.value) for k in node.keywords})
  except (SyntaxError, ValueError, TypeError):
    pass
  raise UserError(f'degradation op {text.strip()!r} is not of the form name or name(args), e.g. '
                  "'bicubic(4)|blur(1.5)'.")


def parse(spec):
  """A degradation spec ('op|op(args)|...') -> one op (image, rng) -> image; '' is the identity."""
  ops = []
  for part in _top_level_split(spec or 'identity'):
    name, args, kwargs = _parse_call(part)
    if name not in OPS:
      raise UserError(f'unknown degradation op {name!r} in {spec!r}; valid: {", ".join(sorted(OPS))}.')
    try:
      ops.append(OPS[name](*args, **kwargs))
    except TypeError as e:
      raise UserError(f'degradation op {part.strip()!r}: {e}.') from None
  if len(ops) == 1:
    return ops[0]

  def composed(img, rng):
    for op, key in zip(ops, _split(rng, len(ops))):
      img = op(img, key)
    return img
  composed.parts = ops
  return composed


def apply_batch(op, images, key):
  """OP on each image of an NHWC jax batch, with its own key (inside jit: on the device)."""
  keys = jax.random.split(key, images.shape[0])
  return jax.vmap(lambda x, k: jnp.asarray(op(x, k), jnp.float32))(images, keys)


def output_hw(op, hw):
  """The (H, W) that OP makes of an H x W image (run on zeros on the host, cheap); every branch of
  a one_of must agree, else UserError (batches, and lax.switch on the device, need one size)."""
  hw = tuple(hw)
  for part in getattr(op, 'parts', (op,)):
    if hasattr(part, 'branches'):
      sizes = {output_hw(b, hw) for b in part.branches}
      if len(sizes) > 1:
        raise UserError(f'the branches of a one_of make images of different sizes '
                        f'({", ".join(f"{h}x{w}" for h, w in sorted(sizes))} from {hw[0]}x{hw[1]}); '
                        'give every branch the same resize.')
      hw = sizes.pop()
    else:
      hw = tuple(np.shape(part(np.zeros((*hw, 3), np.float32), np.random.default_rng(0)))[:2])
  return hw
