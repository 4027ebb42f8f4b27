"""grain pipeline: source -> decode -> [square resize] -> random HR crop -> [Keras-style affine]
-> flips/rot90 -> degrade -> batch -> device.

Per-record randomness comes from grain's `random_map` seeds, so a batch depends only on (seed, step):
the iterator state is one index, checkpointed with the model, and resuming replays nothing.
"""

import functools
import queue
import threading
import time

import grain
import jax
import numpy as np

from enhance_jax import models
from enhance_jax.data import ava
from enhance_jax.data import degradations
from enhance_jax.errors import UserError
from enhance_jax.ops import resize

AFFINE_FIELDS = ('rotation', 'shift', 'shear', 'zoom', 'hflip')


def degradation_spec(config, scale=None):
  """data.degradation; for SCALE of a multi-scale model (MDSR), data.scale_degradations['x{SCALE}']
  when the config has that section (each scale its own degradation, e.g. bicubic(3) at x3)."""
  per_scale = config.data.scale_degradations
  if scale is None or not per_scale:
    return config.data.degradation
  if f'x{scale}' not in per_scale:
    raise UserError(f'data.scale_degradations has no x{scale} entry (it needs one per model.scales: '
                    f'e.g. x{scale}=\'bicubic({scale})\').')
  return per_scale[f'x{scale}']


def degrade_fn(config, scale=None):
  """The config's degradation spec (data.degradation, or SCALE's: `degradation_spec`) as one op
  (image, rng) -> image, its ops' options taken from the data config's sections (data.realesrgan)."""
  return degradations.parse(degradation_spec(config, scale), degradations.config_options(config.data))


def patch_hw(config):
  """data.patch_size as (height, width): an int, or a (h, w) pair (report 000's 218x178)."""
  p = config.data.patch_size
  p = tuple(p) if isinstance(p, (tuple, list)) else (p,)
  return (int(p[0]), int(p[-1]))


def val_hw(config):
  """The validation crop (h, w): data.val_patch_size square, or the training patch when it is 0."""
  side = config.data.val_patch_size
  return (side, side) if side else patch_hw(config)


def affine_kwargs(config):
  """data.affine as `degradations.random_affine` keywords, or None when it is all off."""
  affine = config.data.affine
  kwargs = {k: (bool(affine[k]) if k == 'hflip' else float(affine[k])) for k in AFFINE_FIELDS}
  return kwargs if any(kwargs.values()) else None


