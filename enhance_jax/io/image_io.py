"""User image files in and out, in every form people have them: 8/16-bit, greyscale, RGBA, palette,
EXIF-rotated, PNG/JPEG/TIFF/WebP/BMP.

`read(path)` gives a float32 HxWxC array in [0, 1] (C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA, turned
upright by its EXIF orientation) and an `ImageInfo` saying how it was stored; `write(path, array,
bits)` stores such an array as 8 or 16 bits. Pillow reads and writes 8-bit images and 16-bit grey;
it cannot hold 16-bit colour, so 16-bit colour PNGs go through OpenCV and TIFFs through tifffile.
"""

import dataclasses
import os
import pathlib
import stat
import struct

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from enhance_jax.errors import UserError

EXTENSIONS = ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.webp', '.bmp')
NO_ALPHA = ('.jpg', '.jpeg', '.bmp')  # formats that cannot store an alpha channel
EIGHT_BIT_ONLY = ('.jpg', '.jpeg', '.webp', '.bmp')


@dataclasses.dataclass(frozen=True)
class ImageInfo:
  """How a file stored its pixels: `bits` per channel (8 or 16) and an ICC profile to carry over."""
  bits: int = 8
  icc_profile: bytes | None = None


def _png_bit_depth(path) -> int:
  """The bit depth in a PNG's IHDR chunk (0 when it is not a PNG)."""
  with open(path, 'rb') as f:
    head = f.read(26)
  if head[:8] != b'\x89PNG\r\n\x1a\n' or len(head) < 26:
    return 0
  return struct.unpack('>B', head[24:25])[0]


def _read_cv2(path) -> np.ndarray:
  """A 16-bit PNG through OpenCV (unchanged depth and channels), as RGB(A) order."""
  import cv2  # pylint: disable=g-import-not-at-top
  array = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
  if array is None:
    raise OSError('OpenCV cannot decode it')
  if array.ndim == 3:
    array = array[..., [2, 1, 0, 3][:array.shape[-1]]] if array.shape[-1] >= 3 else array
  return array


def _read_tiff(path) -> np.ndarray | None:
  """A TIFF through tifffile (any depth); None when tifffile cannot read it (Pillow then tries)."""
  import tifffile  # pylint: disable=g-import-not-at-top
  try:
    array = tifffile.imread(os.fspath(path))
  except Exception:  # pylint: disable=broad-except  # compressions tifffile lacks: let Pillow try
    return None
  if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 2, 3, 4):
    array = np.moveaxis(array, 0, -1)  # planar (CHW) storage
  return array if array.ndim in (2, 3) else None


def _from_pil(im: Image.Image) -> np.ndarray:
  """Pillow image -> uint8/uint16 array, HxW or HxWxC, keeping alpha and 16-bit grey."""
  if im.mode in ('I;16', 'I;16B', 'I;16L', 'I;16N'):
    return np.asarray(im).astype(np.uint16)
  if im.mode in ('I', 'F'):
    array = np.asarray(im)
    return np.clip(array, 0, 65535).astype(np.uint16) if array.max() > 255 else np.clip(
        array, 0, 255).astype(np.uint8)
  if im.mode == 'P':
    im = im.convert('RGBA' if 'transparency' in im.info else 'RGB')
  elif im.mode in ('1', 'CMYK', 'YCbCr', 'LAB', 'HSV', 'RGBX'):
    im = im.convert('RGB' if im.mode != '1' else 'L')
  elif im.mode == 'PA':
    im = im.convert('RGBA')
  return np.asarray(im)


def _to_float(array: np.ndarray) -> tuple[np.ndarray, int]:
  """uint8/uint16 (or float) HxW[xC] -> float32 HxWxC in [0, 1] and its bit depth."""
  if array.ndim == 2:
    array = array[..., None]
  if array.dtype == np.uint16:
    return (array.astype(np.float32) / 65535.0), 16
  if array.dtype.kind == 'f':
    return np.clip(array.astype(np.float32), 0.0, 1.0), 16
  if array.dtype != np.uint8:
    array = np.clip(array, 0, 255).astype(np.uint8)
  return array.astype(np.float32) / 255.0, 8


