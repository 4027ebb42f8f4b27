"""The degradation op protocol, which every other module of the package writes to.

An op is `op(image, rng) -> image` on one HWC float image in [0, 1]. `rng` is a numpy Generator in
grain workers and a jax key on the device (`apply_batch` vmaps an op over a batch with one key per
image); each op is written once against both through `_split`/`_uniform`. An op may carry:
`parts` (a composed spec, registry.parse), `branches` (registry.one_of_op), `device_only` and
`out_hw(hw)` (an op in jnp alone, `_device_op`), `options` (its checked config options).

Here too: the argument checks the op factories share, and what runs ops (apply_batch on a device
batch, output_hw, device_only).
"""

import jax
import jax.numpy as jnp
import numpy as np

from enhance_jax.errors import UserError


def _split(rng, n):
  """N independent generators: jax keys split; a numpy Generator is sequential, so itself N times."""
  if isinstance(rng, np.random.Generator):
    return [rng] * n
  return list(jax.random.split(rng, n))


def _uniform(rng, shape=(), low=0.0, high=1.0):
  """float32 uniform draws in [low, high) from a numpy Generator or a jax key."""
  if isinstance(rng, np.random.Generator):
    return np.asarray(rng.uniform(low, high, shape), np.float32)
  return jax.random.uniform(rng, shape, jnp.float32, low, high)


def _check_range(name, low, high):
  if not 0 <= low <= high <= 1:
    raise UserError(f'{name}({low}, {high}): the proportion range must satisfy 0 <= low <= high <= 1.')


def _check_factor(name, factor, integer=False):
  if not (isinstance(factor, (int, float)) and factor >= 1) or (integer and factor != int(factor)):
    kind = 'an integer' if integer else 'a number'
    raise UserError(f'{name}({factor!r}): the factor must be {kind} >= 1 (e.g. {name}(4)).')


def _is_number(x):
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def _plain(value):
  """A config value as plain Python: ConfigDicts to dicts, lists (JSON) to tuples."""
  if hasattr(value, 'to_dict'):
    value = value.to_dict()
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  return tuple(_plain(v) for v in value) if isinstance(value, (list, tuple)) else value


def _device_op(fn, out_hw=None):
  """An op written in jnp alone: a jax key traces FN into the caller's program (apply_batch in the
  jitted step); a numpy Generator (validation and evaluation degrade one image with a fixed seed)
  runs FN jitted on the default device, numpy out. Marked device_only (training with it needs
  data.degrade_on_device), with out_hw(hw) giving its output size without running it."""
  jitted = jax.jit(fn)

  def op(img, rng):
    if isinstance(rng, np.random.Generator):
      key = jax.random.key(int(rng.integers(0, 2 ** 31 - 1)))
      return np.asarray(jitted(np.asarray(img, np.float32), key))
    return fn(img, rng)
  op.device_only = True
  op.out_hw = out_hw or tuple
  return op


def device_only(op):
  """Whether OP, a part of it or a branch of a one_of in it runs on the device alone."""
  return any(getattr(part, 'device_only', False) or any(device_only(b) for b in getattr(part, 'branches', ()))
             for part in getattr(op, 'parts', (op,)))


def apply_batch(op, images, key):
  """OP on each image of an NHWC jax batch, with its own key (inside jit: on the device)."""
  keys = jax.random.split(key, images.shape[0])
  return jax.vmap(lambda x, k: jnp.asarray(op(x, k), jnp.float32))(images, keys)


def output_hw(op, hw):
  """The (H, W) that OP makes of an H x W image (its out_hw, or run on zeros on the host, cheap);
  every branch of a one_of must agree, else UserError (batches, and lax.switch on the device, need
  one size)."""
  hw = tuple(hw)
  for part in getattr(op, 'parts', (op,)):
    if hasattr(part, 'branches'):
      sizes = {output_hw(b, hw) for b in part.branches}
      if len(sizes) > 1:
        raise UserError(f'the branches of a one_of make images of different sizes '
                        f'({", ".join(f"{h}x{w}" for h, w in sorted(sizes))} from {hw[0]}x{hw[1]}); '
                        'give every branch the same resize.')
      hw = sizes.pop()
    elif hasattr(part, 'out_hw'):
      hw = tuple(part.out_hw(hw))
    else:
      hw = tuple(np.shape(part(np.zeros((*hw, 3), np.float32), np.random.default_rng(0)))[:2])
  return hw
