"""The config schema: every section's fields with their default, type and one line of meaning.

An experiment (experiments/NAME.py) starts from `defaults()` and sets only what its report changes;
`complete` gives a config written before a field existed (an older workdir's) that field's default,
so no reader needs `.get(key, default)`; `check` refuses a key the schema lacks or a value of the
wrong type; `describe` is what `train --help-config` prints.

Three kinds of entries: a `Field` (one value), a nested dict (a section of fields), and a `Table`
(a section whose keys are open: loss terms -> weights, VGG layers -> weights). The `model` and
`discriminator` sections hold `name` (and the fields below) plus the named flax module's own
fields, whose types and defaults are the module's (models.GENERATORS, models.DISCRIMINATORS).
"""

import dataclasses
import difflib
from typing import Any, NamedTuple

import ml_collections

from enhance_jax import models
from enhance_jax.data import degradations
from enhance_jax.errors import UserError


class Field(NamedTuple):
  """One config value: its DEFAULT (whose type is the field's type) and what it means."""
  default: Any
  doc: str


class Table(NamedTuple):
  """An open section {key: value of TYPE}: the keys are the user's (a loss term, a VGG layer)."""
  default: dict
  type: type
  doc: str


MODULE_SECTIONS = {'model': models.GENERATORS, 'discriminator': models.DISCRIMINATORS}


def _realesrgan_section():
  """data.realesrgan: Real-ESRGAN's published degradation options (degradations.realesrgan_defaults)."""
  return {k: Field(v, f'Real-ESRGAN degradation option {k} (options/train_realesrgan_x4plus.yml)')
          for k, v in degradations.realesrgan_defaults().items()}


