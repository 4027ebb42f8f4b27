"""What a run writes for people: metrics.jsonl, TensorBoard events (tensorboardX, no TensorFlow),
a loss-curve PNG and LR | SR | HR sample grids. Only process 0 writes."""

import json
import pathlib

import jax
import numpy as np
from PIL import Image


def to_uint8(image):
  return (np.clip(np.asarray(image, np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def nearest_up(image, size_hw):
  """Nearest-neighbour resize of a HWC array to SIZE_HW (to show LR pixels at HR size)."""
  h, w = image.shape[:2]
  rows = np.arange(size_hw[0]) * h // size_hw[0]
  cols = np.arange(size_hw[1]) * w // size_hw[1]
  return image[rows][:, cols]


def image_grid(rows, gap=4):
  """A list of rows, each a list of HWC float images of equal height, tiled with white gaps."""
  height = max(im.shape[0] for row in rows for im in row)
  width = max(sum(im.shape[1] for im in row) + gap * (len(row) - 1) for row in rows)
  canvas = np.ones((len(rows) * (height + gap) - gap, width, 3), np.float32)
  for r, row in enumerate(rows):
    x = 0
    for im in row:
      canvas[r * (height + gap):r * (height + gap) + im.shape[0], x:x + im.shape[1]] = im
      x += im.shape[1] + gap
  return canvas


def save_png(path, image):
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f'.{path.stem}.tmp.png')
  try:  # whole or absent, also when a stop lands mid-write
    Image.fromarray(to_uint8(image)).save(tmp)
    tmp.replace(path)
  finally:
    tmp.unlink(missing_ok=True)


def sample_grid(lr, sr, hr, max_images=4):
  """Rows of LR (nearest-upscaled) | SR | HR for the first MAX_IMAGES of a batch."""
  return image_grid([[nearest_up(l, h.shape[:2]), s, h]
                     for l, s, h in list(zip(lr, sr, hr))[:max_images]])


def score_scatter(pred, true, title=''):
  """An HWC float image of a scatter plot: predicted (y) against true (x) mean scores, the diagonal
  drawn, on NIMA's 1..10 scale (a rating model's validation samples)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(4, 4), dpi=80)
  ax.plot([1, 10], [1, 10], color='0.7', lw=1)
  ax.scatter(np.asarray(true), np.asarray(pred), s=12)
  ax.set(xlim=(1, 10), ylim=(1, 10), xlabel='true mean score', ylabel='predicted mean score')
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.canvas.draw()
  image = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(np.float32) / 255.0
  plt.close(fig)
  return image


class Reporter:
  """Appends scalar records to WORKDIR/metrics.jsonl and TensorBoard; draws the loss curves."""

  def __init__(self, workdir):
    self.workdir = pathlib.Path(workdir)
    self.enabled = jax.process_index() == 0
    self._tb = None
    if self.enabled:
      self.workdir.mkdir(parents=True, exist_ok=True)
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(str(self.workdir / 'tb'))

  @property
  def jsonl(self):
    return self.workdir / 'metrics.jsonl'

  def write(self, step, split, scalars, **extra):
    """One record {'step', 'split', **extra, **scalars}; scalars also go to TensorBoard as split/name."""
    if not self.enabled:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    with open(self.jsonl, 'a') as f:
      f.write(json.dumps({'step': int(step), 'split': split, **extra, **scalars}) + '\n')
    for k, v in scalars.items():
      self._tb.add_scalar(f'{split}/{k}', v, int(step))
    self._tb.flush()

  def records(self):
    if not self.jsonl.exists():
      return []
    with open(self.jsonl) as f:
      return [json.loads(line) for line in f if line.strip()]

  def plot_curves(self, keys=('g_loss', 'd_loss', 'loss_pixel', 'loss_content', 'loss_adversarial',
                              'psnr', 'ssim', 'd_real', 'd_fake', 'emd', 'lcc', 'srcc',
                              'score_mae')):
    """WORKDIR/loss_curves.png: one panel per metric, train and val series."""
    if not self.enabled:
      return
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    records = self.records()
    terms = sorted({k for r in records for k in r if k.startswith('loss_')} - set(keys))
    keys = [k for k in (*keys, *terms) if any(k in r for r in records)]
    if not keys:
      return
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
      for split in ('train', 'val'):
        pts = [(r['step'], r[key]) for r in records if r['split'] == split and key in r]
        if pts:
          ax.plot(*zip(*pts), label=split, marker='.' if split == 'val' else None)
      ax.set_title(key)
      ax.set_xlabel('step')
      ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys):]:
      ax.axis('off')
    fig.tight_layout()
    tmp = self.workdir / 'loss_curves.tmp.png'
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(self.workdir / 'loss_curves.png')

  def close(self):
    if self._tb is not None:
      self._tb.close()
