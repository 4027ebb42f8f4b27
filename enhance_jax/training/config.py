"""Experiments (experiments/NAME.py -> locked ConfigDict) and `--set key=value` overrides, type-checked.

The fields, their defaults and meanings are in schema.py; an experiment starts from `base_config()`.
"""

import ast
import importlib.util
import math
import pathlib

import ml_collections

from enhance_jax import models
from enhance_jax.data import input_pipeline
from enhance_jax.errors import UserError
from enhance_jax.eval import evaluators
from enhance_jax.eval import quality
from enhance_jax.training import output_kinds
from enhance_jax.training import losses
from enhance_jax.training import schema
from enhance_jax.training import train_steps


def _experiments_dir():
  """The folder of the experiment files, whatever the install.

  setup.cfg ships the top-level folder experiments/ as the subpackage enhance_jax.experiments: a
  regular install copies it to site-packages/enhance_jax/experiments, an editable install maps the
  package name to the checkout's experiments/. A bare checkout on sys.path (nothing installed) has no
  such package: there the folder is the one next to enhance_jax/.
  """
  try:
    spec = importlib.util.find_spec('enhance_jax.experiments')
  except ImportError:
    spec = None
  if spec is not None and spec.submodule_search_locations:
    return pathlib.Path(next(iter(spec.submodule_search_locations))).resolve()
  return pathlib.Path(__file__).resolve().parents[2] / 'experiments'


EXPERIMENTS_DIR = _experiments_dir()


def list_experiments():
  """Names of the experiments shipped in experiments/, sorted."""
  return sorted(p.stem for p in EXPERIMENTS_DIR.glob('*.py') if not p.stem.startswith('_'))


def describe_experiments():
  """One line an experiment, sorted by name: `NAME  report NNN  <first line of its docstring>`.

  NNN is the file's module-level `REPORT = '...'` ('???' without one). The files are parsed, not run.
  """
  names = list_experiments()
  width = max((len(n) for n in names), default=0)
  lines = []
  for name in names:
    tree = ast.parse((EXPERIMENTS_DIR / f'{name}.py').read_text(encoding='utf-8'))
    report = '???'
    for node in tree.body:
      if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
          and any(isinstance(t, ast.Name) and t.id == 'REPORT' for t in node.targets)):
        report = str(node.value.value)
    doc = (ast.get_docstring(tree) or '').strip()
    lines.append(f'{name:<{width}}  report {report}  {doc.splitlines()[0] if doc else ""}'.rstrip())
  return lines


def load_experiment(name):
  """Runs experiments/NAME.py (or a path to a .py file) and returns its get_config(), every schema
  field present (schema.complete) and no key the schema lacks (schema.check), unlocked."""
  path = pathlib.Path(name)
  if path.suffix != '.py':
    path = EXPERIMENTS_DIR / f'{name}.py'
  if not path.is_file():
    raise UserError(f'unknown experiment {name!r}: did you mean {schema.nearest(name, list_experiments())}? '
                    '(`python -m enhance_jax.train --list` prints them all)')
  spec = importlib.util.spec_from_file_location(f'enhance_jax_experiments.{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  try:
    config = module.get_config()
  except TypeError as e:  # ConfigDict refuses a value of another type than the field's
    raise UserError(f'experiment {path}: {e}; give the field a value of its type '
                    '(python -m enhance_jax.train --help-config).') from None
  config = schema.complete(config)
  schema.check(config)
  return config


def base_config():
  """The schema's defaults (schema.defaults), unlocked: what an experiment file starts from."""
  return schema.defaults()


def supervised_run(c, *, batch_size, lr, steps_per_epoch, epochs):
  """Sets C (unlocked) to one supervised stage of EPOCHS epochs: Adam(LR, 0.9, 0.999) without decay,
  EMA or early stopping, validated and checkpointed once an epoch (reports 000 and 001)."""
  t = c.train
  t.batch_size, t.pretrain_lr, t.b2, t.pretrain_milestones = batch_size, lr, 0.999, ()
  t.num_steps, t.steps_per_epoch = epochs * steps_per_epoch, 0
  t.eval_every_steps = t.checkpoint_every_steps = steps_per_epoch
  t.ema_decay, t.early_stopping_patience, t.log_every_steps = 0.0, 0, 50
  return c


def with_nima_term(c, gamma, base=(('mse', 1.0),)):
  """Report 002's hybrid loss on C's supervised stage: the BASE terms plus GAMMA * (10 - NIMA mean
  score of the output), the NIMA frozen, from loss.nima_from ('' = random, said once), MNASNet."""
  c.loss.pretrain = ml_collections.ConfigDict({**dict(base), 'nima': gamma})
  c.loss.nima_from = ''            # a `nima` workdir, a NIMA model directory or a weights file
  c.loss.nima_backbone = 'mnasnet'  # the report's NIMA backbone ('mobilenet_v2', 'mobilenet')
  return c


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
    value = float(value)
    if key.rsplit('.', 1)[-1].endswith('lr') and not 0.0 <= value < math.inf:
      raise UserError(f'--set {key}={text}: a learning rate must be a finite number >= 0 (e.g. '
                      f'{old!r}).')
    if math.isnan(value):
      raise UserError(f'--set {key}={text}: NaN is no value; give a number such as {old!r}.')
    return value
  elif isinstance(old, (tuple, list)) and isinstance(value, (tuple, list, int, float)):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)
  elif old is None:
    return value
  raise UserError(f'--set {key}={text}: expected a value of type {type(old).__name__} '
                  f'(current value {old!r}), got {text!r}.')


