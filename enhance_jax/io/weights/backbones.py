"""Pretrained backbones: torchvision ResNet18 and VGG16 (`conv1`, `layer{i}.{j}...`, `features.{i}`,
bare or under `backbone.`) -> the `backbone` submodule of report 000's CelebA generator and
discriminator, their layouts for `convert --arch resnet18|vgg16`; `load_backbone` for those and NIMA's
(mobilenet_v2, mnasnet), and `with_backbone_weights`, which puts them into a train state.
"""

import functools
import logging
import os
import sys
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from enhance_jax.errors import UserError
from enhance_jax.io.weights import converter
from enhance_jax.io.weights import files
from enhance_jax.io.weights import nima
from enhance_jax.io.weights.converter import Layout
from enhance_jax.io.weights.converter import Table
from enhance_jax.models import backbones as backbone_models

# Prefixes a backbone's torchvision keys may carry (a bare torchvision model, or a generator's submodule).
BACKBONE_PREFIXES = ('', 'backbone.')
BACKBONE_HINTS = {
    'resnet18': "torchvision's resnet18 state_dict (e.g. resnet18-f37072fd.pth), or an .npz/.safetensors "
                'with the same keys',
    'vgg16': "torchvision's vgg16 state_dict (e.g. vgg16-397923af.pth), or an .npz/.safetensors with "
             'the same keys',
    'alexnet': "torchvision's alexnet state_dict (e.g. alexnet-owt-7be5be79.pth), or an .npz/.safetensors "
               'with the same keys',
    'squeezenet1_1': "torchvision's squeezenet1_1 state_dict (e.g. squeezenet1_1-b8a52dc0.pth), or an "
                     '.npz/.safetensors with the same keys',
    'mobilenet_v2': "torchvision's mobilenet_v2 state_dict (e.g. mobilenet_v2-b0353104.pth) as "
                    'model.backbone_weights',
    'mnasnet': "torchvision's mnasnet1_0 state_dict (e.g. mnasnet1.0_top1_73.512-f206786ef8.pth) as "
               'model.backbone_weights',
    'mobilenet': 'model.backbone=mnasnet or mobilenet_v2 with a torchvision ImageNet state_dict (MobileNet '
                 'v1 has no torchvision layout to import)',
}


# ---------------------------------------------------------------- ResNet18, VGG16: tables and layouts


def resnet18_table() -> Table:
  """{(collection, Flax path): (torch key, torch shape)} for ResNet18Features, in module order."""
  table = {}

  def conv(path, key, c_in, c_out, k):
    table['params', f'{path}/kernel'] = (f'{key}.weight', (c_out, c_in, k, k))

  def bn(path, key, c):
    table['params', f'{path}/scale'] = (f'{key}.weight', (c,))
    table['params', f'{path}/bias'] = (f'{key}.bias', (c,))
    table['batch_stats', f'{path}/mean'] = (f'{key}.running_mean', (c,))
    table['batch_stats', f'{path}/var'] = (f'{key}.running_var', (c,))

  conv('conv1', 'conv1', 3, 64, 7)
  bn('bn1', 'bn1', 64)
  c_in = 64
  for layer, c_out, strides in backbone_models.RESNET18_LAYERS:
    for i in range(backbone_models.RESNET18_BLOCKS):
      path, key = f'{layer}_{i}', f'{layer}.{i}'
      conv(f'{path}/conv1', f'{key}.conv1', c_in, c_out, 3)
      bn(f'{path}/bn1', f'{key}.bn1', c_out)
      conv(f'{path}/conv2', f'{key}.conv2', c_out, c_out, 3)
      bn(f'{path}/bn2', f'{key}.bn2', c_out)
      if i == 0 and (strides != 1 or c_in != c_out):
        conv(f'{path}/downsample_0', f'{key}.downsample.0', c_in, c_out, 1)
        bn(f'{path}/downsample_1', f'{key}.downsample.1', c_out)
      c_in = c_out
  return table


def vgg16_table() -> Table:
  """{('params', Flax path): (torch key, torch shape)} for VGG16Features, in module order."""
  table = {}
  for index, c_in, c_out in backbone_models.vgg16_conv_indices():
    converter.conv_rows(table, f'features_{index}', f'features.{index}', c_in, c_out)
  return table


