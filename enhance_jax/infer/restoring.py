"""One `restore(source)` for everything that runs a trained generator (enhance, evaluate, serve, and
training's `model.init_from`): a training workdir, a directory written by `enhance_jax.convert`, a
released weights file (.pth/.safetensors/.npz or an ncnn NAME.param, architecture inferred), or a
released model by name (`zoo`: the [pretrained] package, the cache, or a download).

What comes back is a `Restored`: the generator's config section, its variables and where they came
from. `generator(restored, precision)` builds the module at a compute precision; parameters stay
float32.
"""

import dataclasses
import os
import pathlib
from typing import Any

from flax import traverse_util
import jax
import jax.numpy as jnp
import ml_collections

from enhance_jax import models
from enhance_jax.errors import UserError
from enhance_jax.io import checkpoints
from enhance_jax.io import weights
from enhance_jax.io import zoo
from enhance_jax.training import config as config_lib
from enhance_jax.training import schema

PRECISIONS = ('fp32', 'bf16')


@dataclasses.dataclass(frozen=True)
class Restored:
  """A generator ready to run: `model` is its config section ({'name': ..., fields..., 'scale': S}),
  `variables` {'params': ..., ['batch_stats': ...]}, `config` the full training config when the
  source was a training workdir (None otherwise), `step` the checkpoint's step (0 for imports)."""
  model: dict
  variables: Any
  source: str
  config: ml_collections.ConfigDict | None = None
  step: int = 0
  meta: dict = dataclasses.field(default_factory=dict)

  @property
  def scale(self) -> int:
    return int(self.model['scale'])

  @property
  def name(self) -> str:
    return self.model['name']


def kind_of(source) -> str:
  """'workdir', 'model_dir', 'weights' or 'zoo' (a released model's name) for SOURCE, or a
  UserError saying what to give."""
  path = pathlib.Path(source)
  if path.is_dir():
    if weights.is_model_dir(path):
      return 'model_dir'
    if (path / 'checkpoints').is_dir() or (path / 'best').is_dir():
      return 'workdir'
    raise UserError(f'{path} holds no checkpoints and is not a converted model (no model.json); '
                    f'train first (python -m enhance_jax.train --workdir {path}), or give a '
                    'converted model directory or a weights file (.pth/.safetensors).')
  if path.is_file():
    return 'weights'
  if zoo.is_name(os.fspath(source)):
    return 'zoo'
  if os.sep not in os.fspath(source) and not path.suffix:  # a name, not a path: suggest names
    zoo.resolve(os.fspath(source))
  raise UserError(f"'{path}' does not exist; give a training workdir, a directory written by "
                  'enhance_jax.convert, or a weights file.')


def restore(source, arch: str | None = None, which: str = 'best') -> Restored:
  """The generator stored at SOURCE (a workdir's WHICH checkpoint, EMA weights when kept; a converted
  model directory; or a weights file whose architecture is ARCH or inferred)."""
  kind = kind_of(source)
  if arch and kind not in ('weights', 'zoo'):
    raise UserError(f'--arch applies to weights files only; {source} already names its architecture.')
  if kind == 'workdir':
    return _from_workdir(source, which)
  if kind == 'model_dir':
    section, variables, meta = weights.read_model_dir(source)
    return Restored(dict(section), variables, os.fspath(source), meta=meta)
  if kind == 'zoo':
    path = zoo.resolve(source)
    section, variables, _ = weights.load_weights(path, arch or zoo.MODELS[source].arch)
    return Restored(dict(section), variables, source, meta={'file': os.fspath(path)})
  section, variables, _ = weights.load_weights(source, arch)
  if section['name'] not in models.GENERATORS or section['name'] == 'nima':
    raise UserError(f"'{source}' holds {section['name']} weights, which are not an image generator; "
                    'give a super-resolution model (RRDBNet, SRVGGNetCompact, EDSR, MSRResNet).')
  return Restored(dict(section), variables, os.fspath(source))


def _from_workdir(workdir, which: str) -> Restored:
  """The generator of WORKDIR's checkpoint WHICH (EMA weights when kept) with its training config."""
  if not (pathlib.Path(workdir) / 'checkpoints').is_dir():
    raise UserError(f'{workdir} holds no checkpoints; train first '
                    f'(python -m enhance_jax.train --workdir {workdir}).')
  ckpts = checkpoints.Checkpoints(workdir, read_only=True)
  try:
    meta, variables, step = ckpts.generator_variables(which)
  finally:
    ckpts.close()
  config = schema.complete(meta['config'])  # a workdir older than a field gets its default
  return Restored(config.model.to_dict(), variables, os.fspath(workdir), config, step)


