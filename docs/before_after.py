"""The README's first picture: a crop of a real photo (scikit-image's chelsea) enlarged x4 by bicubic
and by the released realesrgan-x4plus, side by side.

  python docs/before_after.py            # writes docs/before_after.png
"""

import pathlib
import sys

import numpy as np
import skimage.data
from PIL import Image
from PIL import ImageDraw

from enhance_jax.infer import restoring
from enhance_jax.infer import tiling

OUT = pathlib.Path(__file__).with_name('before_after.png')
MODEL = 'realesrgan-x4plus'


def main():
  lr = skimage.data.chelsea()[60:140, 150:250]  # the cat's eye and fur, 100 x 80
  h, w = lr.shape[:2]
  bicubic = np.asarray(Image.fromarray(lr).resize((4 * w, 4 * h), Image.Resampling.BICUBIC))
  enhancer = tiling.enhancer_for(restoring.restore(MODEL))
  model = enhancer(lr.astype(np.float32) / 255.0, dtype=np.uint8)
  gap = 8
  canvas = Image.new('RGB', (8 * w + gap, 4 * h + 24), 'white')
  canvas.paste(Image.fromarray(bicubic), (0, 24))
  canvas.paste(Image.fromarray(model), (4 * w + gap, 24))
  draw = ImageDraw.Draw(canvas)
  draw.text((4, 6), 'bicubic x4', fill='black')
  draw.text((4 * w + gap + 4, 6), f'{MODEL} (enhance_jax)', fill='black')
  canvas.save(OUT, optimize=True)
  print(f'wrote {OUT} ({OUT.stat().st_size // 1024} KB)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