def alexnet_table() -> Table:
  """{('params', Flax path): (torch key, torch shape)} for AlexNetFeatures."""
  table, c_in = {}, 3
  for index, c_out, k, _, _ in backbone_models.ALEXNET_CONVS:
    converter.conv_rows(table, f'features_{index}', f'features.{index}', c_in, c_out, k)
    c_in = c_out
  return table


def squeezenet1_1_table() -> Table:
  """{('params', Flax path): (torch key, torch shape)} for SqueezeNetFeatures."""
  table = {}
  converter.conv_rows(table, 'features_0', 'features.0', 3, 64)
  c_in = 64
  for index, (squeeze, expand) in backbone_models.SQUEEZENET_FIRES.items():
    path, key = f'features_{index}', f'features.{index}'
    converter.conv_rows(table, f'{path}/squeeze', f'{key}.squeeze', c_in, squeeze, 1)
    converter.conv_rows(table, f'{path}/expand1x1', f'{key}.expand1x1', squeeze, expand, 1)
    converter.conv_rows(table, f'{path}/expand3x3', f'{key}.expand3x3', squeeze, expand, 3)
    c_in = 2 * expand
  return table


def _layout(sd: Mapping, name: str, table: Table, namespace: tuple[str, ...]) -> Layout:
  """TABLE under the prefix the file uses; keys under the backbone's NAMESPACE the table does not know
  (another depth's blocks, a BatchNorm VGG) are unexpected, others (`fc.*`, `classifier.*`) ignored."""
  prefix = converter.first_prefix(sd, BACKBONE_PREFIXES, next(iter(table.values()))[0])
  return Layout({'name': name}, converter.prefixed(table, prefix),
                tuple(prefix + n for n in namespace))


def resnet18_layout(sd: Mapping) -> Layout:
  return _layout(sd, 'resnet18', resnet18_table(), ('conv1.', 'bn1.', 'layer'))


def vgg16_layout(sd: Mapping) -> Layout:
  return _layout(sd, 'vgg16', vgg16_table(), ('features.',))


def alexnet_layout(sd: Mapping) -> Layout:
  return _layout(sd, 'alexnet', alexnet_table(), ('features.',))


def squeezenet1_1_layout(sd: Mapping) -> Layout:
  return _layout(sd, 'squeezenet1_1', squeezenet1_1_table(), ('features.',))


def _variables(sd: Mapping[str, np.ndarray], layout: Layout) -> dict:
  """Converts `sd` by `layout`; raises UserError naming the first missing, mis-shaped or unexpected key."""
  try:
    return converter.convert(sd, layout)
  except converter.Mismatch as err:
    raise UserError(converter.mismatch_message(
        err.problems, BACKBONE_HINTS[layout.section['name']])) from None


def resnet18_params_from_state_dict(sd: Mapping[str, np.ndarray]) -> dict:
  """torchvision resnet18 keys (`conv1`, `bn1`, `layer{1-4}.{0,1}.{conv,bn}{1,2}`, `.downsample.{0,1}`,
  bare or under `backbone.`) -> ResNet18Features variables {'params': ..., 'batch_stats': ...} (numpy).
  `fc.*` and `num_batches_tracked` are ignored."""
  return _variables(sd, resnet18_layout(sd))


def vgg16_params_from_state_dict(sd: Mapping[str, np.ndarray]) -> dict:
  """torchvision vgg16 keys (`features.{i}` for the 13 convs, bare or under `backbone.`) ->
  VGG16Features variables {'params': ...} (numpy). `classifier.*` is ignored."""
  return _variables(sd, vgg16_layout(sd))


def alexnet_params_from_state_dict(sd: Mapping[str, np.ndarray]) -> dict:
  """torchvision alexnet keys (`features.{0,3,6,8,10}`) -> AlexNetFeatures variables (numpy);
  `classifier.*` is ignored."""
  return _variables(sd, alexnet_layout(sd))


def squeezenet1_1_params_from_state_dict(sd: Mapping[str, np.ndarray]) -> dict:
  """torchvision squeezenet1_1 keys (`features.0`, `features.{i}.{squeeze,expand1x1,expand3x3}`) ->
  SqueezeNetFeatures variables (numpy); `classifier.*` is ignored."""
  return _variables(sd, squeezenet1_1_layout(sd))


