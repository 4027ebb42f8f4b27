"""Baseline JPEG compression in jnp: encode and decode one image inside a traced function.

Real-ESRGAN's degradation chain JPEG-compresses every training image twice with a random quality. It runs
per image inside the jitted train step (data.degrade_on_device), so the codec is written here in jnp
rather than called on the host: PIL or cv2 there would need a device -> host -> device round trip of the
batch at every step (a host callback that stalls the step and does not shard over a multi-host mesh),
while these are a few matmuls per 8x8 block that XLA fuses with the rest of the chain.

Like BasicSR's DiffJPEG (JFIF YCbCr, 4:2:0 chroma, 8x8 DCT, the IJG tables scaled by quality), but
following libjpeg, which PIL and cv2 use, wherever that is cheap: libjpeg's integer quality scaling of the
tables, edge replication (not zeros) out to whole 16x16 MCUs, its 2x2 chroma averaging and 'fancy'
(triangle) chroma upsampling with their integer rounding, rounding half away from zero in quantisation,
and 8-bit samples after colour conversion and after the inverse DCT. What is left is libjpeg's fixed-point
('islow') DCT against the float DCT here: off by one level at a few pixels.
"""

import jax
import jax.numpy as jnp
import numpy as np

# ITU-T T.81 Annex K.1 (libjpeg's std_luminance_quant_tbl / std_chrominance_quant_tbl), natural order:
# row = vertical frequency, column = horizontal frequency.
LUMA_TABLE = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], np.float32)
CHROMA_TABLE = np.full((8, 8), 99, np.float32)
CHROMA_TABLE[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]

_HIGHEST = jax.lax.Precision.HIGHEST  # no TF32/bf16 matmuls on GPU/TPU: the rounding steps need fp32


def _dct_matrix():
  """The orthonormal 8-point DCT-II [frequency, sample]; 2-D it is JPEG's FDCT exactly."""
  k = np.arange(8)
  c = np.sqrt(2 / 8) * np.cos((2 * k[None, :] + 1) * k[:, None] * np.pi / 16)
  c[0] /= np.sqrt(2)
  return c.astype(np.float32)


_DCT = _dct_matrix()


def _round(x):
  """Rounds halves up, as libjpeg's fixed-point descaling (add one half, shift) does."""
  return jnp.floor(x + 0.5)


def quant_table(base, quality):
  """libjpeg's jpeg_set_quality: quality 1..100 (rounded: encoders take an integer) scales BASE by
  5000 / q below 50 and 200 - 2 q above, (t * scale + 50) // 100, clipped to baseline's 1..255."""
  q = jnp.clip(jnp.round(jnp.asarray(quality, jnp.float32)), 1.0, 100.0)
  scale = jnp.where(q < 50, jnp.floor(5000.0 / q), 200.0 - 2.0 * q)
  return jnp.clip(jnp.floor((jnp.asarray(base) * scale + 50.0) / 100.0), 1.0, 255.0)


