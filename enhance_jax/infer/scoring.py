"""NIMA scoring, the one scorer score, evaluate and serve share: an image -> (mean rating 1..10, its
standard deviation), with a jitted forward pass (one compiled program per input size)."""

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from enhance_jax.io import image_io
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
