"""Megapixels/s of the enhance path against a PyTorch twin doing Real-ESRGAN-style tiled inference, on
the same device, photo, tile and precision, in one run:

  python benchmarks/enhance.py --json benchmarks/results/cpu-2core_enhance.json
  python benchmarks/enhance.py --models rrdbnet --size 512 --tile 256 --precision bf16   # a GPU

Both frameworks get the same weights (the twin's random state_dict converted by enhance_jax), so the
outputs are compared too. The twin follows RealESRGANer.tile_process: one tile at a time (batch 1),
each tile the core plus --tile-pad pixels of context per side, cropped and pasted without
blending. enhance_jax runs its own path (enhance_jax.infer.tiling): --batch windows per call through one
compiled program, the same core + context scheme with windows of one shape. Megapixels are of the
output image.

  python benchmarks/enhance.py --released realesrgan-x4plus:coffee,rocket \
      --json benchmarks/results/cpu-2core_enhance_defaults.json

--released times what enhance's default settings (windows of tiling.DEFAULT_TILE with the
architecture's pad) cost against running each full-size photo whole, with the released weights,
and how far the two outputs are apart in levels of 8 bits.
"""

import argparse
import datetime
import json
import math
import pathlib
import platform
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))

# name: (torch twin constructor kwargs at full size, at --tiny size)
MODELS = {
    'rrdbnet': ({'num_feat': 64, 'num_block': 23, 'num_grow_ch': 32, 'scale': 4},
                {'num_feat': 8, 'num_block': 1, 'num_grow_ch': 4, 'scale': 4}),
    'srvgg_compact': ({'num_feat': 64, 'num_conv': 32, 'upscale': 4},
                      {'num_feat': 8, 'num_conv': 2, 'upscale': 4}),
}


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
  p.add_argument('--models', default='rrdbnet,srvgg_compact')
  p.add_argument('--photo', default='chelsea', help='a scikit-image photo (chelsea: 300x451)')
  p.add_argument('--size', type=int, default=0, help='resize the photo to SIZE x SIZE (0: as is)')
  p.add_argument('--tile', type=int, default=128, help='input tile side, context included')
  p.add_argument('--tile-pad', type=int, default=8, help='context per tile side, both frameworks')
  p.add_argument('--released', default=None,
                 help='MODEL:PHOTO,PHOTO[;MODEL:PHOTO...]: enhance defaults against whole images')
  p.add_argument('--batch', type=int, default=0, help="enhance_jax's tiles per call (0: its default)")
  p.add_argument('--precision', default='fp32', choices=('fp32', 'bf16'))
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--tiny', action='store_true', help='tiny models (tests)')
  p.add_argument('--json', default=None, help='write the results here')
  p.add_argument('--child', default=None, choices=('jax', 'torch'), help=argparse.SUPPRESS)
  p.add_argument('--model', default=None, help=argparse.SUPPRESS)
  p.add_argument('--weights-file', default=None, help=argparse.SUPPRESS)
  return p.parse_args(argv)


def photo(name, size=0):
  """The fixed benchmark photo: scikit-image's NAME at its own size (a real photo's proportions, so
  neither tiler is flattered by an image that is a whole number of tiles), or resized to SIZE x SIZE."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import skimage.data  # pylint: disable=g-import-not-at-top
  import skimage.transform  # pylint: disable=g-import-not-at-top
  image = getattr(skimage.data, name)()[..., :3].astype(np.float32) / 255.0
  if size:
    image = skimage.transform.resize(image, (size, size), anti_aliasing=True)
  return np.ascontiguousarray(image, np.float32)


def torch_tiled(net, image, scale, tile, pad, device, dtype):
  """Real-ESRGAN's tile_process: cores of (tile - 2*pad) with PAD context, one tile per call."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  h, w, _ = image.shape
  core = tile - 2 * pad
  x = torch.from_numpy(image).permute(2, 0, 1)[None].to(device)
  out = torch.empty((1, 3, h * scale, w * scale), device=device)
  with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
    for ty in range(math.ceil(h / core)):
      for tx in range(math.ceil(w / core)):
        y0, x0 = ty * core, tx * core
        y1, x1 = min(y0 + core, h), min(x0 + core, w)
        py0, px0 = max(y0 - pad, 0), max(x0 - pad, 0)
        py1, px1 = min(y1 + pad, h), min(x1 + pad, w)
        sr = net(x[..., py0:py1, px0:px1]).float()
        oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
        out[..., y0 * scale:y1 * scale, x0 * scale:x1 * scale] = sr[
            ..., oy:oy + (y1 - y0) * scale, ox:ox + (x1 - x0) * scale]
  if device.type == 'cuda':
    torch.cuda.synchronize()
  return np.clip(out[0].permute(1, 2, 0).cpu().numpy(), 0, 1)