def read(path) -> tuple[np.ndarray, ImageInfo]:
  """The image at PATH as float32 HxWxC in [0, 1] (upright) and how it was stored; UserError naming
  the file when it is not an image this can decode."""
  path = pathlib.Path(path)
  try:
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
      raise UserError(f'{shown(path)} is not a regular file (a folder, FIFO or device); give an '
                      'image file.')
    if st.st_size == 0:
      raise UserError(f'{shown(path)} is empty (0 bytes); replace it with an image file.')
    array, icc = None, None
    if path.suffix.lower() in ('.tif', '.tiff'):
      array = _read_tiff(path)
    elif _png_bit_depth(path) == 16:
      with Image.open(path):  # the header's size first: a decompression bomb is refused undecoded
        pass
      array = _read_cv2(path)
    if array is None:
      with Image.open(path) as im:
        icc = im.info.get('icc_profile')
        im = ImageOps.exif_transpose(im)  # EXIF orientation -> upright pixels
        array = _from_pil(im)
  except UserError:
    raise
  except Image.DecompressionBombError as e:
    raise UserError(f'{shown(path)} claims too many pixels to open safely ({e}); give a smaller '
                    'image.') from None
  except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error) as e:
    raise UserError(f'cannot read {shown(path)} as an image ({type(e).__name__}: '
                    f'{str(e).splitlines()[0][:100] if str(e) else "no detail"}); '
                    'replace it with a PNG, JPEG, TIFF or WebP file, or remove it.') from None
  image, bits = _to_float(array)
  if image.shape[-1] not in (1, 2, 3, 4):
    raise UserError(f'{path} has {image.shape[-1]} channels; give a grey, RGB or RGBA image.')
  return image, ImageInfo(bits, icc)


def shown(path) -> str:
  """PATH (or a message) as text any UTF-8 stream can print: bytes of a non-UTF-8 file name are
  escaped (\\udcff)."""
  text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else str(path)
  return text.encode('utf-8', 'backslashreplace').decode('utf-8')


def dimensions(path) -> tuple[int, int]:
  """(width, height) from PATH's header, no pixel decoded, so a decompression bomb is refused before
  its pixels exist; UserError when PATH is no image (or claims more pixels than Pillow ever opens)."""
  path = pathlib.Path(path)
  try:
    if path.stat().st_size == 0:
      raise UserError(f'{path.name} is empty (0 bytes); give an image file.')
    with Image.open(path) as im:
      return im.size
  except Image.DecompressionBombError as e:
    raise UserError(f'{path.name} claims too many pixels to open safely ({e}); give a smaller '
                    'image.') from None
  except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error):
    raise UserError(f'{path.name} is not an image this can read; give a PNG, JPEG, TIFF, WebP or BMP '
                    'file.') from None


