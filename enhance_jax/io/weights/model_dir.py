"""Model directories: a converted model as OUT/model.json ({'format': 1, 'kind': 'enhance_jax.model',
'model': its config `model` section, 'meta': ...}) + OUT/variables.npz (flat 'params/a/b' keys), written
atomically by `write_model_dir` (convert) and read by `read_model_dir` (enhance, evaluate, score, serve).
"""

import json
import os
import shutil
import tempfile
from collections.abc import Mapping

import numpy as np

from enhance_jax.errors import UserError
from enhance_jax.io.weights import files

MODEL_JSON = 'model.json'
VARIABLES_NPZ = 'variables.npz'
MODEL_DIR_FORMAT = 1
MODEL_DIR_KIND = 'enhance_jax.model'


def is_model_dir(path: str | os.PathLike) -> bool:
  """True for a directory holding a model.json (read it with `read_model_dir`)."""
  return os.path.isfile(os.path.join(os.fspath(path), MODEL_JSON))


def check_out_dir(out: str | os.PathLike, overwrite: bool = False) -> str:
  """OUT as an absolute path if a model directory may be written there, else UserError: OUT is a
  file, or a non-empty directory (allowed with `overwrite` only if it is a model directory)."""
  out = os.path.abspath(os.fspath(out))
  if os.path.exists(out) and not os.path.isdir(out):
    raise UserError(f"'{out}' exists and is not a directory; give a directory path for the model.")
  if os.path.isdir(out) and os.listdir(out):
    if not overwrite:
      raise UserError(f"'{out}' exists and is not empty; give another directory or allow "
                      'overwriting it (convert --overwrite).')
    if not is_model_dir(out):
      raise UserError(f"'{out}' is not empty and not a model directory, so it is not replaced even "
                      'when overwriting; give another directory.')
  return out


def write_model_dir(out: str | os.PathLike, model_section: Mapping, variables: Mapping,
                    meta: Mapping, overwrite: bool = False) -> None:
  """Writes OUT/model.json ({'format': 1, 'kind': 'enhance_jax.model', 'model': model_section,
  'meta': meta}) and OUT/variables.npz (flat 'params/a/b' keys), atomically.

  Both are written into a temporary sibling directory that then replaces OUT, so OUT is either the
  old content or the whole new model; missing parent folders are created (and removed again on
  failure). An existing non-empty OUT is refused (UserError) unless `overwrite`.
  """
  out = check_out_dir(out, overwrite)
  parent, created = os.path.dirname(out), None
  missing = parent
  while not os.path.exists(missing):  # the top-most folder this call creates, removed on failure
    created, missing = missing, os.path.dirname(missing)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(out)}.tmp-', dir=parent)
  trash = old = None
  try:
    doc = {'format': MODEL_DIR_FORMAT, 'kind': MODEL_DIR_KIND, 'model': dict(model_section),
           'meta': dict(meta)}
    with open(os.path.join(tmp, MODEL_JSON), 'w', encoding='utf-8') as f:
      json.dump(doc, f, indent=2)
      f.write('\n')
    with open(os.path.join(tmp, VARIABLES_NPZ), 'wb') as f:
      np.savez(f, **files.flatten_params(variables))
    if os.path.exists(out):  # moved aside, not deleted, until the new directory is in place
      trash = tempfile.mkdtemp(prefix=f'.{os.path.basename(out)}.old-', dir=parent)
      old = os.path.join(trash, 'model')
      os.replace(out, old)
    os.replace(tmp, out)
  except BaseException:
    if old is not None and os.path.exists(old) and not os.path.exists(out):
      os.replace(old, out)  # the old model back
      os.rmdir(trash)
    shutil.rmtree(tmp, ignore_errors=True)
    if created:
      shutil.rmtree(created, ignore_errors=True)
    raise
  if trash is not None:
    shutil.rmtree(trash, ignore_errors=True)


def read_model_dir(path: str | os.PathLike) -> tuple[dict, dict, dict]:
  """(model section, variables (nested numpy), meta) of a directory written by `write_model_dir`."""
  path = os.fspath(path)
  hint = 'give a directory written by python -m enhance_jax.convert'
  if not is_model_dir(path):
    raise UserError(f"'{path}' is not a model directory (no {MODEL_JSON}); {hint}.")
  try:
    with open(os.path.join(path, MODEL_JSON), encoding='utf-8') as f:
      doc = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as err:
    raise UserError(f"'{os.path.join(path, MODEL_JSON)}' is corrupt ({err}); convert the weights "
                    'again.') from err
  if (not isinstance(doc, dict) or doc.get('kind') != MODEL_DIR_KIND
      or not isinstance(doc.get('model'), dict) or 'name' not in doc['model']):
    raise UserError(f"'{os.path.join(path, MODEL_JSON)}' is not an enhance_jax model description; "
                    f'{hint}.')
  if doc.get('format') != MODEL_DIR_FORMAT:
    raise UserError(f"'{path}' has model format {doc.get('format')!r}, this version reads "
                    f'{MODEL_DIR_FORMAT}; convert the weights again with this version.')
  npz = os.path.join(path, VARIABLES_NPZ)
  if not os.path.isfile(npz):
    raise UserError(f"'{path}' has no {VARIABLES_NPZ}; convert the weights again.")
  return doc['model'], files.unflatten_params(files.read_npz(npz)), doc.get('meta', {})