def timed(fn, repeats):
  """(seconds of each of REPEATS calls, the last result), after one untimed warm-up call."""
  result = fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    result = fn()
    times.append(time.perf_counter() - t0)
  return times, result


def twin(name, args):
  """The PyTorch module of NAME (eval mode) at the benchmark's size, seeded: the RRDBNet and
  SRVGGNetCompact twins, or for an experiment of issue 23 (architectures.TINY) spandrel's module
  with the sizes of the experiment's Flax generator."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import architectures  # pylint: disable=g-import-not-at-top
  from benchmarks.torch_reference import models as torch_models  # pylint: disable=g-import-not-at-top
  from benchmarks.torch_reference import spandrel_models  # pylint: disable=g-import-not-at-top
  from enhance_jax import models  # pylint: disable=g-import-not-at-top
  from enhance_jax.training import config as config_lib  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  if name in MODELS:
    cls = {'rrdbnet': torch_models.RRDBNet, 'srvgg_compact': torch_models.SRVGGNetCompact}[name]
    return cls(**MODELS[name][1 if args.tiny else 0]).eval()
  if name not in architectures.TINY:
    raise SystemExit(f'error: unknown --models entry {name!r}; use {", ".join([*MODELS, *architectures.TINY])}.')
  config = config_lib.get_config(name, list(architectures.TINY[name]) if args.tiny else [])
  return spandrel_models.randomize(spandrel_models.build(models.build_generator(config)))


def run_torch(args, weights_path, image):
  """(seconds per repeat, output) of Real-ESRGAN-style tiling with the twin holding WEIGHTS_PATH."""
  import torch  # pylint: disable=g-import-not-at-top
  from enhance_jax.io import weights# pylint: disable=g-import-not-at-top
  device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  net = twin(args.model, args)
  net.load_state_dict(torch.load(weights_path, weights_only=True))
  net = net.to(device)
  scale = weights.import_weights(weights.load_state_dict(weights_path))[0]['scale']
  dtype = torch.bfloat16 if args.precision == 'bf16' else torch.float32
  times, out = timed(lambda: torch_tiled(net, image, scale, args.tile, args.tile_pad,
                                         device, dtype), args.repeats)
  return {'seconds': times, 'tiles_per_call': 1, 'device': str(device)}, out


def run_jax(args, weights_path, image):
  """(seconds per repeat, output) of enhance_jax's tiled path with the converted WEIGHTS_PATH."""
  import jax  # pylint: disable=g-import-not-at-top
  from enhance_jax.infer import restoring# pylint: disable=g-import-not-at-top
  from enhance_jax.infer import tiling# pylint: disable=g-import-not-at-top
  restored = restoring.restore(weights_path)
  e = tiling.enhancer_for(restored, args.precision, tile=args.tile, pad=args.tile_pad,
                          batch=args.batch or None)
  t0 = time.perf_counter()
  e.program(e.program_shape(*image.shape[:2]))
  compile_s = time.perf_counter() - t0
  times, out = timed(lambda: e(image), args.repeats)
  return {'seconds': times, 'tiles_per_call': e.batch, 'compile_s': compile_s,
          'device': str(jax.devices()[0]), 'model': restored.model}, out


