"""Frozen networks that losses run (VGG19 for the perceptual loss, NIMA for report 002's aesthetic
term, LPIPS and DISTS for the terms of their names), one registry by name.

`FROZEN[name](config) -> (module, variables)`: the trainer loads those the loss terms need
(`losses.NEEDS`) into one pytree `{name: variables}` that reaches every step beside the batch,
replicated, never donated and never optimised; the steps see `{name: x -> module.apply(vars, x)}`.
"""

import functools

import jax
import jax.numpy as jnp

from enhance_jax import models
from enhance_jax.errors import UserError
from enhance_jax.eval.dists import DISTS
from enhance_jax.eval.lpips import LPIPS
from enhance_jax.eval import quality
from enhance_jax.io import nima_restore
from enhance_jax.io import weights
from enhance_jax.models.nima import NIMA
from enhance_jax.models.vgg import VGG19Features
from enhance_jax.training import losses


def vgg19(config):
  """torchvision VGG19 features up to the last content layer, from loss.vgg_weights (random if unset)."""
  l = config.loss
  return vgg19_module(config), {'params': weights.load_vgg19(l.vgg_weights or None,
                                                             tuple(losses.content_layers(l)))}


def vgg19_module(config):
  """The VGG19Features module the content loss runs (no weights read)."""
  l = config.loss
  return VGG19Features(layers=tuple(losses.content_layers(l)),
                       before_activation=l.content_before_activation,
                       dtype=models.compute_dtype(config))


def nima_module(config):
  """Report 002's NIMA (loss.nima_backbone) that the aesthetic loss term runs (no weights read)."""
  return NIMA(backbone=config.loss.nima_backbone, dtype=models.compute_dtype(config))


def nima(config):
  """NIMA from loss.nima_from (a NIMA model directory or weights file), else random, said once."""
  module, path = nima_module(config), config.loss.nima_from
  if path:
    _, variables, section = nima_restore.restore(path)
    if section['backbone'] != module.backbone:
      raise UserError(f"loss.nima_from={path} holds a NIMA on {section['backbone']}; set "
                      f"loss.nima_backbone={section['backbone']}.")
    return module, variables
  warn_random_nima()
  return module, jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3), jnp.float32))


@functools.cache
def warn_random_nima():
  """Says once per process that the aesthetic term scores with an untrained NIMA."""
  import logging  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  msg = ('WARNING: the NIMA loss term uses a RANDOM NIMA, so it rewards nothing meaningful; set '
         'loss.nima_from to a NIMA model directory or weights file (a `nima` run, or converted).')
  logging.warning(msg)
  print(msg, file=sys.stderr, flush=True)


def lpips_module(config):
  """LPIPS on loss.lpips_net, (image, target) -> [N] (no weights read)."""
  return LPIPS(config.loss.lpips_net)


def lpips(config):
  """LPIPS from loss.lpips_weights (a torchvision backbone; random, said once, if unset) and the
  lpips package's heads (or loss.lpips_heads)."""
  return lpips_module(config), quality.lpips_variables(config.loss)


def dists_module(config):
  """DISTS, (image, target) -> [N] (no weights read)."""
  del config
  return DISTS()


def dists(config):
  """DISTS from loss.dists_weights (a torchvision vgg16; random, said once, if unset) and the
  DISTS_pytorch package's alpha and beta (or loss.dists_alpha_beta)."""
  return dists_module(config), quality.dists_variables(config.loss)


FROZEN = {'vgg19': vgg19, 'nima': nima, 'lpips': lpips, 'dists': dists}
# the module alone: for tasks and shapes
MODULES = {'vgg19': vgg19_module, 'nima': nima_module, 'lpips': lpips_module, 'dists': dists_module}


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
