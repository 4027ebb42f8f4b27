"""Converts released PyTorch weights (.pth/.safetensors/...) into an enhance_jax model directory.

  python -m enhance_jax.convert RealESRGAN_x4plus.pth --out models/realesrgan_x4plus
  python -m enhance_jax.convert RealESRGAN_x2plus.pth --out models/realesrgan_x2plus
  python -m enhance_jax.convert realesr-general-x4v3.pth --out models/realesr_general_x4v3
  python -m enhance_jax.convert RRDB_ESRGAN_x4.pth --out models/esrgan_x4
  python -m enhance_jax.convert EDSR_Lx4_f256b32_DIV2K_official-76ee1c8f.pth --out models/edsr_l_x4
  python -m enhance_jax.convert edsr_baseline_x2-1bc95232.pt --out models/edsr_baseline_x2
  python -m enhance_jax.convert vgg19-dcbb9e9d.pth --out models/vgg19
  python -m enhance_jax.convert NIMA_mobilenet_v2.pth --out models/nima
  python -m enhance_jax.convert weights.safetensors --out models/mine --arch msrresnet --overwrite

The architecture (rrdbnet, srvgg_compact, msrresnet, edsr, nima, vgg19, resnet18, vgg16) is inferred from
the tensor names and its sizes (blocks, features, scale; NIMA's backbone) from their shapes; `--arch`
names it instead. A NIMA is torchvision's mobilenet_v2 or mnasnet1_0 with a 10-way `classifier.1`; the
bare ImageNet backbone (1000-way classifier) is refused: it is the nima experiment's
model.backbone_weights.
BasicSR's `params_ema` is used when a checkpoint holds it, else `params`, `state_dict` or `model`.
Before anything is written the variables are checked against the Flax module the model section builds.
OUT gets model.json (the config `model` section and where the weights came from) and variables.npz;
`enhance_jax.io.weights.read_model_dir` reads it back. A file that does not fit stops with one sentence
naming the first mismatched key, and nothing is written. An existing non-empty OUT is kept unless
--overwrite, which replaces only a model directory (atomically).
"""

import argparse
import os
import sys

import flax
from flax import traverse_util
import jax
import jax.numpy as jnp

from enhance_jax import models
from enhance_jax import stops
from enhance_jax.errors import UserError
from enhance_jax.io import checkpoints
from enhance_jax.io import image_io
from enhance_jax.io import ncnn
from enhance_jax.io import weights


def _shapes(variables):
  """{'params/a/kernel': shape} of nested variables."""
  flat = traverse_util.flatten_dict(flax.core.unfreeze(variables), sep='/')
  return {k: tuple(v.shape) for k, v in flat.items()}


def check_fits(model_section, variables):
  """Builds the module `model_section` describes and checks that `variables` are exactly its
  variables (names and shapes), then traces it on zeros; returns (input shape, output shapes)."""
  arch = weights.ARCHS[model_section['name']]
  module = arch.module(model_section)
  side = 32 * (models.input_multiple(module) if arch.generator else 1)
  x = jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)
  want = _shapes(jax.eval_shape(module.init, jax.random.PRNGKey(0), x))
  have = _shapes(variables)
  if have != want:
    first = sorted(set(have.items()) ^ set(want.items()))[0]
    raise UserError(f'The converted variables do not fit {weights.describe(model_section)} (first '
                    f'difference: {first}); report this as a bug of enhance_jax.convert.')
  out = jax.eval_shape(module.apply, variables, x)
  return x.shape, jax.tree.map(lambda a: tuple(a.shape), out)


def convert(path, out, arch=None, overwrite=False):
  """Reads PATH, infers (or takes) its architecture, checks and writes the model directory OUT.
  Returns {'model': model section, 'meta': ..., 'num_params': ..., 'check': (input, output shapes)}."""
  weights.check_out_dir(out, overwrite)  # before reading and converting the weights
  try:
    section, variables, num_keys = weights.load_weights(path, arch)
  except UserError as err:
    raise UserError(f"Cannot convert '{path}': {err}") from None
  check = check_fits(section, variables)
  source = ncnn.paths(path)[1] if ncnn.is_ncnn(path) else path  # an ncnn model's weights: its .bin
  meta = {'source': os.path.basename(os.fspath(path)), 'source_sha256': checkpoints.file_sha256(source),
          'arch': section['name'], 'num_keys': num_keys}
  weights.write_model_dir(out, section, variables, meta, overwrite=overwrite)
  num_params = sum(int(v.size) for v in jax.tree.leaves(variables))
  return {'model': section, 'meta': meta, 'num_params': num_params, 'check': check}


def main(argv=None):
  stops.begin()
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('weights', help='a .pth/.pt/.bin/.safetensors/.npz state_dict file, or an '
                      'ncnn model (NAME.param with NAME.bin beside it)')
  parser.add_argument('--out', required=True, help='the model directory to write')
  parser.add_argument('--arch', default=None,
                      help=f"{' | '.join(weights.ARCHS)} (default: inferred from the keys)")
  parser.add_argument('--overwrite', action='store_true', help='replace an existing model directory')
  args = parser.parse_args(argv)
  try:
    result = convert(args.weights, args.out, args.arch, args.overwrite)
  except UserError as e:
    print(f'error: {image_io.shown(e)}', file=sys.stderr)
    return 2
  except stops.Stopped as stop:
    print(stops.stop_sentence(stop, f'{image_io.shown(os.path.abspath(args.out))} is as it was (a model '
                                    'directory is written whole or not at all); rerun to convert'),
          file=sys.stderr, flush=True)
    return stop.exit_code
  (shape_in, shape_out), meta = result['check'], result['meta']
  print(f"read {image_io.shown(args.weights)}: {meta['num_keys']} tensors")
  print(f"architecture: {weights.describe(result['model'])}")
  print(f'checked: input {shape_in} -> output {shape_out}')
  print(f"wrote {image_io.shown(os.path.abspath(args.out))} ({result['num_params']:,} parameters)")
  return 0


if __name__ == '__main__':
  stops.finish(main())