def run_child(args):
  """--child FRAMEWORK: time one framework on the saved weights, write its JSON and output."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  image = photo(args.photo, args.size)
  r, out = (run_jax if args.child == 'jax' else run_torch)(args, args.weights_file, image)
  np.save(pathlib.Path(args.json).with_suffix('.npy'), out)
  pathlib.Path(args.json).write_text(json.dumps(r))
  return 0


def bench_model(name, args, argv):
  """Both frameworks on NAME, each in its own process (in one process, whichever runs second is
  slowed by the first's thread pools), on the same weights; their speeds and outputs compared."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as tmp:
    weights_path = pathlib.Path(tmp) / f'{name}.pth'
    torch.save(twin(name, args).state_dict(), weights_path)
    runs, outs = {}, {}
    for framework in ('torch', 'jax'):
      out = pathlib.Path(tmp) / f'{framework}.json'
      subprocess.run([sys.executable, __file__, *argv, '--model', name, '--child', framework,
                      '--weights-file', str(weights_path), '--json', str(out)], check=True)
      runs[framework] = json.loads(out.read_text())
      outs[framework] = np.load(out.with_suffix('.npy'))
  mpix = outs['jax'].shape[0] * outs['jax'].shape[1] / 1e6
  for r in runs.values():
    r['megapixels_per_s'] = mpix / statistics.median(r['seconds'])
  diff = np.abs(outs['jax'] - outs['torch'])
  return {'model': runs['jax'].pop('model'), 'output_megapixels': mpix,
          'compile_s': runs['jax'].pop('compile_s'), 'jax': runs['jax'], 'torch': runs['torch'],
          'ratio': runs['jax']['megapixels_per_s'] / runs['torch']['megapixels_per_s'],
          'max_abs_diff': float(diff.max()), 'mean_abs_diff': float(diff.mean())}


def released_defaults(spec, precision):
  """{model: {photo: seconds whole and at the defaults, their ratio, output differences}} for
  SPEC 'MODEL:PHOTO,PHOTO;...': released weights on full-size photos, one process."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from enhance_jax.infer import restoring# pylint: disable=g-import-not-at-top
  from enhance_jax.infer import tiling# pylint: disable=g-import-not-at-top
  out = {}
  for part in spec.split(';'):
    name, photos = part.split(':')
    restored = restoring.restore(name)
    default = tiling.enhancer_for(restored, precision)
    whole = tiling.enhancer_for(restored, precision, tile=0)
    out[name] = {'tile': default.tile, 'pad': default.pad, 'photos': {}}
    for photo_name in photos.split(','):
      image = photo(photo_name)
      row = {'size': '{}x{}'.format(*image.shape[:2])}
      for label, e in (('whole', whole), ('defaults', default)):
        t0 = time.perf_counter()
        e.program(e.program_shape(*image.shape[:2]))  # compiled outside the timing
        row[f'{label}_compile_s'] = time.perf_counter() - t0
        t0 = time.perf_counter()
        row[label] = e(image, dtype=np.uint8).astype(np.int32)
        row[f'{label}_s'] = time.perf_counter() - t0
      diff = np.abs(row.pop('defaults') - row.pop('whole')).max(-1)
      row.update(ratio=row['defaults_s'] / row['whole_s'], max_levels=int(diff.max()),
                 frac_over_1=float((diff > 1).mean()), mean_levels=float(diff.mean()),
                 windows=len(tiling.windows(image.shape[0], default.tile, default.pad))
                 * len(tiling.windows(image.shape[1], default.tile, default.pad)))
      print(f"{name} {photo_name} {row['size']}: defaults {row['defaults_s']:.1f} s, whole "
            f"{row['whole_s']:.1f} s ({row['ratio']:.2f}x, {row['windows']} windows), max "
            f"{row['max_levels']} levels, {100 * row['frac_over_1']:.4f} % over 1", flush=True)
      out[name]['photos'][photo_name] = row
  return out


def main(argv=None):
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parse_args(argv)
  if args.child:
    return run_child(args)
  if args.released:
    import throughput  # pylint: disable=g-import-not-at-top
    result = {'benchmark': 'enhance_defaults', 'host': platform.node(),
              'versions': throughput.versions(), 'precision': args.precision,
              'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
              'models': released_defaults(args.released, args.precision)}
    if args.json:
      throughput.write_json(args.json, result)
    return 0
  import throughput  # pylint: disable=g-import-not-at-top
  parent_argv = [a for i, a in enumerate(argv) if a != '--json' and (i == 0 or argv[i - 1] != '--json')
                 and not a.startswith('--json=')]
  result = {'benchmark': 'enhance', 'host': platform.node(), 'threads': throughput.cpu_threads(),
            'versions': throughput.versions(),
            'photo': args.photo + ' {}x{}'.format(*photo(args.photo, args.size).shape[:2]),
            'tile': args.tile, 'tile_pad': args.tile_pad,
            'precision': args.precision, 'repeats': args.repeats, 'tiny': args.tiny,
            'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            'models': {}}
  for name in args.models.split(','):
    r = bench_model(name, args, parent_argv)
    result['device'] = r['jax']['device']
    result['models'][name] = r
    print(f"{name}: enhance_jax {r['jax']['megapixels_per_s']:.4g} MP/s, PyTorch tiled "
          f"{r['torch']['megapixels_per_s']:.4g} MP/s, ratio {r['ratio']:.2f}x "
          f"(max |diff| {r['max_abs_diff']:.2e}, compile {r['compile_s']:.1f} s)", flush=True)
  if args.json:
    throughput.write_json(args.json, result)
  return 0


if __name__ == '__main__':
  sys.exit(main())
