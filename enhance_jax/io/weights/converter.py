"""The one converter: a flat state_dict and a key table -> nested Flax variables, strictly.

A table is `{(collection, Flax path 'a/b/kernel'): (file key, stored shape)}` in the module's order;
`convert` takes every row's key with its shape (torch conv weights [out, in, kh, kw] become kernels
[kh, kw, in, out]) and raises `Mismatch` listing every missing, mis-shaped or unexpected key, first
first; `mismatch_message` makes that one sentence. A `Layout` is what an architecture's layout
function reads off a state_dict: its config `model` section, its table, the key prefixes it owns and
value problems. The row and shape helpers below are what the layout functions build tables with.
"""

import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from enhance_jax.errors import UserError
from enhance_jax.io.weights import files

# {(collection, Flax path 'a/b/kernel'): (torch key, torch shape[, transform])} in the module's order;
# collection None: a key that is checked but holds no Flax variable (EDSR-PyTorch's constant MeanShift
# convs, SwinIR's index buffers). A transform (numpy -> numpy) replaces the 4-D rule for its row: a
# Linear weight [out, in] becomes a Dense kernel [in, out] by `linear_rows`' transpose.
Table = dict[tuple[str | None, str], tuple]


class Layout(NamedTuple):
  """What a state_dict's keys and shapes say: the config `model` section, the key table for it, the
  key prefixes the architecture owns (('',): every key; (): none, other keys are ignored), value
  problems found on the way, and whether its 4-D weights are torch's [out, in, kh, kw] (False: the
  file holds Flax kernels [kh, kw, in, out] already, e.g. one `save_params_npz` wrote)."""
  section: dict
  table: Table
  namespace: tuple[str, ...] = ('',)
  problems: tuple[str, ...] = ()
  torch_layout: bool = True


class Mismatch(Exception):
  """Problems with a state_dict ("missing 'k'", "'k' has shape ...", "unexpected 'k'"), first first."""

  def __init__(self, problems: Sequence[str]):
    super().__init__(problems[0])
    self.problems = list(problems)


def clip(items: Sequence[str], n: int = 6) -> str:
  """Joins the first `n` items, noting how many more there are."""
  more = f' (+{len(items) - n} more)' if len(items) > n else ''
  return ', '.join(items[:n]) + more


def mismatch_message(problems: Sequence[str], hint: str) -> str:
  """One sentence naming the first problem, the next two (a renamed key is a missing one and an
  unexpected one: seeing both says so), a count of the rest, and what to give instead."""
  more = f' (also {clip(problems[1:], 2)})' if len(problems) > 1 else ''
  return f'the first mismatched key: {problems[0]}{more}; give {hint}.'


def describe(section: Mapping) -> str:
  """'rrdbnet (num_blocks=23, num_features=64, growth_channels=32, scale=4)' for a model section."""
  sizes = ', '.join(f'{k}={v}' for k, v in section.items() if k != 'name')
  return f"{section['name']} ({sizes})" if sizes else section['name']


def does_not_fit(section: Mapping, problems: Sequence[str], hint: str) -> UserError:
  """The error for weights that do not fit the model SECTION describes, naming the first problem."""
  return UserError(f'The weights do not fit {describe(section)}: '
                   + mismatch_message(problems, hint))


def convert(sd: Mapping[str, np.ndarray], layout: Layout) -> dict:
  """{collection: nested Flax variables} (numpy float32) from `sd` by `layout.table`; raises Mismatch.

  Problems, in order: `layout.problems` (the layout's value checks), then missing or mis-shaped keys in
  the table's order, then keys under `layout.namespace` (prefixes; ('',) is every key) the table does
  not know. In torch layout, 4-D weights [out, in, kh, kw] become kernels [kh, kw, in, out];
  `num_batches_tracked` is ignored.
  """
  problems, flat = list(layout.problems), {}
  for (collection, path), (key, shape, *transform) in layout.table.items():
    value = sd.get(key)
    if value is None:
      problems.append(f"missing '{key}'")
    elif tuple(value.shape) != shape:
      problems.append(f"'{key}' has shape {tuple(value.shape)}, want {shape}")
    elif collection is not None:
      value = np.asarray(value, np.float32)
      if transform and layout.torch_layout:
        value = np.ascontiguousarray(transform[0](value))
      elif layout.torch_layout and value.ndim == 4:
        value = value.transpose(2, 3, 1, 0)
      flat[f'{collection}/{path}'] = value
  known = {row[0] for row in layout.table.values()}
  problems += [f"unexpected '{k}'" for k in sd if k.startswith(layout.namespace) and k not in known
               and not k.endswith('num_batches_tracked')]
  if problems:
    raise Mismatch(problems)
  return files.unflatten_params(flat)


# ---------------------------------------------------------------- building tables


def conv_rows(table: Table, path: str, key: str, c_in: int, c_out: int, k: int = 3) -> None:
  """Adds a biased conv: Flax `path/kernel`, `path/bias` from torch `key.weight`, `key.bias`."""
  table['params', f'{path}/kernel'] = (f'{key}.weight', (c_out, c_in, k, k))
  table['params', f'{path}/bias'] = (f'{key}.bias', (c_out,))


def linear_rows(table: Table, path: str, key: str, c_in: int, c_out: int, bias: bool = True) -> None:
  """Adds a Linear: Flax Dense `path/kernel` [in, out] from torch `key.weight` [out, in] (+ bias)."""
  table['params', f'{path}/kernel'] = (f'{key}.weight', (c_out, c_in), np.transpose)
  if bias:
    table['params', f'{path}/bias'] = (f'{key}.bias', (c_out,))


def norm_rows(table: Table, path: str, key: str, c: int) -> None:
  """Adds a LayerNorm (or any affine norm): Flax `path/scale`, `path/bias` from `key.weight`, `.bias`."""
  table['params', f'{path}/scale'] = (f'{key}.weight', (c,))
  table['params', f'{path}/bias'] = (f'{key}.bias', (c,))


def prefixed(table: Table, prefix: str) -> Table:
  """TABLE with PREFIX put before every file key."""
  return {name: (prefix + key, *rest) for name, (key, *rest) in table.items()}


def first_prefix(sd: Mapping, prefixes: Sequence[str], key: str) -> str:
  """The first of `prefixes` under which `key` is in `sd` ('' if none)."""
  return next((p for p in prefixes if p + key in sd), '')


# ---------------------------------------------------------------- sizes read off a state_dict


def dim(sd: Mapping, key: str, axis: int, default: int, ndim: int = 4) -> int:
  """sd[key].shape[axis] when `key` is an `ndim`-D tensor, else `default` (the table reports it)."""
  value = sd.get(key)
  return int(value.shape[axis]) if value is not None and value.ndim == ndim else default


def out_channels(sd: Mapping, convs: Sequence[str], default: int) -> int:
  """The output channels of the first of `convs` whose weight (or else bias) is stored."""
  for conv in convs:
    for key, ndim in ((f'{conv}.weight', 4), (f'{conv}.bias', 1)):
      if (value := sd.get(key)) is not None and value.ndim == ndim:
        return int(value.shape[0])
  return default


def count_blocks(sd: Mapping, prefix: str) -> int:
  """Number of blocks stored under `{prefix}.{i}.` (0 if none)."""
  pattern = re.compile(rf'{re.escape(prefix)}\.(\d+)\.')
  indices = {int(m.group(1)) for k in sd if (m := pattern.match(k))}
  return max(indices) + 1 if indices else 0