def _code_plane(plane, table):
  """One plane of 8-bit samples (sides multiples of 8) through level shift, 8x8 DCT, quantisation
  (halves away from zero), dequantisation and inverse DCT: the decoded 8-bit plane."""
  h, w = plane.shape
  blocks = plane.reshape(h // 8, 8, w // 8, 8) - 128.0
  coef = jnp.einsum('ux,ixjy,vy->iujv', _DCT, blocks, _DCT, precision=_HIGHEST)
  t = table[None, :, None, :]
  levels = coef / t
  coef = jnp.sign(levels) * jnp.floor(jnp.abs(levels) + 0.5) * t
  pixels = jnp.einsum('ux,iujv,vy->ixjy', _DCT, coef, _DCT, precision=_HIGHEST)
  return jnp.clip(_round(pixels) + 128.0, 0.0, 255.0).reshape(h, w)


def _rgb_to_ycbcr(rgb):
  """JFIF RGB -> YCbCr of 0..255 samples, rounded to integers (libjpeg's rgb_ycc_convert)."""
  m = np.array([[0.29900, 0.58700, 0.11400], [-0.16874, -0.33126, 0.5], [0.5, -0.41869, -0.08131]],
               np.float32)
  ycc = jnp.einsum('hwc,kc->hwk', rgb, m, precision=_HIGHEST)
  return _round(ycc + np.array([0.0, 128.0, 128.0], np.float32))


def _ycbcr_to_rgb(y, cb, cr):
  """JFIF YCbCr -> RGB with libjpeg's per-term rounding (ycc_rgb_convert), clipped to 0..255."""
  cb, cr = cb - 128.0, cr - 128.0
  rgb = jnp.stack([y + _round(1.40200 * cr), y + _round(-0.34414 * cb - 0.71414 * cr),
                   y + _round(1.77200 * cb)], axis=-1)
  return jnp.clip(rgb, 0.0, 255.0)


def _downsample(c):
  """libjpeg's h2v2 downsampling: each 2x2 block averaged with its alternating 1, 2 rounding bias."""
  h, w = c.shape
  total = c.reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3))
  bias = 1.0 + (jnp.arange(w // 2) % 2)
  return jnp.floor((total + bias) / 4.0)


def _neighbours(c, n, axis):
  """C shifted by one sample back and forward along AXIS, the edge sample repeated at index n - 1
  (libjpeg replicates the last real chroma row/column, not the block padding)."""
  i = jnp.arange(c.shape[axis])
  return (jnp.take(c, jnp.clip(i - 1, 0, n - 1), axis=axis),
          jnp.take(c, jnp.clip(i + 1, 0, n - 1), axis=axis))


def _upsample(c, hw):
  """libjpeg's 'fancy' h2v2 upsampling of a chroma plane with HW real samples: a triangle filter
  (3/4 the nearer, 1/4 the farther sample on each axis) with its biases 8 and 7 before the shift."""
  h, w = c.shape
  above, below = _neighbours(c, hw[0], 0)
  rows = jnp.stack([3 * c + above, 3 * c + below], axis=1).reshape(2 * h, w)
  left, right = _neighbours(rows, hw[1], 1)
  cols = jnp.stack([jnp.floor((3 * rows + left + 8) / 16), jnp.floor((3 * rows + right + 7) / 16)], axis=2)
  return cols.reshape(2 * h, 2 * w)


def _extend(img, hw, shape):
  """IMG's top-left HW content padded by edge replication to SHAPE (libjpeg pads to whole MCUs so)."""
  rows = jnp.minimum(jnp.arange(shape[0]), hw[0] - 1)
  cols = jnp.minimum(jnp.arange(shape[1]), hw[1] - 1)
  return img[rows][:, cols]


def jpeg(img, quality, hw=None):
  """One HWC RGB image in [0, 1] JPEG-encoded at QUALITY (1..100, may be traced) and decoded: 4:2:0
  chroma, IJG tables; 8-bit levels / 255 out, same shape. HW (traced ok): the size of the content in
  the top-left corner of IMG, compressed as an image of that size (the rest of IMG is ignored and
  comes back unspecified); None: all of IMG."""
  shape = img.shape[:2]
  hw = shape if hw is None else hw
  padded = (-(-shape[0] // 16) * 16, -(-shape[1] // 16) * 16)  # whole 16x16 MCUs
  x = _extend(jnp.asarray(img, jnp.float32), hw, padded)
  ycc = _rgb_to_ycbcr(_round(jnp.clip(x, 0.0, 1.0) * 255.0))
  y = _code_plane(ycc[..., 0], quant_table(LUMA_TABLE, quality))
  chroma_hw = ((hw[0] + 1) // 2, (hw[1] + 1) // 2)
  chroma_table = quant_table(CHROMA_TABLE, quality)
  cb, cr = (_upsample(_code_plane(_downsample(ycc[..., k]), chroma_table), chroma_hw) for k in (1, 2))
  return _ycbcr_to_rgb(y, cb, cr)[:shape[0], :shape[1]] / 255.0
