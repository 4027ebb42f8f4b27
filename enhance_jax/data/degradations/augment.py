"""Augmentations and crops of the HR image, numpy (grain workers) and, where they slice, jnp too:
BasicSR's flips and rot90, random/centre/mod crops, the reports' square resize, Keras' random affine.
"""

import numpy as np
import scipy.ndimage

from enhance_jax.errors import UserError
from enhance_jax.ops.resize import image_hw, resize, xp_of


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
  h, w = image_hw(img)
  top, left = (h - size) // 2, (w - size) // 2
  return img[..., top:top + size, left:left + size, :]


def square_resize(img, side: int):
  """Reports 003/004's HR preparation: the largest centred square, resized (bicubic, antialiased) to
  side x side. uint8 (0..255) or float ([0, 1]) HWC/NHWC in, float32 in [0, 1] out."""
  h, w = image_hw(img)
  xp = xp_of(img)
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
  h, w = image_hw(img)
  return img[..., :h - h % scale, :w - w % scale, :]
