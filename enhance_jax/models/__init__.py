"""Model registries (plain dicts) and builders that map a config section to a module."""

import jax.numpy as jnp

from enhance_jax.errors import UserError
from enhance_jax.models.dcgan_sr import DCGANSRDiscriminator, DCGANSRGenerator
from enhance_jax.models.discriminator import VGGStyleDiscriminator
from enhance_jax.models.refine import RefineAutoencoder, RefineDiscriminator, RefineGenerator
from enhance_jax.models.rrdbnet import RRDBNet
from enhance_jax.models.srgan import SRResNet

GENERATORS = {'rrdbnet': RRDBNet, 'srresnet': SRResNet, 'dcgan_sr': DCGANSRGenerator,
              'refine_ae': RefineAutoencoder, 'refine_gan': RefineGenerator}
DISCRIMINATORS = {'vgg_style': VGGStyleDiscriminator, 'dcgan_sr': DCGANSRDiscriminator,
                  'refine': RefineDiscriminator}
DTYPES = {'fp32': jnp.float32, 'bf16': jnp.bfloat16}


def _lookup(registry, name, kind):
  if name not in registry:
    raise UserError(f'unknown {kind} {name!r}; valid names: {", ".join(sorted(registry))}.')
  return registry[name]


def compute_dtype(config):
  return _lookup(DTYPES, config.train.precision, 'train.precision')


def _build(registry, section, kind, config):
  """registry[section.name](**other fields of section, dtype=compute dtype): config keys are module fields."""
  cls = _lookup(registry, section.name, kind)
  kwargs = {k: v for k, v in section.items() if k != 'name'}
  try:
    return cls(**kwargs, dtype=compute_dtype(config))
  except TypeError as e:
    raise UserError(f'{kind}={section.name!r} does not accept these config fields: {e}.') from None


def build_generator(config):
  """The generator named by config.model.name, its fields taken from config.model."""
  return _build(GENERATORS, config.model, 'model.name', config)


def build_discriminator(config):
  """The discriminator named by config.discriminator.name, its fields taken from config.discriminator."""
  return _build(DISCRIMINATORS, config.discriminator, 'discriminator.name', config)