def split_alpha(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
  """HxWxC -> (colour HxWx3, alpha HxWx1 or None); grey is repeated to three channels."""
  c = image.shape[-1]
  colour, alpha = (image[..., :c - 1], image[..., c - 1:]) if c in (2, 4) else (image, None)
  if colour.shape[-1] == 1:
    colour = np.repeat(colour, 3, axis=-1)
  return colour, alpha


def join_alpha(colour: np.ndarray, alpha: np.ndarray | None, grey: bool) -> np.ndarray:
  """The inverse of split_alpha: grey outputs averaged back to one channel, alpha appended."""
  if grey:
    colour = colour.mean(axis=-1, keepdims=True)
  return colour if alpha is None else np.concatenate([colour, alpha], axis=-1)


def quantise(image: np.ndarray, bits: int) -> np.ndarray:
  """float [0, 1] -> uint8 or uint16, rounded."""
  dtype = np.uint16 if bits == 16 else np.uint8
  if image.dtype == np.uint16:  # already 16-bit (enhance's output)
    return image if bits == 16 else ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
  x = np.clip(image, 0.0, 1.0)  # one float temporary, reused in place: outputs can be gigabytes
  x *= 65535.0 if bits == 16 else 255.0
  return np.round(x, out=x).astype(dtype)


def write(path, image: np.ndarray, bits: int = 8, icc_profile: bytes | None = None,
          quality: int = 95) -> None:
  """Writes float HxWxC in [0, 1] (C 1..4) to PATH in the format its extension names, 16 bits per
  channel when BITS is 16 and the format holds them (PNG, TIFF), atomically (temp file + rename)."""
  path = pathlib.Path(path)
  ext = path.suffix.lower()
  if ext not in EXTENSIONS:
    raise UserError(f'cannot write {path}: unknown image extension {ext!r}; use one of '
                    f'{", ".join(EXTENSIONS)}.')
  if ext in NO_ALPHA and image.shape[-1] in (2, 4):
    image = image[..., :-1]  # caller chose a format without alpha (enhance picks .png by default)
  bits = 8 if ext in EIGHT_BIT_ONLY else bits
  array = quantise(image, bits)
  if array.shape[-1] == 1:
    array = array[..., 0]
  tmp = path.with_name(f'.{path.name}.tmp{ext}')
  try:
    if ext in ('.tif', '.tiff'):
      import tifffile  # pylint: disable=g-import-not-at-top
      photometric = 'minisblack' if array.ndim == 2 or array.shape[-1] == 2 else 'rgb'
      extrasamples = ('unassalpha',) if array.ndim == 3 and array.shape[-1] in (2, 4) else None
      tifffile.imwrite(tmp, array, photometric=photometric, extrasamples=extrasamples,
                       compression='zlib')
    elif bits == 16 and (array.ndim == 3):
      import cv2  # pylint: disable=g-import-not-at-top
      order = [2, 1, 0, 3][:array.shape[-1]] if array.shape[-1] >= 3 else list(range(array.shape[-1]))
      if array.shape[-1] == 2:  # 16-bit grey + alpha: OpenCV has no such PNG; store as RGBA
        array = np.concatenate([np.repeat(array[..., :1], 3, -1), array[..., 1:]], -1)
        order = [2, 1, 0, 3]
      if not cv2.imwrite(os.fspath(tmp), np.ascontiguousarray(array[..., order])):
        raise OSError(f'OpenCV could not write {ext}')
    else:
      im = Image.fromarray(array)  # uint16 HxW -> I;16, uint8 HxWx{2,3,4} -> LA/RGB/RGBA
      kwargs = {'quality': quality} if ext in ('.jpg', '.jpeg', '.webp') else {}
      if icc_profile:
        kwargs['icc_profile'] = icc_profile
      im.save(tmp, format=Image.registered_extensions()[ext], **kwargs)
    os.replace(tmp, path)
  except OSError as e:
    tmp.unlink(missing_ok=True)
    raise UserError(f'cannot write {path} ({e}); check the folder exists and is writable.') from None
  finally:
    tmp.unlink(missing_ok=True)


def collect(inputs) -> list[tuple[pathlib.Path, pathlib.Path]]:
  """[(file, path relative to its input)] for INPUTS: files as given, folders searched recursively
  for image extensions; an empty folder or a missing path is a UserError."""
  found = []
  for item in inputs:
    path = pathlib.Path(item)
    if path.is_dir():
      # not only regular files: a FIFO, a dangling link or a link loop named like an image is
      # reported by `read` (and skipped) rather than silently left out
      files = sorted(p for p in path.rglob('*') if p.suffix.lower() in EXTENSIONS and not p.is_dir())
      if not files:
        raise UserError(f'{shown(path)} holds no images ({", ".join(EXTENSIONS)}); '
                        'give a folder of images or image files.')
      found += [(p, p.relative_to(path)) for p in files]
    elif path.is_file() or os.path.lexists(path):  # not a regular file: `read` says what it is
      found.append((path, pathlib.Path(path.name)))
    else:
      raise UserError(f"'{shown(path)}' does not exist; give image files or folders.")
  return found


# ---------------------------------------------------------------- uint8 RGB for datasets


def to_rgb(array):
  """uint8 HxW, HxWx1, HxWx3 or HxWx4 -> uint8 HxWx3."""
  array = np.asarray(array)
  if array.ndim == 2:
    array = array[..., None]
  if array.shape[-1] == 1:
    array = np.repeat(array, 3, axis=-1)
  return np.ascontiguousarray(array[..., :3].astype(np.uint8))


def read_image(path):
  """Decodes PATH to uint8 RGB, or raises UserError naming the file."""
  try:
    with Image.open(path) as im:
      if im.mode.startswith('I'):  # 16-bit greyscale PNG: convert('RGB') would clip it to white
        wide = np.asarray(im).astype(np.float64)
        if im.mode.startswith('I;16') or wide.max() > 255:
          wide = wide / 257.0
        return to_rgb(np.clip(np.round(wide), 0, 255))
      return to_rgb(np.asarray(im.convert('RGB')))
  except (OSError, ValueError, SyntaxError, IndexError, Image.DecompressionBombError) as e:
    raise UserError(f'cannot read image {path} ({e}); remove or replace it.') from None