def apply_overrides(config, overrides):
  """Applies ['a.b=value', ...] to a copy of CONFIG (locked, not validated); unknown keys or wrong
  types raise UserError. A key of an open section (schema.Table: loss.gan.content) may be new."""
  config = ml_collections.ConfigDict(config.to_dict())
  valid = _leaf_keys(config)
  for item in overrides:
    if '=' not in item:
      raise UserError(f'--set {item!r} is not of the form key=value (e.g. --set train.batch_size=32).')
    key, text = item.split('=', 1)
    key = key.strip()
    *parents, leaf = key.split('.')
    table = schema.is_table('.'.join(parents))
    if key not in valid and not table:
      raise UserError(f'--set {key}: no such config key; did you mean {schema.nearest(key, valid)}?')
    node = config
    for p in parents:
      node = node[p]
    old = node[leaf] if leaf in node else schema.table_type('.'.join(parents))()
    node[leaf] = _parse_value(text.strip(), old, key)
  return config.lock()


def validate(config):
  """Checks CONFIG once, before anything runs: each section by the part that owns it (model, data,
  loss, train), so a bad value is one UserError naming the key instead of a failure mid-run."""
  schema.check(config)
  models.check_config(config)
  train_steps.check_config(config)
  losses.check_config(config)
  input_pipeline.check_config(config)
  metric = config.train.best_metric
  terms = [k for section in (config.loss.pretrain, config.loss.gan) for k, w in section.items()
           if w and k not in (*losses.ADVERSARIAL, *losses.EMA_TERMS)]
  known = output_kinds.KINDS[models.output_key(models.build_generator(config))].metrics(dict.fromkeys(terms))
  if metric not in (*known, 'auto'):
    raise UserError(f'train.best_metric={metric!r}; valid: {", ".join(known)}, auto.')
  unknown = [m for m in config.train.eval_metrics if m not in (*evaluators.METRICS, *quality.BUILDERS)]
  if unknown:
    raise UserError(f'train.eval_metrics names {unknown}; valid: '
                    f'{", ".join((*evaluators.METRICS, *quality.BUILDERS))}.')
  if metric in quality.BUILDERS and metric not in quality.requested(config):
    raise UserError(f'train.best_metric={metric} is not computed: add it to train.eval_metrics, e.g. '
                    f"--set 'train.eval_metrics=(\"psnr\", \"ssim\", \"{metric}\")'.")
  side = config.data.val_patch_size or config.data.patch_size
  small = [m for m in quality.requested(config) if side < quality.MIN_SIDE.get(m, 0)]
  if small:
    raise UserError(f'train.eval_metrics {small} need validation crops of at least '
                    f'{max(quality.MIN_SIDE[m] for m in small)} pixels; data.val_patch_size is {side}.')
  train_steps.check_shapes(config)  # last: G and D built abstractly on the data's shapes


def get_config(name, overrides=(), check=True):
  """The experiment NAME with OVERRIDES applied and locked; validated unless CHECK is False (for a
  caller that validates itself: train_and_evaluate, so a command validates once)."""
  config = apply_overrides(load_experiment(name), list(overrides))
  if check:
    validate(config)
  return config
