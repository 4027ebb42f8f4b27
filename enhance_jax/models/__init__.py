"""Model registries (plain dicts) and builders that map a config section to a module.

Each generator states the multiple its input sides need as `input_multiple` (default 1); `hr_multiple`
turns that into the target side's multiple, which data, training, evaluate and enhance all ask for.
A generator returns an image or a dict holding one under 'image' (`as_outputs`). A rating model
(NIMA) states `makes = 'histogram'` (`output_key`): its batches are {'image', 'histogram'}, not
{'lr', 'hr'}, and it is scored by EMD and score correlations instead of PSNR (kinds.KINDS says how
the training core handles each kind).
"""

import math

import jax.numpy as jnp

from enhance_jax.errors import UserError
from enhance_jax.models.restoration_baselines import BaselineCNN, BackboneDiscriminator, BackboneGenerator, BaselineRBF
from enhance_jax.models.dcgan_sr import DCGANSRDiscriminator, DCGANSRGenerator
from enhance_jax.models.discriminator import VGGStyleDiscriminator
from enhance_jax.models.edsr import EDSR, MDSR
from enhance_jax.models.hat import HAT
from enhance_jax.models.dat import DAT
from enhance_jax.models.autoencoders import DeconvSR, DenoiseAutoencoder, DenoiseVAE, ResNetSR
from enhance_jax.models.msrresnet import MSRResNet
from enhance_jax.models.nima import NIMA
from enhance_jax.models.omnisr import OmniSR
from enhance_jax.models.rcan import RCAN
from enhance_jax.models.realplksr import RealPLKSR
from enhance_jax.models.refine import RefineAutoencoder, RefineDiscriminator, RefineGenerator
from enhance_jax.models.rrdbnet import RRDBNet
from enhance_jax.models.span import SPAN
from enhance_jax.models.srresnet import SRResNet
from enhance_jax.models.srvgg import SRVGGNetCompact
from enhance_jax.models.swinir import SwinIR
from enhance_jax.models.unet_discriminator import UNetDiscriminatorSN

GENERATORS = {'rrdbnet': RRDBNet, 'srresnet': SRResNet, 'dcgan_sr': DCGANSRGenerator,
              'refine_ae': RefineAutoencoder, 'refine_gan': RefineGenerator,
              'celeba_cnn': BaselineCNN, 'celeba_rbf': BaselineRBF, 'celeba_gan': BackboneGenerator,
              'denoise_ae': DenoiseAutoencoder, 'denoise_vae': DenoiseVAE, 'deconv_sr': DeconvSR,
              'resnet_sr': ResNetSR, 'srvgg_compact': SRVGGNetCompact, 'edsr': EDSR,
              'msrresnet': MSRResNet, 'mdsr': MDSR, 'nima': NIMA,
              # the architectures the field trains now (issue 23)
              'swinir': SwinIR, 'hat': HAT, 'dat': DAT, 'span': SPAN, 'realplksr': RealPLKSR,
              'omnisr': OmniSR, 'rcan': RCAN}
DISCRIMINATORS = {'vgg_style': VGGStyleDiscriminator, 'dcgan_sr': DCGANSRDiscriminator,
                  'refine': RefineDiscriminator, 'celeba': BackboneDiscriminator,
                  'unet_sn': UNetDiscriminatorSN}
# Config fields that are not module fields: where initial weights come from.
NOT_MODULE_FIELDS = ('name', 'backbone_weights', 'init_from')
DTYPES = {'fp32': jnp.float32, 'bf16': jnp.bfloat16}
SCALES = (1, 2, 3, 4, 8)


def _lookup(registry, name, kind):
  if name not in registry:
    raise UserError(f'unknown {kind} {name!r}; valid names: {", ".join(sorted(registry))}.')
  return registry[name]


def compute_dtype(config):
  return _lookup(DTYPES, config.train.precision, 'train.precision')


def _build(registry, section, kind, config):
  """registry[section.name](**other fields of section, dtype=compute dtype): config keys are module fields."""
  cls = _lookup(registry, section.name, kind)
  kwargs = {k: v for k, v in section.items() if k not in NOT_MODULE_FIELDS}
  try:
    return cls(**kwargs, dtype=compute_dtype(config))
  except (TypeError, ValueError) as e:
    raise UserError(f'{kind}={section.name!r} does not accept these config fields: {e}.') from None


def build_generator(config):
  """The generator named by config.model.name, its fields taken from config.model."""
  return _build(GENERATORS, config.model, 'model.name', config)


def build_discriminator(config):
  """The discriminator named by config.discriminator.name, its fields taken from config.discriminator."""
  return _build(DISCRIMINATORS, config.discriminator, 'discriminator.name', config)


def input_multiple(generator):
  """The multiple the generator's input height and width must be (its `input_multiple`, else 1)."""
  return int(getattr(generator, 'input_multiple', 1))


def train_scales(generator):
  """The scales a multi-scale generator (one with a `scales` field, e.g. MDSR) is trained and scored
  at, each batch one scale (`model.apply(..., scale=S)`, S static); () for a single-scale one."""
  return tuple(int(s) for s in getattr(generator, 'scales', ()))


def hr_multiple(config):
  """The multiple every target (HR) side must be for config.model: input multiple x scale (x the
  least common multiple of every scale for a multi-scale model: 12 for MDSR's 2, 3, 4)."""
  generator = build_generator(config)
  return input_multiple(generator) * math.lcm(config.model.scale, *train_scales(generator))


def as_outputs(out, key='image'):
  """A generator's return value as a dict with its main output under KEY (`output_key`)."""
  return out if isinstance(out, dict) else {key: out}


def output_key(generator):
  """What GENERATOR makes: 'image' (restoration and super-resolution) or 'histogram' (NIMA)."""
  return getattr(generator, 'makes', 'image')


def check_config(config):
  """UserError for a model section that cannot build (names, fields, scale, precision)."""
  compute_dtype(config)
  if config.model.scale not in SCALES:
    raise UserError(f'model.scale={config.model.scale} is not supported; use one of '
                    f'{", ".join(map(str, SCALES))}.')
  generator = build_generator(config)
  if output_key(generator) != 'image' and config.model.scale != 1:
    raise UserError(f'model {config.model.name} rates images (it makes a {output_key(generator)}); '
                    f'it has no scale: set model.scale=1 (got {config.model.scale}).')
  if output_key(generator) != 'image' and config.discriminator.name != 'none':
    raise UserError(f'model {config.model.name} rates images and trains without a discriminator; set '
                    'discriminator.name=none.')
  if config.discriminator.name != 'none':
    build_discriminator(config)
