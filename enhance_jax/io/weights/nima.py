"""NIMA in torchvision layout (report 002): the ImageNet backbones mobilenet_v2 (`features.{i}...`) and
mnasnet1_0 (`layers.{i}...`) -> `models.nima.Backbone`, and a whole trained NIMA (backbone +
`classifier.1` Linear(C, 10)) -> `models.nima.NIMA`, its layout for `convert --arch nima` included.
The key tables themselves come from `models.nima.torch_table`.
"""

from collections.abc import Mapping

import numpy as np

from enhance_jax.errors import UserError
from enhance_jax.io.weights import converter
from enhance_jax.io.weights.converter import Layout
from enhance_jax.models import nima as models_nima

# ---------------------------------------------------------------- ImageNet backbones, and NIMA by function

_NIMA_BACKBONE_PREFIXES = ('', 'backbone.')
# A key only each torchvision layout has (its last conv), to tell the backbone from a state_dict.
NIMA_SIGNATURES = {'mobilenet_v2': 'features.18.0.weight', 'mnasnet': 'layers.14.weight'}
_NIMA_HINTS = {
    'mobilenet_v2': "torchvision's mobilenet_v2 state_dict (e.g. mobilenet_v2-b0353104.pth), or an "
                    '.npz/.safetensors with the same keys',
    'mnasnet': "torchvision's mnasnet1_0 state_dict (e.g. mnasnet1.0_top1_73.512-f206786ef8.pth), or "
               'an .npz/.safetensors with the same keys',
}


def infer_backbone(sd: Mapping) -> str:
  """'mobilenet_v2' or 'mnasnet' from the keys of SD; UserError when neither layout is there."""
  for name, key in NIMA_SIGNATURES.items():
    if any(p + key in sd for p in _NIMA_BACKBONE_PREFIXES):
      return name
  raise UserError(f'Cannot tell the NIMA backbone from the keys ({converter.clip(list(sd), 4)}); '
                  f'give --backbone {" or ".join(models_nima.IMPORTABLE)}, or '
                  f"{_NIMA_HINTS['mnasnet']}.")


def _check_importable(backbone: str) -> None:
  if backbone not in models_nima.IMPORTABLE:
    raise UserError(f"The NIMA backbone '{backbone}' has no torchvision layout to import; use one of "
                    f"{', '.join(models_nima.IMPORTABLE)}, or a model directory.")


def _nima_convert(sd: Mapping, backbone: str, layout: Layout, what: str) -> dict:
  try:
    return converter.convert(sd, layout)
  except converter.Mismatch as err:
    raise UserError(f'The weights do not fit {what}: '
                    + converter.mismatch_message(err.problems, _NIMA_HINTS[backbone])) from None


def nima_backbone_params_from_state_dict(sd: Mapping[str, np.ndarray], backbone: str) -> dict:
  """torchvision mobilenet_v2 (`features.{i}...`) or mnasnet1_0 (`layers.{i}...`) keys, bare or under
  `backbone.` -> `models.nima.Backbone(arch=backbone)` variables {'params', 'batch_stats'} (numpy).

  Every key under the backbone's prefix must be used with its shape (`num_batches_tracked` and
  `classifier.*` are ignored); UserError naming the first mismatched key otherwise.
  """
  _check_importable(backbone)
  spec = models_nima.layer_specs(backbone)
  first = next(iter(models_nima.torch_table(backbone).values()))[0]
  prefix = converter.first_prefix(sd, _NIMA_BACKBONE_PREFIXES, first)
  layout = Layout({'name': backbone}, models_nima.torch_table(backbone, prefix=prefix),
                  tuple(prefix + n for n in spec.namespace))
  return _nima_convert(sd, backbone, layout, f'the {backbone} backbone')


def nima_params_from_state_dict(sd: Mapping[str, np.ndarray], backbone: str | None = None) -> dict:
  """A whole NIMA in torchvision layout (backbone keys + `classifier.1.weight` [10, C], `.bias`) ->
  `models.nima.NIMA(backbone)` variables (numpy; the head's weight transposed to a kernel [C, 10]).

  backbone: None infers it from the keys. Every key must be used; UserError naming the first
  mismatched one otherwise.
  """
  backbone = backbone or infer_backbone(sd)
  _check_importable(backbone)
  layout = Layout({'name': 'nima', 'backbone': backbone},
                  models_nima.torch_table(backbone, head=True))
  return nima_finish(_nima_convert(sd, backbone, layout, f'NIMA ({backbone})'))


def nima_finish(variables: dict) -> dict:
  """torch Linear weight [10, C] -> Dense kernel [C, 10] (`converter.convert` transposes only convs)."""
  head = variables['params']['head']
  head['kernel'] = np.ascontiguousarray(head['kernel'].T)
  return variables


# ---------------------------------------------------------------- a whole NIMA, for convert --arch nima

# Prefixes a whole NIMA's backbone keys may carry (bare torchvision, or a wrapper's submodule).
_NIMA_PREFIXES = ('', 'backbone.', 'base_model.')
NIMA_HINT = ("a whole NIMA in torchvision layout: mobilenet_v2 (`features.*`) or mnasnet1_0 "
             "(`layers.*`) keys with the classifier replaced by Dropout + Linear(1280, 10) "
             "(`classifier.1.weight` [10, 1280], `classifier.1.bias`)")


def nima_found(sd: Mapping) -> tuple[str | None, str]:
  """(backbone, key prefix) of the torchvision NIMA backbone in `sd`, or (None, '') if none is."""
  for backbone, key in NIMA_SIGNATURES.items():
    for prefix in _NIMA_PREFIXES:
      if prefix + key in sd:
        return backbone, prefix
  return None, ''


def _nima_head_key(sd: Mapping, prefix: str) -> str:
  """The head's weight key: `classifier.1.weight` under the backbone's prefix, else bare."""
  key = prefix + 'classifier.1.weight'
  return key if key in sd else 'classifier.1.weight'


def nima_layout(sd: Mapping) -> Layout:
  """A whole NIMA (torchvision mobilenet_v2/mnasnet1_0 + 10-way `classifier.1`), bare or under a prefix;
  a backbone with an ImageNet (1000-way) or no classifier is a UserError saying how to use it."""
  backbone, prefix = nima_found(sd)
  head = _nima_head_key(sd, prefix)
  rows = getattr(sd.get(head), 'shape', (0,))[0]
  if backbone is not None and (rows == 1000 or head not in sd):
    what = 'a 1000-way ImageNet classifier' if rows == 1000 else 'no classifier.1'
    raise UserError(f'these are torchvision {backbone} ImageNet backbone weights ({what}), not a '
                    f'trained NIMA; use them as the backbone of the nima experiment (--set '
                    f'model.backbone={backbone} --set model.backbone_weights=FILE), or convert a '
                    f'trained NIMA ({NIMA_HINT}).')
  backbone = backbone or 'mnasnet'  # nothing NIMA-like (--arch nima): the table names the missing keys
  table = models_nima.torch_table(backbone, head=True, prefix=prefix)
  for leaf, key in (('kernel', head), ('bias', head.removesuffix('weight') + 'bias')):
    table['params', f'head/{leaf}'] = (key, table['params', f'head/{leaf}'][1])
  return Layout({'name': 'nima', 'backbone': backbone, 'dropout': models_nima.NIMA_DROPOUT}, table)
