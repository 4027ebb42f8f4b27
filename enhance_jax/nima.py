"""NIMA around the network: the EMD loss, score statistics, correlation metrics and weight loading.

  - `emd(p, q, r=2)`: NIMA's normalised Earth Mover's Distance between 10-bin histograms,
    (1/N sum_k |CDF_p(k) - CDF_q(k)|^r)^(1/r) per row (the paper and report 002 train with r = 2).
  - `lcc(pred, true)`, `srcc(pred, true)`: Pearson and Spearman correlation of mean scores.
  - `nima_backbone_params_from_state_dict(sd, backbone)`: a torchvision mobilenet_v2 / mnasnet1_0
    state_dict -> `models.nima.Backbone` variables (ImageNet initialisation; `classifier.*` ignored).
  - `nima_params_from_state_dict(sd, backbone=None)`: a whole NIMA in torchvision layout (the backbone
    keys plus `classifier.1.weight` [10, C] / `classifier.1.bias`, i.e. torchvision's model with its
    last Linear replaced by a 10-way one) -> `models.nima.NIMA` variables.
  - `restore(path, backbone=None)`: a `nima` run's workdir, a weights file (.pth/.pt/.safetensors/.npz) or a model directory
    (model.json section {'name': 'nima', 'backbone': ...} + variables.npz, `weights.write_model_dir`)
    -> (NIMA module, variables, model section).
"""

import os
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from enhance_jax import weights
from enhance_jax import zoo
from enhance_jax.errors import UserError
from enhance_jax.models import nima as nima_model
from enhance_jax.models.nima import mean_score, std_score

_PREFIXES = ('', 'backbone.')
# A key only each torchvision layout has (its last conv), to tell the backbone from a state_dict.
_SIGNATURES = {'mobilenet_v2': 'features.18.0.weight', 'mnasnet': 'layers.14.weight'}
_HINTS = {
    'mobilenet_v2': "torchvision's mobilenet_v2 state_dict (e.g. mobilenet_v2-b0353104.pth), or an "
                    '.npz/.safetensors with the same keys',
    'mnasnet': "torchvision's mnasnet1_0 state_dict (e.g. mnasnet1.0_top1_73.512-f206786ef8.pth), or "
               'an .npz/.safetensors with the same keys',
}


# ---------------------------------------------------------------- losses and metrics


def cdf(p):
  """Cumulative sums over the last axis (the CDF of each histogram)."""
  return jnp.cumsum(p, axis=-1)


def emd(p, q, r: float = 2.0):
  """NIMA's normalised EMD between histograms [..., N] (rows sum to 1) -> [...]; 0 when equal.

  (mean_k |CDF_p(k) - CDF_q(k)|^r)^(1/r). The sqrt at r = 2 has an infinite gradient at 0, so the
  loss uses a tiny floor inside it (1e-12), which changes no value above 1e-6.
  """
  p, q = jnp.asarray(p, jnp.float32), jnp.asarray(q, jnp.float32)
  d = jnp.abs(cdf(p) - cdf(q))
  m = jnp.mean(d ** r, axis=-1)
  return jnp.where(m > 0, jnp.maximum(m, 1e-12) ** (1.0 / r), 0.0)


def emd_loss(pred, true, r: float = 2.0):
  """The batch mean of `emd` (NIMA's training loss)."""
  return jnp.mean(emd(pred, true, r))


def histogram_mean_std(hist):
  """(mean, std) of the rating 1..10 of histograms [..., 10] (normalised or vote counts)."""
  hist = jnp.asarray(hist, jnp.float32)
  hist = hist / jnp.sum(hist, axis=-1, keepdims=True)
  return mean_score(hist), std_score(hist)


def lcc(pred, true) -> float:
  """Pearson linear correlation of two 1-D score arrays (nan when either is constant)."""
  a, b = np.asarray(pred, np.float64).ravel(), np.asarray(true, np.float64).ravel()
  a, b = a - a.mean(), b - b.mean()
  denom = np.sqrt((a * a).sum() * (b * b).sum())
  return float((a * b).sum() / denom) if denom > 0 else float('nan')


def _ranks(x: np.ndarray) -> np.ndarray:
  """Ranks 1..n with ties given their average rank (scipy.stats.rankdata's 'average')."""
  order = np.argsort(x, kind='mergesort')
  sorted_x = x[order]
  starts = np.r_[True, sorted_x[1:] != sorted_x[:-1]]
  group = np.cumsum(starts) - 1
  first = np.flatnonzero(starts)
  last = np.r_[first[1:], len(x)] - 1
  avg = (first + last) / 2.0 + 1.0
  ranks = np.empty(len(x), np.float64)
  ranks[order] = avg[group]
  return ranks


