"""The spec language: OPS (op name -> factory), `parse('bicubic(4)|blur(1.5)')` into one op, the
one_of combinator, and the data.<name> config sections that give ops keyword defaults.

A new op is one factory `(*spec args) -> op` (in classic, realesrgan, or a new module) and one line
in OPS.
"""

import jax
import jax.numpy as jnp
import numpy as np

from enhance_jax.data.degradations.classic import (bicubic_blur_op, bicubic_op, blur_op, brighten_op, clip_op,
                                                    color_noise_op, darken_op, down_up_op, identity_op,
                                                    salt_pepper_op, usm_op)
from enhance_jax.data.degradations.protocol import _plain, _split, _uniform
from enhance_jax.data.degradations.realesrgan import (jpeg_compression_op, random_blur_op, random_noise_op,
                                                       realesrgan_op)
from enhance_jax.errors import UserError


def one_of_op(*specs):
  """One of the given specs per image, uniformly (report 001 draws one noise type per image)."""
  if not specs:
    raise UserError('one_of() needs at least one spec, e.g. one_of("darken(0.3, 0.6)", "brighten").')
  ops = [parse(s) for s in specs]

  def op(img, rng):
    kc, kop = _split(rng, 2)
    u = _uniform(kc)
    if isinstance(rng, np.random.Generator):
      return ops[min(int(u * len(ops)), len(ops) - 1)](img, kop)
    index = jnp.minimum((u * len(ops)).astype(jnp.int32), len(ops) - 1)
    return jax.lax.switch(index, [lambda x, f=f: f(x, kop).astype(jnp.float32) for f in ops],
                          jnp.asarray(img, jnp.float32))
  op.branches = ops
  return op


# ------------------------------------------------------------------------------------- registry

OPS = {'bicubic': bicubic_op, 'bicubic_blur': bicubic_blur_op, 'blur': blur_op,
       'down_up': down_up_op, 'salt_pepper': salt_pepper_op, 'color_noise': color_noise_op,
       'darken': darken_op, 'brighten': brighten_op, 'clip': clip_op, 'identity': identity_op,
       'one_of': one_of_op, 'realesrgan': realesrgan_op, 'random_blur': random_blur_op,
       'random_noise': random_noise_op, 'jpeg_compression': jpeg_compression_op, 'usm': usm_op}

# data.<name> config sections that give the ops of that name their keyword defaults (parse's options).
CONFIG_SECTIONS = ('realesrgan',)


# ---------------------------------------------------------------------------------------- parse


def _top_level_split(spec, sep='|'):
  """Splits SPEC on SEP outside brackets and quotes."""
  parts, depth, quote, start = [], 0, None, 0
  for i, ch in enumerate(spec):
    if quote:
      quote = None if ch == quote else quote
    elif ch in '\'"':
      quote = ch
    elif ch in '([':
      depth += 1
    elif ch in ')]':
      depth -= 1
    elif ch == sep and depth == 0:
      parts.append(spec[start:i])
      start = i + 1
  return parts + [spec[start:]]


def _parse_call(text):
  """'name' or 'name(literal args, key=literal)' -> (name, args, kwargs), or UserError."""
  import ast  # pylint: disable=g-import-not-at-top
  try:
    node = ast.parse(text.strip(), mode='eval').body
    if isinstance(node, ast.Name):
      return node.id, (), {}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
      names = [k.arg for k in node.keywords]
      if None not in names and len(set(names)) == len(names):
        return (node.func.id, tuple(ast.literal_eval(a) for a in node.args),
                {k.arg: ast.literal_eval(k.value) for k in node.keywords})
  except (SyntaxError, ValueError, TypeError):
    pass
  raise UserError(f'degradation op {text.strip()!r} is not of the form name or name(args), e.g. '
                  "'bicubic(4)|blur(1.5)'.")


def config_options(data):
  """The op sections of a data config (data.realesrgan, ...) as parse's OPTIONS."""
  return {name: data[name] for name in CONFIG_SECTIONS if data.get(name) is not None}


def parse(spec, options=None):
  """A degradation spec ('op|op(args)|...') -> one op (image, rng) -> image; '' is the identity.
  OPTIONS {op name: {keyword: value}} gives the spec's ops of that name keyword defaults from the
  config (config_options(config.data)); keywords written in the spec win."""
  ops = []
  for part in _top_level_split(spec or 'identity'):
    name, args, kwargs = _parse_call(part)
    if name not in OPS:
      raise UserError(f'unknown degradation op {name!r} in {spec!r}; valid: {", ".join(sorted(OPS))}.')
    kwargs = {**_plain((options or {}).get(name) or {}), **kwargs}
    try:
      ops.append(OPS[name](*args, **kwargs))
    except TypeError as e:
      raise UserError(f'degradation op {part.strip()!r}: {e}.') from None
  if len(ops) == 1:
    return ops[0]

  def composed(img, rng):
    for op, key in zip(ops, _split(rng, len(ops))):
      img = op(img, key)
    return img
  composed.parts = ops
  return composed
