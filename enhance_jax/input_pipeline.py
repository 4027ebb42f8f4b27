"""grain pipeline: source -> decode -> [square resize] -> random HR crop -> [Keras-style affine]
-> flips/rot90 -> degrade -> batch -> device.

Per-record randomness comes from grain's `random_map` seeds, so a batch depends only on (seed, step):
the iterator state is one index, checkpointed with the model, and resuming replays nothing.
"""

import collections
import functools

import grain
import jax
import numpy as np

from enhance_jax import degradations
from enhance_jax.errors import UserError

AFFINE_FIELDS = ('rotation', 'shift', 'shear', 'zoom', 'hflip')


def degrade_fn(config):
  """The config's LR-from-HR degradation as a function hr -> lr (numpy or jnp, float in [0, 1])."""
  name = config.data.degradation
  if name not in degradations.DEGRADATIONS:
    raise UserError(f'unknown data.degradation {name!r}; valid: {", ".join(degradations.DEGRADATIONS)}.')
  kwargs = {'blur_sigma': config.data.blur_sigma} if name == 'bicubic_blur' else {}
  return functools.partial(degradations.DEGRADATIONS[name], scale=config.model.scale, **kwargs)


def _size_step(scale):
  """HR sides must be multiples of this (the LR side a multiple of 4 when the model unshuffles)."""
  return 4 * scale if scale < 4 else scale


def affine_kwargs(config):
  """data.affine as `degradations.random_affine` keywords, or None when it is all off."""
  affine = config.data.get('affine', None)
  if affine is None:
    return None
  kwargs = {k: (bool(affine[k]) if k == 'hflip' else float(affine[k])) for k in AFFINE_FIELDS}
  return kwargs if any(kwargs.values()) else None


def check_data_config(config):
  """UserError for data settings that cannot work together (hr_resize vs patch size, affine ranges)."""
  data, scale = config.data, config.model.scale
  side = data.get('hr_resize', 0)
  if side < 0:
    raise UserError(f'data.hr_resize={side} is negative; set it to 0 (off) or the HR side to resize to.')
  if side and data.patch_size > side:
    raise UserError(f'data.patch_size={data.patch_size} is larger than data.hr_resize={side}; lower '
                    f'data.patch_size to at most {side} or raise data.hr_resize.')
  step = _size_step(scale)
  if side % step:
    raise UserError(f'data.hr_resize={side} is not a multiple of {step} (model.scale={scale}); set it '
                    f'to {max(1, round(side / step)) * step}.')
  kwargs = affine_kwargs(config) or {}
  for key, top in (('rotation', None), ('shear', None), ('shift', 1.0), ('zoom', 1.0)):
    value = kwargs.get(key, 0.0)
    if value < 0 or (top is not None and value >= top):
      bounds = f'in [0, {top})' if top else '>= 0'
      raise UserError(f'data.affine.{key}={value} must be {bounds}; it is the half-width of a '
                      'uniform range.')


def make_pair(image, rng, *, patch_size, augment, degrade, hr_resize=0, affine=None):
  """uint8 image -> {'lr', 'hr'} float32 patches: [square resize to hr_resize], crop, [random affine
  (keywords of degradations.random_affine)], flips/rot90, then degrade the augmented HR. Without
  DEGRADE, {'hr'} alone: the train step degrades on the device (data.degrade_on_device)."""
  if hr_resize:
    hr = degradations.random_crop(degradations.square_resize(image, hr_resize), patch_size, rng)
  else:
    hr = degradations.random_crop(image, patch_size, rng).astype(np.float32) / 255.0
  if affine:
    hr = degradations.random_affine(hr, rng, **affine)
  if augment:
    hr = degradations.random_flip_rot90(hr, rng)
  hr = np.ascontiguousarray(hr, np.float32)
  return {'lr': np.asarray(degrade(hr), np.float32), 'hr': hr} if degrade else {'hr': hr}


def train_dataset(source, config, *, process_index=0, process_count=1):
  """Infinite, shuffled-per-epoch MapDataset of this process's share of the global batches."""
  check_data_config(config)
  batch = config.train.batch_size
  if batch % process_count:
    raise ValueError(f'train.batch_size={batch} is not divisible by {process_count} processes.')
  ds = grain.MapDataset.source(source)
  if process_count > 1:
    ds = ds[process_index::process_count]
  pair = functools.partial(make_pair, patch_size=config.data.patch_size,
                           augment=config.data.augment,
                           degrade=None if config.data.degrade_on_device else degrade_fn(config),
                           hr_resize=config.data.get('hr_resize', 0), affine=affine_kwargs(config))
  ds = ds.shuffle(seed=config.seed).repeat(None).random_map(pair, seed=config.seed)
  return ds.batch(batch // process_count, drop_remainder=True)


# Threads that build batches in each process, and the batches they may stock ahead: grain's default
# buffer (500) would hold gigabytes of image batches per process for no gain in throughput.
READ_OPTIONS = grain.ReadOptions(num_threads=8, prefetch_buffer_size=16)


def train_iterator(ds, num_workers=0):
  """A checkpointable iterator over DS (multiprocess prefetch when NUM_WORKERS > 0)."""
  it = ds.to_iter_dataset(READ_OPTIONS)
  if num_workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(it)


def validation_batch(source, config):
  """All validation images as one batch: centre crops of one common side, or, with data.hr_resize,
  each image square-resized to hr_resize as in training and used whole."""
  check_data_config(config)
  images = [source[i] for i in range(len(source))]
  if config.data.get('hr_resize', 0):
    hr = np.stack([degradations.square_resize(im, config.data.hr_resize) for im in images])
  else:
    step = _size_step(config.model.scale)
    side = min([config.data.val_patch_size] + [min(im.shape[:2]) for im in images])
    side -= side % step
    if side < config.data.patch_size // 2 or side < 16:
      raise UserError(f'validation images must be at least {max(16, config.data.patch_size // 2)} pixels '
                      'on each side; remove the small ones or set data.val_source.')
    hr = np.stack([degradations.center_crop(im, side) for im in images]).astype(np.float32) / 255.0
  degrade = degrade_fn(config)
  lr = np.stack([np.asarray(degrade(x), np.float32) for x in hr])
  return {'lr': lr, 'hr': hr}


def to_global(batch, sharding):
  """Process-local numpy batch -> global jax.Array split over the mesh's 'data' axis."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def prefetch_to_device(iterator, sharding, size=2):
  """Yields (global batch, iterator state after it), keeping SIZE batches in flight to the device."""
  queue = collections.deque()

  def enqueue():
    batch = next(iterator)
    queue.append((to_global(batch, sharding), iterator.get_state()))

  for _ in range(max(1, size)):
    enqueue()
  while True:
    yield queue.popleft()
    enqueue()
