"""Experiments (experiments/NAME.py -> locked ConfigDict) and `--set key=value` overrides, type-checked."""

import ast
import difflib
import importlib.util
import pathlib

import ml_collections

from enhance_jax.errors import UserError

EXPERIMENTS_DIR = pathlib.Path(__file__).resolve().parent.parent / 'experiments'


def list_experiments():
  """Names of the experiments shipped in experiments/."""
  return sorted(p.stem for p in EXPERIMENTS_DIR.glob('*.py') if not p.stem.startswith('_'))


def _nearest(name, choices):
  close = difflib.get_close_matches(name, choices, n=3, cutoff=0.4)
  return ', '.join(close or sorted(choices)[:12])


def load_experiment(name):
  """Runs experiments/NAME.py (or a path to a .py file) and returns its get_config()."""
  path = pathlib.Path(name)
  if path.suffix != '.py':
    path = EXPERIMENTS_DIR / f'{name}.py'
  if not path.is_file():
    raise UserError(f'unknown experiment {name!r}: did you mean {_nearest(name, list_experiments())}? '
                    '(`python -m enhance_jax.train --list` prints them all)')
  spec = importlib.util.spec_from_file_location(f'enhance_jax_experiments.{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _leaf_keys(config, prefix=''):
  keys = []
  for k, v in config.items():
    full = f'{prefix}{k}'
    keys.extend(_leaf_keys(v, full + '.') if isinstance(v, ml_collections.ConfigDict) else [full])
  return keys


def _parse_value(text, old, key):
  """Parses TEXT to the type of the current value OLD, or raises UserError."""
  if isinstance(old, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text
  if isinstance(old, bool):
    if isinstance(value, bool):
      return value
    if str(text).lower() in ('true', 'false', 'yes', 'no', '1', '0'):
      return str(text).lower() in ('true', 'yes', '1')
  elif isinstance(old, int) and isinstance(value, int) and not isinstance(value, bool):
    return value
  elif isinstance(old, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
    return float(value)
  elif isinstance(old, (tuple, list)) and isinstance(value, (tuple, list, int, float)):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)
  elif old is None:
    return value
  raise UserError(f'--set {key}={text}: expected a value of type {type(old).__name__} '
                  f'(current value {old!r}), got {text!r}.')


def apply_overrides(config, overrides):
  """Applies ['a.b=value', ...] to a copy of CONFIG; unknown keys or wrong types raise UserError."""
  config = ml_collections.ConfigDict(config.to_dict())
  valid = _leaf_keys(config)
  for item in overrides:
    if '=' not in item:
      raise UserError(f'--set {item!r} is not of the form key=value (e.g. --set train.batch_size=32).')
    key, text = item.split('=', 1)
    key = key.strip()
    if key not in valid:
      raise UserError(f'--set {key}: no such config key; did you mean {_nearest(key, valid)}?')
    *parents, leaf = key.split('.')
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = _parse_value(text.strip(), node[leaf], key)
  validate(config)
  return config.lock()


def validate(config):
  """Cross-field checks that a single type check cannot see."""
  scale, patch = config.model.scale, config.data.patch_size
  if scale not in (1, 2, 4):
    raise UserError(f'model.scale={scale} is not supported; use 1, 2 or 4.')
  if patch % (scale * 4 if scale < 4 else scale) or patch < 16:
    raise UserError(f'data.patch_size={patch} must be at least 16 and a multiple of '
                    f'{scale * 4 if scale < 4 else scale} for model.scale={scale}.')
  if config.train.pretrain_steps > config.train.num_steps:
    raise UserError(f'train.pretrain_steps={config.train.pretrain_steps} exceeds '
                    f'train.num_steps={config.train.num_steps}; raise num_steps or lower pretrain_steps.')
  if config.train.batch_size < 1:
    raise UserError('train.batch_size must be at least 1.')
  if config.discriminator.name == 'none' and config.train.pretrain_steps < config.train.num_steps:
    raise UserError("discriminator.name='none' trains G alone; set train.pretrain_steps equal to "
                    'train.num_steps (no GAN stage).')
  if not 0 <= config.data.val_fraction < 1:
    raise UserError(f'data.val_fraction={config.data.val_fraction} must be in [0, 1): it is the share '
                    'of a folder held out for validation.')


def get_config(name, overrides=()):
  """The experiment NAME with OVERRIDES applied, validated and locked."""
  return apply_overrides(load_experiment(name), list(overrides))
