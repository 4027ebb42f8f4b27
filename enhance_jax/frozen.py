"""Frozen networks that losses run (VGG19 today; NIMA and backbones next), one registry by name.

`FROZEN[name](config) -> (module, variables)`: the trainer loads those the loss terms need
(`losses.NEEDS`) into one pytree `{name: variables}` that reaches every step beside the batch,
replicated, never donated and never optimised; the steps see `{name: x -> module.apply(vars, x)}`.
"""

import functools

from enhance_jax import losses
from enhance_jax import models
from enhance_jax.errors import UserError


def vgg19(config):
  """torchvision VGG19 features up to the last content layer, from loss.vgg_weights (random if unset)."""
  from enhance_jax import weights  # pylint: disable=g-import-not-at-top
  l = config.loss
  return vgg19_module(config), {'params': weights.load_vgg19(l.vgg_weights or None,
                                                             tuple(losses.content_layers(l)))}


def vgg19_module(config):
  """The VGG19Features module the content loss runs (no weights read)."""
  from enhance_jax.models.vgg import VGG19Features  # pylint: disable=g-import-not-at-top
  l = config.loss
  return VGG19Features(layers=tuple(losses.content_layers(l)),
                       before_activation=l.content_before_activation,
                       dtype=models.compute_dtype(config))


FROZEN = {'vgg19': vgg19}
MODULES = {'vgg19': vgg19_module}   # the module alone (no weights read): for tasks and shapes


def modules(names, config):
  """{name: module} for NAMES, without reading any weights."""
  unknown = [n for n in names if n not in MODULES]
  if unknown:
    raise UserError(f'unknown frozen networks {unknown}; valid: {", ".join(sorted(MODULES))}.')
  return {n: MODULES[n](config) for n in names}


def load(names, config):
  """{name: variables} for NAMES (weights files read now; errors name the file)."""
  return {n: FROZEN[n](config)[1] for n in names}


def bind(mods, variables):
  """{name: x -> features}: each module applied with its frozen variables (inside a step)."""
  return {n: functools.partial(m.apply, variables[n]) for n, m in mods.items() if n in variables}