# ---------------------------------------------------------------- loading a backbone by name


def _nima_backbone(arch: str):
  """The importer of NIMA's torchvision ImageNet backbone ARCH (mobilenet_v2 or mnasnet)."""
  return lambda sd: nima.nima_backbone_params_from_state_dict(sd, arch)


_BACKBONE_IMPORTERS = {'resnet18': resnet18_params_from_state_dict, 'vgg16': vgg16_params_from_state_dict,
                       'mobilenet_v2': _nima_backbone('mobilenet_v2'), 'mnasnet': _nima_backbone('mnasnet')}
# Backbones with no torchvision layout to import (NIMA's MobileNet v1): random, said once.
_RANDOM_ONLY_BACKBONES = ('mobilenet',)


@functools.cache
def warn_random_backbone(name: str) -> None:
  """Says once per process and backbone that it starts from random, not ImageNet, weights."""
  msg = (f'WARNING: the {name} backbone uses RANDOM weights, not ImageNet-pretrained ones; give '
         f'{BACKBONE_HINTS[name]} to start from them.')
  logging.warning(msg)
  print(msg, file=sys.stderr, flush=True)


def load_backbone(name: str, path: str | os.PathLike | None) -> dict | None:
  """Variables of the `backbone` submodule of report 000's CelebAGenerator/CelebADiscriminator, or of
  report 002's NIMA (mobilenet_v2, mnasnet: torchvision ImageNet weights; mobilenet: random only).

  name: 'resnet18' or 'vgg16' ('conv' has no pretrained weights: None, and a path is an error).
  path: a torchvision state_dict file (.pth/.pt/.bin/.safetensors/.npz); None or '' gives None after a
  one-time warning that the backbone is random. Returns {'params': ..., 'batch_stats': ...} (resnet18)
  or {'params': ...} (vgg16) of jnp arrays, to put under params['backbone'] (and batch_stats['backbone']).
  """
  if name == 'conv':
    if path:
      raise UserError(f"The 'conv' backbone has no pretrained weights, but a weights file '{path}' was "
                      'given; remove it or choose the resnet18 or vgg16 backbone.')
    return None
  if name in _RANDOM_ONLY_BACKBONES and path:
    raise UserError(f"The '{name}' backbone has no importable ImageNet layout, but a weights file "
                    f"'{path}' was given; use {BACKBONE_HINTS[name]}.")
  if name not in _BACKBONE_IMPORTERS and name not in _RANDOM_ONLY_BACKBONES:
    raise UserError(f"Unknown backbone '{name}'; use one of conv, {', '.join(_BACKBONE_IMPORTERS)}.")
  if not path:
    warn_random_backbone(name)
    return None
  sd = files.load_state_dict(path)
  try:
    variables = _BACKBONE_IMPORTERS[name](sd)
  except UserError as err:
    raise UserError(f"Cannot use '{path}' as {name} weights: {err}") from err
  return jax.tree.map(jnp.asarray, variables)


def with_backbone_weights(state, config):
  """STATE with G's and D's 'backbone' submodules loaded from model/discriminator.backbone_weights
  (torchvision ResNet18/VGG16 state_dicts); a backbone without a file stays random, said once."""
  changes = {}
  for section, params, stats in ((config.model, 'g_params', 'g_stats'),
                                 (config.discriminator, 'd_params', 'd_stats')):
    name = section.get('backbone', 'conv')
    if name == 'conv' and not section.get('backbone_weights', ''):
      continue
    loaded = load_backbone(name, section.get('backbone_weights', '') or None)
    if loaded is None:
      continue
    place = lambda tree, like: jax.tree.map(lambda a, b: jax.device_put(jnp.asarray(a, b.dtype),
                                                                        b.sharding), tree, like)
    old = getattr(state, params)
    changes[params] = {**old, 'backbone': place(loaded['params'], old['backbone'])}
    if 'batch_stats' in loaded:
      old_stats = getattr(state, stats)
      changes[stats] = {**old_stats, 'backbone': place(loaded['batch_stats'], old_stats['backbone'])}
  if 'g_params' in changes and state.ema_params is not None:
    changes['ema_params'] = jax.tree.map(jnp.copy, changes['g_params'])
  return state.replace(**changes)