SCHEMA = {
    'name': Field('', 'the experiment, as written into workdirs and metrics.json'),
    'seed': Field(0, 'seed of the parameters, the data order and the degradations'),
    'model': {
        'name': Field('rrdbnet', 'the generator: a key of models.GENERATORS (its fields follow it)'),
        'scale': Field(4, 'enlargement factor of the generator (1 for restoration and rating)'),
        'init_from': Field('', 'start G from a workdir, a converted model directory, a weights file '
                               'or a released model name; "" = random'),
    },
    'discriminator': {
        'name': Field('none', "a key of models.DISCRIMINATORS (its fields follow it); 'none' = no GAN "
                              'stage'),
    },
    'data': {
        'source': Field('embedded', "'embedded' | 'folder:PATH' | 'records:PATH' | 'tfds:NAME' | "
                                    "'ava:DIR'"),
        'val_source': Field('', "held-out images; '' = a split of `source`"),
        'val_fraction': Field(0.1, 'held-out fraction of a folder source'),
        'val_max_images': Field(64, 'images validated during training (evaluate scores all)'),
        'data_dir': Field('', "tfds data_dir ('' = tfds default)"),
        'patch_size': Field(128, 'HR patch side, or (height, width); LR = patch / scale'),
        'val_patch_size': Field(256, 'HR centre crop validated in training; 0 = patch_size'),
        'degradation': Field('bicubic(4)', "ops 'name(args)|...' of degradations.OPS that make the "
                                           'input from the target'),
        'scale_degradations': Table({}, str, "a multi-scale model's degradation per scale: "
                                             "{'x2': 'bicubic(2)', ...}"),
        'realesrgan': _realesrgan_section(),
        'target_sharpen': Field('', "a same-size op applied to the loss target (e.g. 'usm(0.5)'); "
                                    "'' = none"),
        'train_on': Field('degraded', "model input in training: 'degraded' (= 'noisy') | 'clean'"),
        'degrade_on_device': Field(False, 'ship HR only and degrade inside the train step (jnp ops)'),
        'augment': Field(True, 'random flips and rot90 (BasicSR use_hflip/use_rot)'),
        'hr_resize': Field(0, '>0: fit each image to this square side before cropping'),
        'hr_resize_mode': Field('resize', "'resize' (centre square) | 'crop_or_resize' | 'stretch'"),
        'normalize': Field('none', "'none' | 'minmax' (each HR stretched to span [0, 1])"),
        'fraction': Field(1.0, 'share of the training images used'),
        'affine': {
            'rotation': Field(0.0, 'degrees: angle uniform in [-rotation, rotation]; 0 = off'),
            'shift': Field(0.0, 'fraction of the side: shift uniform in [-shift, shift]'),
            'shear': Field(0.0, 'degrees (Keras shear_range)'),
            'zoom': Field(0.0, 'per-axis scale uniform in [1 - zoom, 1 + zoom]'),
            'hflip': Field(False, "horizontal flip with probability 1/2; fill is 'nearest'"),
        },
        'num_workers': Field(0, 'grain worker processes (0 = in process)'),
        'prefetch': Field(2, 'batches staged on the device ahead of the step'),
        'stall_timeout_s': Field(600.0, 'no batch for this long: the run stops, checkpointed'),
    },
    'loss': {
        'pretrain': Table({'pixel': 1.0}, float, 'supervised stage: loss term -> weight '
                                                 '(losses.TERMS)'),
        'gan': Table({}, float, 'GAN stage: loss term -> weight (losses.TERMS)'),
        'pixel_criterion': Field('l1', "'l1' | 'l2' | 'charbonnier'"),
        'content_layer': Field('conv5_4', 'VGG19 layer of the perceptual loss'),
        'content_layers': Table({}, float, 'VGG19 layer -> weight; {} = content_layer alone'),
        'content_before_activation': Field(True, 'VGG features before their ReLU (ESRGAN)'),
        'content_criterion': Field('l1', "'l1' (ESRGAN) | 'l2' (SRGAN's MSE on VGG features)"),
        'vgg_weights': Field('', "torchvision vgg19 .pth / .npz / .safetensors; '' = random, said once"),
        'gan_type': Field('relativistic', "'relativistic' (RaGAN) | 'vanilla' (BCE)"),
        'nima_from': Field('', "NIMA of the aesthetic term: a `nima` workdir, model dir or weights; '' "
                               '= random'),
        'nima_backbone': Field('mnasnet', "that NIMA's backbone: 'mnasnet' | 'mobilenet_v2' | "
                                          "'mobilenet'"),
        'emd_r': Field(2.0, "the EMD's exponent r (NIMA's training loss)"),
        'ms_ssim_l1_alpha': Field(0.84, "ms_ssim_l1: the MS-SSIM share (Zhao et al.'s 0.84)"),
        'ffl_alpha': Field(1.0, "ffl: the spectrum weight's exponent"),
        'ffl_patch_factor': Field(1, 'ffl: patches per side, each its own spectrum'),
        'ffl_log_matrix': Field(False, 'ffl: log(1 + weight)'),
        'ldl_kernel': Field(7, "ldl: the side of the artifact map's local-variance window"),
        'lpips_net': Field('vgg', "lpips term: 'vgg' (the package's advice for a loss) | 'alex' | "
                                  "'squeeze'"),
        'lpips_weights': Field('', "its torchvision backbone .pth / .npz / .safetensors; '' = random, "
                                   'said once'),
        'lpips_heads': Field('', "its linear heads; '' = the installed lpips package's v0.1"),
        'dists_weights': Field('', "dists term: torchvision vgg16 weights; '' = random, said once"),
        'dists_alpha_beta': Field('', "its alpha/beta file; '' = the installed DISTS_pytorch's"),
    },
    'train': {
        'batch_size': Field(16, 'images per step, over all devices and hosts'),
        'num_steps': Field(100_000, 'total steps: supervised stage + GAN stage'),
        'pretrain_steps': Field(0, 'supervised steps before the GAN stage (with a discriminator)'),
        'pretrain_lr': Field(2e-4, 'learning rate of the supervised stage'),
        'g_lr': Field(1e-4, "G's learning rate in the GAN stage"),
        'd_lr': Field(1e-4, "D's learning rate"),
        'optimizer': Field('adam', "'adam' | 'adamw' (decoupled weight decay)"),
        'weight_decay': Field(0.0, 'adamw only'),
        'b1': Field(0.9, "Adam's beta1"),
        'b2': Field(0.99, "Adam's beta2"),
        'lr_schedule': Field('step', "'step' (x lr_decay at each milestone) | 'exponential'"),
        'pretrain_milestones': Field((), 'supervised-stage steps where the rate is multiplied by '
                                         'lr_decay'),
        'gan_milestones': Field((), 'steps into the GAN stage where the rate is multiplied by '
                                    'lr_decay'),
        'lr_decay': Field(0.5, 'factor per milestone, or per lr_decay_steps when exponential'),
        'lr_decay_steps': Field(0, "the exponential schedule's period in steps"),
        'lr_multipliers': Table({}, float, 'top-level param name -> factor of its learning rate; 0 '
                                           'freezes it'),
        'ema_decay': Field(0.0, 'EMA of the generator (BasicSR ema_decay); 0 = off'),
        'precision': Field('fp32', "'fp32' | 'bf16' compute; parameters stay float32"),
        'steps_per_epoch': Field(0, 'epoch length for reporting; 0 = training images // batch'),
        'log_every_steps': Field(100, 'steps between logged metrics'),
        'eval_every_steps': Field(5000, 'steps between validations and samples (BasicSR val_freq)'),
        'checkpoint_every_steps': Field(5000, 'steps between checkpoints (besides best and stage ends)'),
        'best_metric': Field('psnr', 'validation metric of the best checkpoint (psnr, ssim, lpips, '
                                     'emd, ...; lpips/dists/niqe: lower is better; auto: lpips when '
                                     'loss.lpips_weights is given, else psnr)'),
        'eval_metrics': Field(('psnr', 'ssim'), 'what validation computes: psnr, ssim (always) and any '
                                                'of lpips, dists, ms_ssim, niqe; lpips is added when '
                                                'loss.lpips_weights is given'),
        'niqe_params': Field('', "NIQE's niqe_pris_params.npz; '' = basicsr's, the cache's or "
                                 'downloaded'),
        'early_stopping_patience': Field(0, 'evaluations without a better best_metric, per stage; 0 '
                                            '= off'),
        'keep_checkpoints': Field(3, 'latest N checkpoints kept; the best is kept apart'),
        'progress': Field(True, 'a progress bar on the terminal'),
        'nan_policy': Field('stop', "a NaN/Inf loss or gradient: 'stop' (named) | 'skip' the step"),
    },
}