def at_scale(restored: Restored, scale: int | None) -> Restored:
  """RESTORED set to run at SCALE: a multi-scale model (MDSR) at any of its `scales`; a single-scale
  one only at its own scale (UserError naming the choices otherwise). None keeps its scale."""
  if scale is None:
    return restored
  choices = tuple(int(s) for s in restored.model.get('scales', ())) or (restored.scale,)
  if int(scale) not in choices:
    raise UserError(f'--scale {scale}: {restored.source} enlarges x{" / x".join(map(str, choices))} '
                    'only; give one of those (or --outscale for any other factor).')
  return dataclasses.replace(restored, model={**restored.model, 'scale': int(scale)})


def generator(restored: Restored, precision: str = 'fp32'):
  """The flax module of RESTORED computing in PRECISION ('fp32' | 'bf16'; parameters stay float32)."""
  if precision not in PRECISIONS:
    raise UserError(f'--precision {precision!r} is not supported; use one of {", ".join(PRECISIONS)}.')
  section = {k: v for k, v in restored.model.items() if k != 'remat'}
  config = ml_collections.ConfigDict({'model': section, 'train': {'precision': precision}})
  module = models.build_generator(config)
  _check_makes_images(restored, module)
  return module


def _check_makes_images(restored: Restored, module) -> None:
  """UserError when RESTORED is a rating model (NIMA): it scores images, it does not make them."""
  if models.output_key(module) != 'image':
    raise UserError(f'{restored.source} holds a NIMA, which rates images rather than enhancing them; '
                    f'score with it: python -m enhance_jax.score IMAGES --nima {restored.source}.')


def model_config(restored: Restored) -> ml_collections.ConfigDict:
  """A full config to evaluate RESTORED with: its training config when it has one; otherwise the
  schema's defaults with this model (no discriminator) and the classic bicubic degradation of its
  scale."""
  if restored.config is not None:
    return restored.config
  if restored.name == 'nima':
    _check_makes_images(restored, models.GENERATORS['nima']())
  c = config_lib.base_config()
  c.model = ml_collections.ConfigDict({**c.model.to_dict(), **restored.model})
  c.data.degradation = f'bicubic({restored.scale})' if restored.scale > 1 else 'identity'
  config_lib.validate(c)
  return c


def _flat_shapes(tree) -> dict:
  return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(dict(tree), sep='/').items()}


def check_fits(restored: Restored, model_section, params, what: str) -> None:
  """UserError naming the first parameter of PARAMS that RESTORED lacks, has extra, or shapes
  differently (after the architectures' names are compared)."""
  if restored.name != model_section['name']:
    raise UserError(f'{what}={restored.source} holds a {restored.name} generator but model.name is '
                    f'{model_section["name"]!r}; give weights of the same architecture.')
  want, got = _flat_shapes(params), _flat_shapes(restored.variables['params'])
  for key in sorted(set(want) | set(got)):
    if want.get(key) != got.get(key):
      raise UserError(f'{what}={restored.source} does not fit model {model_section["name"]} as '
                      f'configured: the first mismatched parameter is {key!r} (weights '
                      f'{got.get(key, "missing")}, model {want.get(key, "missing")}); set the model '
                      f'fields it was trained with ({_fields(restored.model)}).')


def _fields(section) -> str:
  return ', '.join(f'model.{k}={v}' for k, v in section.items() if k not in ('name', 'remat'))


def initial_weights(config, g_params) -> Restored | None:
  """The generator `model.init_from` names (None when unset), checked against G_PARAMS (arrays or
  shape structs: the train loop checks before it builds anything)."""
  source = config.model.init_from
  if not source:
    return None
  restored = restore(source)
  check_fits(restored, config.model, g_params, 'model.init_from')
  return restored


def with_initial_weights(state, config, restored: Restored | None = None):
  """STATE with the generator (and its EMA copy) started from `model.init_from` (a training workdir,
  a converted model directory or a released weights file), when set; shapes checked key by key."""
  restored = restored or initial_weights(config, state.g_params)
  if restored is None:
    return state
  place = lambda tree, like: jax.tree.map(
      lambda a, b: jax.device_put(jnp.asarray(a, b.dtype), b.sharding), dict(tree), dict(like))
  changes = {'g_params': place(restored.variables['params'], state.g_params)}
  if state.g_stats and 'batch_stats' in restored.variables:
    changes['g_stats'] = place(restored.variables['batch_stats'], state.g_stats)
  if state.ema_params is not None:
    changes['ema_params'] = jax.tree.map(jnp.copy, changes['g_params'])
  print(f'generator initialised from {restored.source} ({restored.name} x{restored.scale})',
        flush=True)
  return state.replace(**changes)
