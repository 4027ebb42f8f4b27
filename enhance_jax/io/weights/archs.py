"""The importable architectures: `ARCHS` maps each name (rrdbnet, srvgg_compact, msrresnet, edsr,
nima, vgg19, resnet18, vgg16) to how its keys are recognised (`infer_arch`), its layout (the config
`model` section, sizes read off the shapes, and a strict key table), the Flax module that section
builds and what file to give instead. `import_weights` converts a state_dict through them,
`load_weights` a file (a state_dict or an ncnn model; `python -m enhance_jax.convert` uses it).

To add one: write a layout function returning a `converter.Layout` (see
`generators.msrresnet_layout`) and an `Arch` entry (`finish` for what the table cannot say, e.g.
NIMA's Linear weight transposed to a Dense kernel).
"""

import os
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import ml_collections
import numpy as np

from enhance_jax import models
from enhance_jax.errors import UserError
from enhance_jax.io import ncnn
from enhance_jax.io.weights import backbones
from enhance_jax.io.weights import dat
from enhance_jax.io.weights import converter
from enhance_jax.io.weights import files
from enhance_jax.io.weights import foreign
from enhance_jax.io.weights import generators
from enhance_jax.io.weights import hat
from enhance_jax.io.weights import nima
from enhance_jax.io.weights import omnisr
from enhance_jax.io.weights import rcan
from enhance_jax.io.weights import realplksr
from enhance_jax.io.weights import span
from enhance_jax.io.weights import swinir
from enhance_jax.io.weights import vgg19
from enhance_jax.io.weights.converter import Layout
from enhance_jax.models import backbones as backbone_models
from enhance_jax.models import nima as models_nima
from enhance_jax.models import vgg


def _generator(section: Mapping):
  """The generator `section` describes, built as training builds it (float32)."""
  return models.build_generator(ml_collections.ConfigDict(
      {'model': dict(section), 'train': {'precision': 'fp32'}}))


def _vgg19_module(section: Mapping):
  del section
  return vgg.VGG19Features(layers=(vgg.VGG19_LAYERS[-1],))


def _backbone_module(section: Mapping):
  return backbone_models.BACKBONES[section['name']]()


def _nima_module(section: Mapping):
  return models_nima.NIMA(backbone=section['backbone'],
                          dropout=float(section.get('dropout', models_nima.NIMA_DROPOUT)))


def _has_any(*keys: str):
  return lambda sd: any(k in sd for k in keys)


class Arch(NamedTuple):
  """One importable architecture: whether a state_dict looks like it (`detect`), its layout inferred
  from keys and shapes, the Flax module a config section builds, and what file to give instead."""
  detect: Callable[[Mapping], bool]
  layout: Callable[[Mapping], Layout]
  module: Callable[[Mapping], Any]
  hint: str
  generator: bool = True
  finish: Callable[[dict], dict] | None = None  # a last step on the converted variables


# Detection runs in this order; the first match wins (the transformers and RCAN before edsr, whose
# conv_after_body and head/tail names they share).
ARCHS = {
    'swinir': Arch(swinir.detect, swinir.layout, _generator, swinir.HINT),
    'hat': Arch(hat.detect, hat.layout, _generator, hat.HINT),
    'dat': Arch(dat.detect, dat.layout, _generator, dat.HINT),
    'span': Arch(span.detect, span.layout, _generator, span.HINT),
    'realplksr': Arch(realplksr.detect, realplksr.layout, _generator, realplksr.HINT),
    'omnisr': Arch(omnisr.detect, omnisr.layout, _generator, omnisr.HINT),
    'rcan': Arch(rcan.detect, rcan.layout, _generator, rcan.HINT),
    'rrdbnet': Arch(
        lambda sd: any(k.startswith('RRDB_trunk.') or re.match(r'body\.\d+\.rdb\d\.', k) for k in sd),
        generators.rrdbnet_layout, _generator,
        'a BasicSR/Real-ESRGAN/ESRGAN RRDBNet state_dict (e.g. RealESRGAN_x4plus.pth, '
        'RealESRGAN_x2plus.pth, RRDB_ESRGAN_x4.pth)'),
    'srvgg_compact': Arch(
        lambda sd: 'body.0.weight' in sd and getattr(sd.get('body.1.weight'), 'ndim', 0) == 1,
        generators.srvgg_layout, _generator,
        'a Real-ESRGAN SRVGGNetCompact state_dict with PReLU (e.g. realesr-general-x4v3.pth, '
        'realesr-animevideov3.pth)'),
    'msrresnet': Arch(
        lambda sd: 'upconv1.weight' in sd and 'conv_hr.weight' in sd, generators.msrresnet_layout,
        _generator,
        'a BasicSR MSRResNet state_dict (e.g. 001_MSRResNet_x4_f64b16_DIV2K_1000k_B16G1_wandb.pth)'),
    'edsr': Arch(
        _has_any('conv_after_body.weight', 'head.0.weight', 'sub_mean.weight'), generators.edsr_layout,
        _generator, 'a BasicSR or EDSR-PyTorch EDSR state_dict (e.g. '
        'EDSR_Lx4_f256b32_DIV2K_official-76ee1c8f.pth, edsr_baseline_x2-1bc95232.pt)'),
    'nima': Arch(
        lambda sd: nima.nima_found(sd)[0] is not None, nima.nima_layout, _nima_module, nima.NIMA_HINT,
        generator=False, finish=nima.nima_finish),
    'vgg19': Arch(
        _has_any(*(p + 'features.34.weight' for p in vgg19.VGG19_PREFIXES)), vgg19.vgg19_layout,
        _vgg19_module, vgg19.VGG19_HINT, generator=False),
    'resnet18': Arch(
        _has_any(*(p + 'layer1.0.conv1.weight' for p in backbones.BACKBONE_PREFIXES)),
        backbones.resnet18_layout, _backbone_module, backbones.BACKBONE_HINTS['resnet18'],
        generator=False),
    'vgg16': Arch(
        _has_any(*(p + 'features.28.weight' for p in backbones.BACKBONE_PREFIXES)),
        backbones.vgg16_layout, _backbone_module, backbones.BACKBONE_HINTS['vgg16'], generator=False),
}