def _default(entry):
  if isinstance(entry, Field):
    return entry.default
  if isinstance(entry, Table):
    return ml_collections.ConfigDict(dict(entry.default))
  return ml_collections.ConfigDict({k: _default(v) for k, v in entry.items()})


def defaults():
  """The schema's defaults as an unlocked ConfigDict: where every experiment starts."""
  return _default(SCHEMA)


def complete(config):
  """CONFIG (a ConfigDict or dict, e.g. an older workdir's) with every field it lacks at its
  default; a new unlocked ConfigDict. Module fields of model/discriminator are left as given."""
  def fill(entry, given):
    if isinstance(entry, (Field, Table)):
      return given
    out = dict(given)
    for k, sub in entry.items():
      out[k] = fill(sub, given[k]) if k in given else _default(sub)
    return out
  given = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
  return ml_collections.ConfigDict(fill(SCHEMA, given))


def field_names(entry=None, prefix=''):
  """Every key of the schema (or of a section ENTRY) as 'section.field'; a Table is one key."""
  out = []
  for k, sub in (SCHEMA if entry is None else entry).items():
    if isinstance(sub, dict):
      out.extend(field_names(sub, f'{prefix}{k}.'))
    else:
      out.append(f'{prefix}{k}')
  return out


def nearest(key, choices):
  """Up to three names of CHOICES closest to KEY, comma-separated (or the first twelve)."""
  close = difflib.get_close_matches(key, choices, n=3, cutoff=0.4)
  return ', '.join(close or sorted(choices)[:12])


