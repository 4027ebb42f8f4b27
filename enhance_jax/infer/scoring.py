"""No-reference scorers score, evaluate and serve share: NIMA (an image -> mean rating 1..10 and its
standard deviation, a jitted forward pass, one compiled program per input size) and NIQE (an image ->
its naturalness distance, lower is better)."""

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from enhance_jax.errors import UserError
from enhance_jax.eval import niqe
from enhance_jax.io import image_io
from enhance_jax.io import metric_weights
from enhance_jax.io import nima_restore
from enhance_jax.models import nima as nima_model


def prepare(image: np.ndarray, size: int) -> np.ndarray:
  """float HxWxC in [0, 1] -> RGB float32 [size, size, 3] (bilinear; size 0 keeps H x W)."""
  colour, _ = image_io.split_alpha(image)
  if size and colour.shape[:2] != (size, size):
    im = Image.fromarray(np.round(np.clip(colour, 0, 1) * 255).astype(np.uint8))
    colour = np.asarray(im.resize((size, size), Image.Resampling.BILINEAR), np.float32) / 255.0
  return np.asarray(colour, np.float32)


class Scorer:
  """The NIMA at PATH (a `nima` run, a converted model directory or weights; BACKBONE when a file
  does not say): image [H, W, C] in [0, 1] -> (mean, std), resized to SIZE x SIZE first (0: as is)."""

  def __init__(self, path, backbone=None, size: int = 0):
    self.model, self.variables, self.section = nima_restore.restore(path, backbone)
    self.size = size
    self._predict = jax.jit(lambda v, x: self.model.apply(v, x, train=False))

  def __call__(self, image: np.ndarray) -> tuple[float, float]:
    probs = self._predict(self.variables, jnp.asarray(prepare(image, self.size))[None])
    return float(nima_model.mean_score(probs)[0]), float(nima_model.std_score(probs)[0])


class NiqeScorer:
  """NIQE with the pristine parameters at PATH (None: found as metric_weights finds them): image [H, W,
  C] in [0, 1] -> NIQE of its RGB (grey repeated, alpha dropped), CROP_BORDER pixels off each side."""

  def __init__(self, path=None, crop_border: int = 0):
    self.params, self.crop_border = metric_weights.load_niqe_params(path), crop_border

  def __call__(self, image: np.ndarray) -> float:
    colour = prepare(image, 0)
    if colour.shape[-1] == 1:
      colour = np.repeat(colour, 3, axis=-1)
    if niqe.too_small(colour.shape, self.crop_border):
      raise UserError(f'the image is {colour.shape[1]}x{colour.shape[0]} pixels; NIQE needs two whole '
                      f'{niqe.BLOCK}x{niqe.BLOCK} blocks (e.g. {niqe.BLOCK}x{2 * niqe.BLOCK}) after a '
                      f'border of {self.crop_border}.')
    return float(niqe.niqe(colour[None], self.params, self.crop_border)[0])