def infer_arch(sd: Mapping[str, np.ndarray]) -> str:
  """The ARCHS name whose key names `sd` has (the first that matches); UserError if none does, naming
  the architecture the keys give away when it is one the importer does not convert (foreign)."""
  seen = foreign.identify(sd)
  if seen is not None:
    family, keys = seen
    raise UserError(f"These weights look like {family} (keys {converter.clip(keys, 3)}), an "
                    f"architecture enhance_jax does not import; convert one of {', '.join(ARCHS)}.")
  for name, arch in ARCHS.items():
    if arch.detect(sd):
      return name
  raise UserError(f'Unknown architecture: the keys ({converter.clip(list(sd), 4)}; top-level modules '
                  f"{', '.join(foreign.top_modules(list(sd)))}) are none that enhance_jax imports; "
                  f"convert one of {', '.join(ARCHS)} (or name it: convert --arch NAME).")


def import_weights(sd: Mapping[str, np.ndarray], arch: str | None = None) -> tuple[dict, dict]:
  """(model section, variables) for a released PyTorch state_dict, sizes inferred from its shapes.

  arch: an ARCHS name, or None to infer it from the key names (`infer_arch`). The model section is
  the config `model` section that builds the generator through `models.build_generator` (for
  vgg19/resnet18/vgg16 just {'name': ...}); variables are {'params': ...} (plus 'batch_stats' for
  resnet18 and nima) of numpy float32, nested as the Flax module's. Inferred:
    - rrdbnet: num_blocks, num_features, growth_channels, and scale from conv_first's in-channels
      (3: x4, 12: x2 and 48: x1, whose input is pixel-unshuffled); BasicSR and ESRGAN-release names.
    - srvgg_compact: num_features, num_convs, scale (PReLU activations).
    - msrresnet: num_blocks, num_features, scale (2, 3, 4).
    - edsr: num_blocks, num_features, scale (2, 3, 4, 8); BasicSR and EDSR-PyTorch names. res_scale is
      not in the weights: 0.1 when num_features is 256 (EDSR large, as both repositories configure it),
      else 1.0. EDSR-PyTorch's MeanShift convs must hold the DIV2K mean (img_range 1 if rgb_range was 1).
    - nima: backbone (mobilenet_v2 or mnasnet, keys bare or under backbone./base_model.), dropout 0.75
      (not stored): {'name': 'nima', 'backbone': B, 'dropout': 0.75}, as `nima.restore` reads it. A
      torchvision backbone with its 1000-way ImageNet classifier (or none) is a UserError saying to
      use it as the nima experiment's model.backbone_weights.
  Every key of a generator's file (for vgg19/resnet18/vgg16 every key under theirs, not classifier/fc)
  must be used with the right shape; `num_batches_tracked` is ignored. UserError otherwise, in one
  sentence naming the first mismatched key.
  """
  inferred = None
  if arch is None:
    arch = inferred = infer_arch(sd)
  if arch not in ARCHS:
    raise UserError(f"Unknown architecture '{arch}'; use one of {', '.join(ARCHS)}.")
  layout = ARCHS[arch].layout(sd)
  try:
    variables = converter.convert(sd, layout)
  except converter.Mismatch as err:
    hint = ARCHS[arch].hint
    if inferred is None:
      seen = foreign.identify(sd)
      looks_like = (f'{seen[0]} (not imported by enhance_jax)' if seen else
                    next((n for n, a in ARCHS.items() if n != arch and a.detect(sd)), None))
      hint += f'; these keys look like {looks_like} weights' if looks_like else ''
    raise converter.does_not_fit(layout.section, err.problems, hint) from None
  if ARCHS[arch].finish is not None:
    variables = ARCHS[arch].finish(variables)
  return layout.section, variables


def load_weights(path: str | os.PathLike, arch: str | None = None) -> tuple[dict, dict, int]:
  """(model section, variables, number of tensors read) of a released weights file: a state_dict
  (.pth/.safetensors/.npz, `import_weights`) or an ncnn model (NAME.param + NAME.bin, its graph
  checked against the architecture layer by layer, then imported through the same key tables)."""
  if not ncnn.is_ncnn(path):
    sd = files.load_state_dict(path)
    return (*import_weights(sd, arch), len(sd))
  section, sd = ncnn.read(path, arch)
  try:
    imported, variables = import_weights(sd, section['name'])
  except UserError as err:
    raise UserError(f"'{path}': {err}") from None
  return {**imported, **section}, variables, len(sd)


def rrdbnet_params_from_state_dict(sd: Mapping[str, np.ndarray], num_blocks: int) -> dict:
  """BasicSR (`body.{i}.rdb{j}...`) or ESRGAN (`RRDB_trunk.{i}.RDB{j}...`) keys -> RRDBNet params
  (numpy, nested as conv_first, body_{i}/rdb{j}/conv{k}, conv_body, conv_up1/2, conv_hr, conv_last),
  through the one RRDBNet layout `import_weights` uses, its block count checked against NUM_BLOCKS."""
  stored = generators.rrdbnet_blocks(sd)
  if stored and stored != num_blocks:
    raise UserError(f'The RRDBNet weights have {stored} blocks but the model has {num_blocks}; '
                    f'set model.num_blocks={stored}.')
  return import_weights(sd, 'rrdbnet')[1]['params']