def check_config(config):
  """UserError for data settings that cannot work together, checked before anything runs: the
  degradation spec and the model's scale, patch sides and the model's size multiple, hr_resize,
  affine ranges, fraction."""
  data, scale = config.data, config.model.scale
  step = models.hr_multiple(config)
  ph, pw = patch_hw(config)
  multi = models.train_scales(models.build_generator(config))
  if min(ph, pw) < 8 or ph % step or pw % step:
    fit = lambda side: max(-(-8 // step) * step, round(side / step) * step)
    at = ', '.join(f'x{s}' for s in multi) if multi else f'x{scale}'
    raise UserError(f'data.patch_size={data.patch_size} must be at least 8 and a multiple of {step} '
                    f'(model {config.model.name} at {at}) on each side; set it to '
                    f'{fit(ph) if ph == pw else (fit(ph), fit(pw))}.')
  if multi and not data.degrade_on_device:
    raise UserError(f'model {config.model.name} trains scales {multi}, each batch one scale degraded on '
                    'the device: set data.degrade_on_device=True (the pipeline makes HR patches only).')
  for s in ((None,) + multi if multi else (None,)):
    scale = config.model.scale if s is None else s
    spec = degradation_spec(config, s)
    name = ('data.degradation' if s is None or not data.scale_degradations
            else f'data.scale_degradations.x{s}')
    op = degrade_fn(config, s)
    try:
      lr_hw = degradations.output_hw(op, (ph, pw))
    except (ValueError, TypeError) as e:
      raise UserError(f'{name}={spec!r} fails on a {ph}x{pw} patch ({e}).') from None
    if data.train_on != 'clean' and (lr_hw[0] * scale, lr_hw[1] * scale) != (ph, pw):
      raise UserError(f'{name}={spec!r} turns a {ph}x{pw} patch into '
                      f'{lr_hw[0]}x{lr_hw[1]}, but {"model.scale=" if s is None else "x"}{scale} needs '
                      f'{ph // scale}x{pw // scale}; '
                      'make the degradation factor equal the model scale.')
  scale = config.model.scale
  side = data.hr_resize
  if side < 0:
    raise UserError(f'data.hr_resize={side} is negative; set it to 0 (off) or the HR side to resize to.')
  if side and max(ph, pw) > side:
    raise UserError(f'data.patch_size={data.patch_size} is larger than data.hr_resize={side}; lower '
                    f'data.patch_size to at most {side} or raise data.hr_resize.')
  if side % step:
    raise UserError(f'data.hr_resize={side} is not a multiple of {step} (model.scale={scale}); set it '
                    f'to {max(1, round(side / step)) * step}.')
  if data.hr_resize_mode not in HR_RESIZE_MODES:
    raise UserError(f'data.hr_resize_mode={data.hr_resize_mode!r}; valid: {", ".join(HR_RESIZE_MODES)}.')
  if data.normalize not in NORMALIZE:
    raise UserError(f'data.normalize={data.normalize!r}; valid: {", ".join(NORMALIZE)}.')
  if not 0 < data.fraction <= 1:
    raise UserError(f'data.fraction={data.fraction} must be in (0, 1]: the share of the dataset used.')
  if not 0 <= data.val_fraction < 1:
    raise UserError(f'data.val_fraction={data.val_fraction} must be in [0, 1): it is the share '
                    'of a folder held out for validation.')
  kwargs = affine_kwargs(config) or {}
  for key, top in (('rotation', None), ('shear', None), ('shift', 1.0), ('zoom', 1.0)):
    value = kwargs.get(key, 0.0)
    if value < 0 or (top is not None and value >= top):
      bounds = f'in [0, {top})' if top else '>= 0'
      raise UserError(f'data.affine.{key}={value} must be {bounds}; it is the half-width of a '
                      'uniform range.')


HR_RESIZE_MODES = ('resize', 'crop_or_resize', 'stretch')
NORMALIZE = ('none', 'minmax')


def prepare_hr(image, hr_resize=0, mode='resize'):
  """uint8 HWC -> float32 HR in [0, 1]: as is, or fitted to hr_resize x hr_resize: 'resize' = centre
  square resized (reports 003/004); 'crop_or_resize' = centre crop when both sides are at least
  hr_resize, else the square resized (report 001's Cats&Dogs 360); 'stretch' = the whole image
  resized, aspect not kept (NIMA's and report 002's 256 x 256)."""
  if not hr_resize:
    return image.astype(np.float32) / 255.0
  if mode == 'stretch':
    return np.clip(resize.resize(image.astype(np.float32) / 255.0, (hr_resize, hr_resize)),
                   0.0, 1.0).astype(np.float32)
  if mode == 'crop_or_resize' and min(image.shape[:2]) >= hr_resize:
    return degradations.center_crop(image, hr_resize).astype(np.float32) / 255.0
  return degradations.square_resize(image, hr_resize)


def normalize(hr, mode):
  """Report 000's min-max normalisation: each image stretched to span [0, 1]."""
  if mode != 'minmax':
    return hr
  lo, hi = hr.min(), hr.max()
  return (hr - lo) / (hi - lo) if hi > lo else np.zeros_like(hr)


def random_crop_hw(img, hw, rng):
  """A random h x w patch of an HWC numpy image (UserError when it is smaller)."""
  h, w = img.shape[:2]
  if h < hw[0] or w < hw[1]:
    raise UserError(f'An image of {h}x{w} pixels is smaller than the {hw[0]}x{hw[1]} training patch; '
                    'lower data.patch_size or remove the image.')
  top, left = int(rng.integers(0, h - hw[0] + 1)), int(rng.integers(0, w - hw[1] + 1))
  return img[top:top + hw[0], left:left + hw[1]]


def make_pair(image, rng, *, patch_size, augment, degrade, hr_resize=0, affine=None,
              hr_resize_mode='resize', norm='none'):
  """uint8 image -> {'lr', 'hr'} float32 patches: [fit to hr_resize], crop, [random affine (keywords
  of degradations.random_affine)], flips/rot90, [min-max], then DEGRADE(hr, rng) the augmented HR.
  Without DEGRADE, {'hr'} alone: the train step degrades on the device (data.degrade_on_device)."""
  hw = patch_size if isinstance(patch_size, tuple) else (patch_size, patch_size)
  if hr_resize:
    hr = random_crop_hw(prepare_hr(image, hr_resize, hr_resize_mode), hw, rng)
  else:
    hr = random_crop_hw(image, hw, rng).astype(np.float32) / 255.0
  if affine:
    hr = degradations.random_affine(hr, rng, **affine)
  if augment:
    hr = degradations.random_flip_rot90(hr, rng) if hw[0] == hw[1] else _random_flips(hr, rng)
  hr = np.ascontiguousarray(normalize(hr, norm), np.float32)
  return {'lr': np.asarray(degrade(hr, rng), np.float32), 'hr': hr} if degrade else {'hr': hr}


def _random_flips(img, rng):
  """Flips only (no rot90, which would swap the sides of a non-square patch)."""
  hflip, vflip = (bool(b) for b in rng.random(2) < 0.5)
  return degradations.flip_rot90(img, hflip, vflip, False)


def rates(config):
  """Whether config.model is a rating model (NIMA): batches {'image', 'histogram'}, not {'lr', 'hr'}."""
  return models.output_key(models.build_generator(config)) != 'image'


def split_rating(item):
  """(uint8 image, histogram or None) of a source item: AVA's are (image, histogram) pairs, a photo
  without ratings (embedded, folder:) is an image alone."""
  if isinstance(item, tuple):
    return item[0], np.asarray(item[1], np.float32)
  return item, None


def make_rated(item, rng, *, patch_size, resize, resize_mode, augment):
  """A source item -> {'image': random PATCH of the image fitted to RESIZE (NIMA: 256 x 256, then
  192 x 192 crops), [h-flipped], 'histogram': its ratings, or `ava.synthetic_histogram` of the crop
  for an unrated photo (the offline stand-in: a fixed function of the pixels)."""
  image, hist = split_rating(item)
  crop = random_crop_hw(prepare_hr(image, resize, resize_mode), patch_size, rng)
  if augment and rng.random() < 0.5:
    crop = crop[:, ::-1]
  crop = np.ascontiguousarray(crop, np.float32)
  return {'image': crop, 'histogram': ava.synthetic_histogram(crop) if hist is None else hist}


def train_dataset(source, config, *, process_index=0, process_count=1):
  """Infinite, shuffled-per-epoch MapDataset of this process's share of the global batches."""
  batch = config.train.batch_size
  if batch % process_count:
    raise ValueError(f'train.batch_size={batch} is not divisible by {process_count} processes.')
  ds = grain.MapDataset.source(source)
  if rates(config):
    pair = functools.partial(make_rated, patch_size=patch_hw(config), resize=config.data.hr_resize,
                             resize_mode=config.data.hr_resize_mode,
                             augment=config.data.augment)
  else:
    pair = functools.partial(make_pair, patch_size=patch_hw(config), augment=config.data.augment,
                             degrade=None if config.data.degrade_on_device else degrade_fn(config),
                             hr_resize=config.data.hr_resize, affine=affine_kwargs(config),
                             hr_resize_mode=config.data.hr_resize_mode,
                             norm=config.data.normalize)
  ds = ds.shuffle(seed=config.seed).repeat(None).random_map(pair, seed=config.seed)
  if process_count > 1:  # this process's rows of each global batch, as one process makes them
    rows = _ProcessRows(ds, batch, process_index, process_count)
    ds = grain.MapDataset.range(len(ds) // process_count).map(rows)
  return ds.batch(batch // process_count, drop_remainder=True)


class _ProcessRows:
  """Element j of process P's stream: row j % b of its block of global batch j // b (b = the batch
  per process), so the processes' batches, stacked in process order, are the one-process batch and
  each process reads and augments only its own images (with the same seeds)."""

  def __init__(self, ds, batch, process_index, process_count):
    self.ds, self.batch = ds, batch
    self.local, self.index = batch // process_count, process_index

  def __call__(self, j):
    return self.ds[(j // self.local) * self.batch + self.index * self.local + j % self.local]


# Threads that build batches in each process, and the batches they may stock ahead: grain's default
# buffer (500) would hold gigabytes of image batches per process for no gain in throughput.
READ_OPTIONS = grain.ReadOptions(num_threads=8, prefetch_buffer_size=16)


def train_iterator(ds, num_workers=0):
  """A checkpointable iterator over DS (multiprocess prefetch when NUM_WORKERS > 0)."""
  it = ds.to_iter_dataset(READ_OPTIONS)
  if num_workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(it)


def degrade_fixed(hr_images, config, seed_offset=0, scale=None):
  """LR of each HR image (list or batch) by the config's degradation (SCALE's for a multi-scale
  model), with a fixed per-image seed, so random noise is the same at every validation and in every
  evaluation."""
  op = degrade_fn(config, scale)
  return [np.asarray(op(hr, np.random.default_rng([config.seed, seed_offset + i])), np.float32)
          for i, hr in enumerate(hr_images)]


def rated_batch(items, config):
  """Held-out rated images as one batch {'image', 'histogram'}: each fitted to data.hr_resize, its
  centre crop of the training patch (data.val_patch_size when set); unrated ones get
  `ava.synthetic_histogram` of that crop."""
  images, hists = [], []
  for item in items:
    image, hist = split_rating(item)
    fitted = prepare_hr(image, config.data.hr_resize, config.data.hr_resize_mode)
    crop = _center_crop_hw(fitted, val_hw(config) if config.data.val_patch_size else patch_hw(config))
    images.append(np.ascontiguousarray(crop, np.float32))
    hists.append(ava.synthetic_histogram(crop) if hist is None else hist)
  return {'image': np.stack(images), 'histogram': np.stack(hists).astype(np.float32)}


def validation_batch(source, config):
  """All validation images as one batch: centre crops of one common size (data.val_patch_size, or
  the training patch when 0), or, with data.hr_resize, each image fitted to hr_resize whole.
  A rating model's: `rated_batch`."""
  n = min(len(source), config.data.val_max_images or len(source))
  images = [source[int(i)] for i in np.linspace(0, len(source) - 1, n).round()] if n else []
  if rates(config):
    return rated_batch(images, config)
  norm = config.data.normalize
  if config.data.hr_resize:
    hr = np.stack([normalize(prepare_hr(im, config.data.hr_resize,
                                        config.data.hr_resize_mode), norm)
                   for im in images])
  else:
    step = models.hr_multiple(config)
    want = val_hw(config)
    h = min([want[0]] + [im.shape[0] for im in images])
    w = min([want[1]] + [im.shape[1] for im in images])
    if want[0] == want[1]:
      h = w = min(h, w)
    h, w = h - h % step, w - w % step
    least = min(patch_hw(config)) // 2
    if min(h, w) < max(least, 8):
      raise UserError(f'validation images must be at least {max(least, 8)} pixels on each side; '
                      'remove the small ones or set data.val_source.')
    hr = np.stack([normalize(_center_crop_hw(im, (h, w)).astype(np.float32) / 255.0, norm)
                   for im in images]).astype(np.float32)
  return {'lr': np.stack(degrade_fixed(hr, config)), 'hr': hr}


def _center_crop_hw(img, hw):
  top, left = (img.shape[0] - hw[0]) // 2, (img.shape[1] - hw[1]) // 2
  return img[top:top + hw[0], left:left + hw[1]]


def to_global(batch, sharding):
  """Process-local numpy batch -> global jax.Array split over the mesh's 'data' axis."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


class DataStallError(Exception):
  """The input pipeline produced no batch within data.stall_timeout_s (a hung or dead worker)."""


class _Failed:
  def __init__(self, error):
    self.error = error


def prefetch_to_device(iterator, sharding, size=2, stall_timeout=None):
  """Yields (global batch, iterator state after it): a reader thread keeps SIZE batches staged on
  the device. When no batch comes within STALL_TIMEOUT seconds (None: wait forever), raises
  DataStallError saying what was waiting; errors of the pipeline are raised here, in the loop."""
  staged = queue.Queue(maxsize=max(1, size))
  stop = threading.Event()
  reader = {'since': time.monotonic(), 'batches': 0}

  def read():
    try:
      while not stop.is_set():
        reader['since'] = time.monotonic()
        item = (to_global(next(iterator), sharding), iterator.get_state())
        reader['batches'] += 1
        while not stop.is_set():
          try:
            staged.put(item, timeout=0.5)
            break
          except queue.Full:
            continue
    except BaseException as e:  # pylint: disable=broad-except  (StopIteration, a bad image, ...)
      while not stop.is_set():  # handed on unless the loop has gone (a full queue never blocks it)
        try:
          staged.put(_Failed(e), timeout=0.5)
          break
        except queue.Full:
          continue

  thread = threading.Thread(target=read, name='enhance_jax-input', daemon=True)
  thread.start()
  handed, stalled = 0, False
  try:
    while True:
      try:
        item = staged.get(timeout=stall_timeout)
      except queue.Empty:
        stalled = True
        raise DataStallError(
            f'the input pipeline produced no batch for {stall_timeout:g} s: the training loop was '
            f'waiting for batch {handed + 1} of this run, and the reader has been inside '
            f'next() of the {type(iterator).__name__} for {time.monotonic() - reader["since"]:.0f} s '
            f'({reader["batches"]} batches read); check data.source and its workers '
            '(data.num_workers), or raise data.stall_timeout_s.') from None
      if isinstance(item, _Failed):
        raise item.error
      handed += 1
      yield item
  finally:  # the reader ends before the process does (a thread inside XLA at exit aborts it)
    stop.set()
    if not stalled:
      thread.join(timeout=120)
