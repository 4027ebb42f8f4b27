"""grain pipeline: source -> decode -> random HR crop -> flips/rot90 -> degrade -> batch -> device.

Per-record randomness comes from grain's `random_map` seeds, so a batch depends only on (seed, step):
the iterator state is one index, checkpointed with the model, and resuming replays nothing.
"""

import collections
import functools

import grain
import jax
import numpy as np

from enhance_jax import degradations


def degrade_fn(config):
  """The config's LR-from-HR degradation as a function hr -> lr (numpy or jnp, float in [0, 1])."""
  name = config.data.degradation
  if name not in degradations.DEGRADATIONS:
    from enhance_jax.errors import UserError  # pylint: disable=g-import-not-at-top
    raise UserError(f'unknown data.degradation {name!r}; valid: {", ".join(degradations.DEGRADATIONS)}.')
  kwargs = {'blur_sigma': config.data.blur_sigma} if name == 'bicubic_blur' else {}
  return functools.partial(degradations.DEGRADATIONS[name], scale=config.model.scale, **kwargs)


def make_pair(image, rng, *, patch_size, augment, degrade):
  """uint8 image -> {'lr', 'hr'} float32 patches: crop, augment, then degrade the augmented HR."""
  hr = degradations.random_crop(image, patch_size, rng).astype(np.float32) / 255.0
  if augment:
    hr = degradations.random_flip_rot90(hr, rng)
  hr = np.ascontiguousarray(hr)
  return {'lr': np.asarray(degrade(hr), np.float32), 'hr': hr}


def train_dataset(source, config, *, process_index=0, process_count=1):
  """Infinite, shuffled-per-epoch MapDataset of this process's share of the global batches."""
  batch = config.train.batch_size
  if batch % process_count:
    raise ValueError(f'train.batch_size={batch} is not divisible by {process_count} processes.')
  ds = grain.MapDataset.source(source)
  if process_count > 1:
    ds = ds[process_index::process_count]
  pair = functools.partial(make_pair, patch_size=config.data.patch_size,
                           augment=config.data.augment, degrade=degrade_fn(config))
  ds = ds.shuffle(seed=config.seed).repeat(None).random_map(pair, seed=config.seed)
  return ds.batch(batch // process_count, drop_remainder=True)


def train_iterator(ds, num_workers=0):
  """A checkpointable iterator over DS (multiprocess prefetch when NUM_WORKERS > 0)."""
  it = ds.to_iter_dataset()
  if num_workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(it)


def center_crop(image, size):
  h, w = image.shape[:2]
  top, left = (h - size) // 2, (w - size) // 2
  return image[top:top + size, left:left + size]


def validation_batch(source, config):
  """All validation images as one batch of centre crops (the same crop side for every image)."""
  scale = config.model.scale
  step = 4 * scale if scale < 4 else scale
  images = [source[i] for i in range(len(source))]
  side = min([config.data.val_patch_size] + [min(im.shape[:2]) for im in images])
  side -= side % step
  if side < config.data.patch_size // 2 or side < 16:
    from enhance_jax.errors import UserError  # pylint: disable=g-import-not-at-top
    raise UserError(f'validation images must be at least {max(16, config.data.patch_size // 2)} pixels '
                    'on each side; remove the small ones or set data.val_source.')
  hr = np.stack([center_crop(im, side) for im in images]).astype(np.float32) / 255.0
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