def _type_ok(value, default):
  """VALUE fits a field whose default is DEFAULT (an int where a float is due; None where None)."""
  if default is None or value is None:
    return default is None or value is None
  if isinstance(default, bool) or isinstance(value, bool):
    return isinstance(value, bool) and isinstance(default, bool)
  if isinstance(default, float):
    return isinstance(value, (int, float))
  if isinstance(default, (tuple, list)):
    return isinstance(value, (tuple, list, int))  # an int: a square patch_size
  if isinstance(default, int):
    return isinstance(value, int) or (isinstance(value, (tuple, list)) and len(value) == 2)
  return isinstance(value, type(default))


def check(config):
  """UserError for a key CONFIG has that the schema lacks (with the nearest names), or a value
  whose type is not its field's. Module sections check their own fields when built."""
  def walk(entry, node, prefix):
    for k, value in node.items():
      key = f'{prefix}{k}'
      if k not in entry:
        if prefix.rstrip('.') in MODULE_SECTIONS:
          continue  # a field of the named module: models.check_config builds it
        raise UserError(f'{key}: no such config key; did you mean {nearest(key, field_names())}?')
      sub = entry[k]
      if isinstance(sub, dict):
        if not isinstance(value, (dict, ml_collections.ConfigDict)):
          raise UserError(f'{key} is a section ({", ".join(sub)}), not a value ({value!r}).')
        walk(sub, value, key + '.')
      elif isinstance(sub, Table):
        if not isinstance(value, (dict, ml_collections.ConfigDict)):
          raise UserError(f'{key} maps names to values ({sub.doc}), not {value!r}.')
        for name, v in value.items():
          if not _type_ok(v, sub.type()):
            raise UserError(f'{key}.{name}={v!r}: expected a {sub.type.__name__}.')
      elif not _type_ok(value, sub.default):
        raise UserError(f'{key}={value!r}: expected a value of type {type(sub.default).__name__} '
                        f'(default {sub.default!r}).')
  walk(SCHEMA, config, '')


def is_table(key):
  """True when KEY ('loss.gan') is an open section, whose keys a `--set` may add."""
  entry = SCHEMA
  for part in key.split('.'):
    if not isinstance(entry, dict) or part not in entry:
      return False
    entry = entry[part]
  return isinstance(entry, Table)


def table_type(key):
  """The value type of the open section KEY (is_table)."""
  entry = SCHEMA
  for part in key.split('.'):
    entry = entry[part]
  return entry.type


def _module_lines(registry, indent):
  lines = []
  for name, cls in sorted(registry.items()):
    fields = [f for f in dataclasses.fields(cls)
              if f.init and f.name not in ('parent', 'name', 'dtype')]
    shown = ', '.join(f'{f.name}={f.default!r}' if f.default is not dataclasses.MISSING
                      else f.name for f in fields)
    lines.append(f'{indent}{name}: {shown}')
  return lines


def describe(prefix=''):
  """The schema as text: one line a field (`key = default  # meaning`), each module's fields, for
  the sections under PREFIX ('' = all, 'train' = the train section)."""
  lines = []

  def walk(entry, path, depth):
    for k, sub in entry.items():
      key = f'{path}{k}'
      if prefix and not (key.startswith(prefix) or prefix.startswith(key)):
        continue
      pad = '  ' * depth
      if isinstance(sub, dict):
        lines.append(f'{pad}{key}:')
        walk(sub, key + '.', depth + 1)
        if key in MODULE_SECTIONS:
          lines.append(f'{pad}  + the fields of the module {key}.name names (field=default):')
          lines.extend(_module_lines(MODULE_SECTIONS[key], pad + '    '))
      elif isinstance(sub, Table):
        lines.append(f'{pad}{key} = {dict(sub.default)!r}  # {{name: {sub.type.__name__}}}: {sub.doc}')
      else:
        lines.append(f'{pad}{key} = {sub.default!r}  # {sub.doc}')
  walk(SCHEMA, '', 0)
  return lines