def srcc(pred, true) -> float:
  """Spearman rank correlation of two 1-D score arrays: Pearson of their (tie-averaged) ranks."""
  a, b = np.asarray(pred, np.float64).ravel(), np.asarray(true, np.float64).ravel()
  return lcc(_ranks(a), _ranks(b))


# ---------------------------------------------------------------- weights


def infer_backbone(sd: Mapping) -> str:
  """'mobilenet_v2' or 'mnasnet' from the keys of SD; UserError when neither layout is there."""
  for name, key in _SIGNATURES.items():
    if any(p + key in sd for p in _PREFIXES):
      return name
  raise UserError(f'Cannot tell the NIMA backbone from the keys ({weights._clip(list(sd), 4)}); '
                  f'give --backbone {" or ".join(nima_model.IMPORTABLE)}, or '
                  f"{_HINTS['mnasnet']}.")


def _check_importable(backbone: str) -> None:
  if backbone not in nima_model.IMPORTABLE:
    raise UserError(f"The NIMA backbone '{backbone}' has no torchvision layout to import; use one of "
                    f"{', '.join(nima_model.IMPORTABLE)}, or a model directory.")


# pylint: disable=protected-access  # weights' strict key-table converter, shared, not copied
def _convert(sd: Mapping, backbone: str, table: dict, namespace: tuple[str, ...], what: str) -> dict:
  try:
    return weights._convert(sd, table, namespace)
  except weights._Mismatch as err:
    raise UserError(f'The weights do not fit {what}: '
                    + weights._mismatch_message(err.problems, _HINTS[backbone])) from None


def nima_backbone_params_from_state_dict(sd: Mapping[str, np.ndarray], backbone: str) -> dict:
  """torchvision mobilenet_v2 (`features.{i}...`) or mnasnet1_0 (`layers.{i}...`) keys, bare or under
  `backbone.` -> `models.nima.Backbone(arch=backbone)` variables {'params', 'batch_stats'} (numpy).

  Every key under the backbone's prefix must be used with its shape (`num_batches_tracked` and
  `classifier.*` are ignored); UserError naming the first mismatched key otherwise.
  """
  _check_importable(backbone)
  spec = nima_model.layer_specs(backbone)
  first = next(iter(nima_model.torch_table(backbone).values()))[0]
  prefix = weights._first_prefix(sd, _PREFIXES, first)  # pylint: disable=protected-access
  table = nima_model.torch_table(backbone, prefix=prefix)
  return _convert(sd, backbone, table, tuple(prefix + n for n in spec.namespace),
                  f'the {backbone} backbone')


def nima_params_from_state_dict(sd: Mapping[str, np.ndarray], backbone: str | None = None) -> dict:
  """A whole NIMA in torchvision layout (backbone keys + `classifier.1.weight` [10, C], `.bias`) ->
  `models.nima.NIMA(backbone)` variables (numpy; the head's weight transposed to a kernel [C, 10]).

  backbone: None infers it from the keys. Every key must be used; UserError naming the first
  mismatched one otherwise.
  """
  backbone = backbone or infer_backbone(sd)
  _check_importable(backbone)
  variables = _convert(sd, backbone, nima_model.torch_table(backbone, head=True), ('',),
                       f'NIMA ({backbone})')
  head = variables['params']['head']
  head['kernel'] = np.ascontiguousarray(head['kernel'].T)
  return variables


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
  from enhance_jax import inference  # pylint: disable=g-import-not-at-top
  restored = inference.restore(path)  # UserError when PATH holds no checkpoints
  if restored.name != 'nima':
    raise UserError(f"'{path}' is a {restored.name} training run, not a `nima` one; give a NIMA run's "
                    'workdir, a converted NIMA model directory or NIMA weights.')
  return {k: v for k, v in restored.model.items() if k in ('name', 'backbone', 'dropout')}, \
      restored.variables


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
      variables = nima_params_from_state_dict(sd, backbone)
    except UserError as err:
      raise UserError(f"Cannot use '{path}' as NIMA weights: {err}") from None
    section = {'name': 'nima', 'backbone': backbone or infer_backbone(sd)}
    model = _section_model(section)
  return model, jax.tree.map(jnp.asarray, variables), dict(section)
