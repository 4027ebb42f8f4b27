"""A NIMA ready to score: `restore(path, backbone=None)` takes a `nima` run's workdir, a weights file
(.pth/.pt/.safetensors/.npz) or a model directory (model.json section {'name': 'nima', 'backbone':
...} + variables.npz, `weights.write_model_dir`) -> (NIMA module, variables, model section).
Its metrics (EMD, LCC, SRCC) live in metrics.py, its torchvision importers in io/weights/nima.py.
"""

import os
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from enhance_jax.errors import UserError
from enhance_jax.io import checkpoints
from enhance_jax.io import weights
from enhance_jax.io import zoo
from enhance_jax.models import nima as nima_model


def _section_model(section: Mapping) -> nima_model.NIMA:
  backbone = section.get('backbone', 'mnasnet')
  if backbone not in nima_model.SPECS:
    raise UserError(f"Unknown NIMA backbone '{backbone}'; use one of {', '.join(nima_model.SPECS)}.")
  return nima_model.NIMA(backbone=backbone, dropout=float(section.get('dropout',
                                                                        nima_model.NIMA_DROPOUT)))


def _paths(tree) -> dict[str, tuple[int, ...]]:
  """{'params/backbone/x/kernel': shape} of a nested dict of arrays (or shape structs)."""
  return {'/'.join(str(p.key) for p in kp): tuple(np.shape(v))
          for kp, v in jax.tree_util.tree_flatten_with_path(dict(tree))[0]}


def _check_tree(model: nima_model.NIMA, variables: Mapping, path: str) -> None:
  """UserError when VARIABLES' paths or shapes differ from what MODEL builds."""
  like = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
  have = _paths(variables)
  for key, shape in _paths(like).items():
    if have.get(key) != shape:
      got = 'missing' if key not in have else f'shape {have[key]}, want {shape}'
      raise UserError(f"'{path}' does not hold NIMA ({model.backbone}) variables: '{key}' is {got}; "
                      'write the model directory again.')


def _from_workdir(path: str) -> tuple[dict, dict]:
  """(model section, variables) of a `nima` training workdir's best (else latest) checkpoint."""
  if not os.path.isdir(os.path.join(path, 'checkpoints')):
    raise UserError(f"'{path}' holds no checkpoints and is not a model directory; give a nima run's "
                    'workdir, a converted NIMA model directory or NIMA weights.')
  ckpts = checkpoints.Checkpoints(path, read_only=True)
  try:
    meta, variables, _ = ckpts.generator_variables('best')
  finally:
    ckpts.close()
  model = meta.get('config', {}).get('model', {})
  if model.get('name') != 'nima':
    raise UserError(f"'{path}' is a {model.get('name')} training run, not a `nima` one; give a NIMA "
                    "run's workdir, a converted NIMA model directory or NIMA weights.")
  return {k: v for k, v in model.items() if k in ('name', 'backbone', 'dropout')}, variables


def restore(path: str | os.PathLike, backbone: str | None = None):
  """(NIMA module, variables as jnp arrays, model section) from a `nima` training workdir (its best
  checkpoint), a model directory or a weights file.

  A model directory (model.json {'name': 'nima', 'backbone': B[, 'dropout': p]} + variables.npz)
  is read as written; a file goes through `weights.load_state_dict` and `nima_params_from_state_dict`.
  Missing files and mismatched keys are UserErrors.
  """
  path = os.fspath(path)
  if os.path.isdir(path) and not weights.is_model_dir(path):
    section, variables = _from_workdir(path)
    if backbone and section.get('backbone', 'mnasnet') != backbone:
      raise UserError(f"'{path}' holds a NIMA on {section.get('backbone')}, not {backbone}; drop "
                      '--backbone or give another model.')
    model = _section_model(section)
  elif os.path.isdir(path):
    section, variables, _ = weights.read_model_dir(path)
    if section.get('name') != 'nima':
      raise UserError(f"'{path}' holds a {section.get('name')} model, not NIMA; give a NIMA model "
                      'directory or weights file.')
    if backbone and section.get('backbone', 'mnasnet') != backbone:
      raise UserError(f"'{path}' holds a NIMA on {section.get('backbone')}, not {backbone}; drop "
                      '--backbone or give another model.')
    model = _section_model(section)
    _check_tree(model, variables, path)
  elif not os.path.exists(path) and zoo.is_name(path):
    raise UserError(f"'{path}' is a released {zoo.MODELS[path].arch} super-resolution model, not a "
                    'NIMA (no NIMA is released by name); give a NIMA weights file, model directory '
                    'or nima run.')
  elif not os.path.exists(path):
    raise UserError(f"NIMA weights '{path}' do not exist; give a NIMA weights file (.pth/.safetensors/"
                    '.npz) or model directory.')
  else:
    sd = weights.load_state_dict(path)
    try:
      variables = weights.nima_params_from_state_dict(sd, backbone)
    except UserError as err:
      raise UserError(f"Cannot use '{path}' as NIMA weights: {err}") from None
    section = {'name': 'nima', 'backbone': backbone or weights.infer_backbone(sd)}
    model = _section_model(section)
  return model, jax.tree.map(jnp.asarray, variables), dict(section)
