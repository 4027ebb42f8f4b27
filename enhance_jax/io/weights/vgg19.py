"""VGG19's 16 convs (the perceptual loss's network): one layout for `convert --arch vgg19`
(`archs.ARCHS['vgg19']`) and for `load_vgg19`, which reads only the convs a loss needs.

A file names the convs in one of three ways, bare or under `vgg.`, `vgg_net.`, `vgg.vgg_net.` or
`params/`: torchvision's `features.{i}` (vgg19-dcbb9e9d.pth), BasicSR's VGGFeatureExtractor
`conv1_1` (torch weights), or Flax `conv1_1/kernel` (an .npz `save_params_npz` wrote) ->
`models.vgg.VGG19Features` params.
"""

import functools
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from enhance_jax.errors import UserError
from enhance_jax.io.weights import converter
from enhance_jax.io.weights import files
from enhance_jax.io.weights.converter import Layout
from enhance_jax.models import vgg

VGG19_PREFIXES = ('', 'vgg.', 'vgg_net.', 'vgg.vgg_net.', 'params/')
VGG19_HINT = ("torchvision's vgg19 state_dict (e.g. vgg19-dcbb9e9d.pth), or an .npz/.safetensors "
              'with the same keys')


class _Naming(NamedTuple):
  """How a file names conv `name` (torchvision index `i`): its weight and bias keys, the key prefix
  the convs share (what `convert --arch vgg19` owns), and whether weights are torch's [out, in, kh, kw]."""
  weight: str
  bias: str
  namespace: str
  torch_layout: bool


# Looked up in this order, under each prefix in VGG19_PREFIXES' order.
_NAMINGS = (
    _Naming('features.{i}.weight', 'features.{i}.bias', 'features.', True),  # torchvision vgg19
    _Naming('{name}.weight', '{name}.bias', 'conv', True),  # BasicSR VGGFeatureExtractor (vgg_net.)
    _Naming('{name}/kernel', '{name}/bias', 'conv', False),  # Flax, as save_params_npz writes it
)


def _naming(sd: Mapping, convs: Sequence[str]) -> tuple[str, _Naming]:
  """(prefix, naming) of the first of `convs` stored in `sd` (torchvision, bare, if none is)."""
  for name in convs:
    for prefix in VGG19_PREFIXES:
      for naming in _NAMINGS:
        if prefix + naming.weight.format(i=vgg.VGG19_TORCH_INDEX[name], name=name) in sd:
          return prefix, naming
  return '', _NAMINGS[0]


def vgg19_layout(sd: Mapping, convs: Sequence[str] = vgg.VGG19_LAYERS, strict: bool = True) -> Layout:
  """The key table of `convs` (VGG19Features params, module order) under the file's prefix and naming.

  strict: other keys under the convs' prefix (`features.`, `conv`) are errors, as `convert` wants;
  False ignores every other key (a loss reads the convs it needs from a whole VGG19 file).
  """
  prefix, naming = _naming(sd, convs)
  table = {}
  for name in convs:
    i, c_in, c_out = vgg.VGG19_TORCH_INDEX[name], vgg.vgg19_in_channels(name), vgg.VGG19_CHANNELS[name]
    kernel = (c_out, c_in, 3, 3) if naming.torch_layout else (3, 3, c_in, c_out)
    table['params', f'{name}/kernel'] = (prefix + naming.weight.format(i=i, name=name), kernel)
    table['params', f'{name}/bias'] = (prefix + naming.bias.format(i=i, name=name), (c_out,))
  namespace = (prefix + naming.namespace,) if strict else ()
  return Layout({'name': 'vgg19'}, table, namespace, (), naming.torch_layout)


def vgg19_params_from_state_dict(sd: Mapping[str, np.ndarray],
                                 convs: Sequence[str] = vgg.VGG19_LAYERS) -> dict:
  """VGG19Features params (numpy) of `convs` from any supported naming and prefix, through the one
  VGG19 layout; other keys (the classifier, deeper convs) are ignored. UserError naming the first
  missing or mis-shaped key otherwise."""
  layout = vgg19_layout(sd, convs, strict=False)
  try:
    return converter.convert(sd, layout).get('params', {})
  except converter.Mismatch as err:
    raise converter.does_not_fit(layout.section, err.problems, VGG19_HINT) from None


@functools.cache
def warn_random_vgg19() -> None:
  """Says once per process (loudly) that the perceptual loss runs on random VGG19 weights."""
  msg = ('WARNING: the perceptual loss uses RANDOM VGG19 weights, so it measures nothing useful; '
         'set loss.vgg_weights=/path/to/vgg19.pth (torchvision vgg19 state_dict, e.g. '
         'vgg19-dcbb9e9d.pth, or an .npz/.safetensors of it).')
  logging.warning(msg)
  print(msg, file=sys.stderr, flush=True)


def load_vgg19(path: str | os.PathLike | None,
               layers: Sequence[str] | str = ('conv5_4',)) -> dict:
  """VGG19Features params for `layers` (only convs up to the last one) from a file, or random if None.

  Use as `VGG19Features(layers=layers).apply({'params': params}, x)`.
  """
  convs = vgg.convs_needed(layers)
  if path is None:
    warn_random_vgg19()
    model = vgg.VGG19Features(layers=(convs[-1],))
    return model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3), jnp.float32))['params']
  sd = files.load_state_dict(path)
  try:
    params = vgg19_params_from_state_dict(sd, convs)
  except UserError as err:
    raise UserError(f"Cannot use '{path}' as VGG19 weights: {err}") from err
  return jax.tree.map(jnp.asarray, params)
