"""Validation's LPIPS in JAX against the `lpips` package on the same images and the same weights
(its shipped heads, one random torchvision-layout backbone loaded into both): ms per image and the
largest difference. Both run in this process, one after the other, on all its CPU threads.

  python benchmarks/perceptual.py --net alex --images 8 --size 256 --json benchmarks/results/cpu-2core_lpips_validation.json
"""

import argparse
import datetime
import pathlib
import platform
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402  pylint: disable=wrong-import-position
import skimage.data  # noqa: E402  pylint: disable=wrong-import-position
import torch  # noqa: E402  pylint: disable=wrong-import-position

from benchmarks.throughput import versions, write_json  # noqa: E402  pylint: disable=wrong-import-position
from benchmarks.torch_reference import backbones as torch_backbones  # noqa: E402  pylint: disable=wrong-import-position
from benchmarks.torch_reference import metric_references  # noqa: E402  pylint: disable=wrong-import-position
from enhance_jax.eval import lpips  # noqa: E402  pylint: disable=wrong-import-position
from enhance_jax.io import metric_weights  # noqa: E402  pylint: disable=wrong-import-position

TWINS = {'alex': ('alexnet', torch_backbones.torch_alexnet), 'vgg': ('vgg16', torch_backbones.torch_vgg16),
         'squeeze': ('squeezenet1_1', torch_backbones.torch_squeezenet1_1)}
PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'hubble_deep_field', 'immunohistochemistry')


def pairs(n, size):
  """N (photo crop, noisy crop) pairs of SIZE x SIZE, float32 NHWC in [0, 1]."""
  rng = np.random.default_rng(0)
  x = np.stack([getattr(skimage.data, PHOTOS[i % len(PHOTOS)])()[:size, :size, :3] / 255.0
                for i in range(n)]).astype(np.float32)
  return x, np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1).astype(np.float32)


def timed(fn, repeats):
  fn()  # compile / warm up
  out = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    out.append(time.perf_counter() - t0)
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
  p.add_argument('--net', default='alex', choices=tuple(TWINS))
  p.add_argument('--images', type=int, default=8)
  p.add_argument('--size', type=int, default=256)
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--json', default=None)
  args = p.parse_args(argv)
  name, build = TWINS[args.net]
  twin = torch_backbones.randomise(build())
  reference = metric_references.lpips_package({name: twin}).LPIPS(net=args.net, pnet_rand=True,
                                                                  verbose=False).eval()
  backbone = metric_weights._BACKBONE_IMPORTERS[name](  # pylint: disable=protected-access
      {k: v.detach().numpy() for k, v in twin.state_dict().items()})
  variables = lpips.variables_of(args.net, backbone, metric_weights.load_lpips_heads(args.net))
  apply = jax.jit(lpips.LPIPS(args.net).apply)
  x, y = pairs(args.images, args.size)
  tx, ty = (torch.tensor(a).permute(0, 3, 1, 2) for a in (x, y))

  def run_torch():
    with torch.no_grad():
      return reference(tx, ty, normalize=True).reshape(-1).numpy()

  run_jax = lambda: np.asarray(jax.block_until_ready(apply(variables, x, y)))
  t_jax, t_torch = timed(run_jax, args.repeats), timed(run_torch, args.repeats)
  ms = lambda ts: 1e3 * min(ts) / args.images
  result = {'benchmark': 'lpips_validation', 'net': args.net, 'images': args.images, 'size': args.size,
            'jax_ms_per_image': ms(t_jax), 'torch_ms_per_image': ms(t_torch),
            'speedup': min(t_torch) / min(t_jax),
            'max_abs_diff': float(np.abs(run_jax() - run_torch()).max()),
            'device': jax.devices()[0].device_kind, 'host': platform.node(),
            'versions': versions(),
            'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}
  print(f"LPIPS-{args.net} {args.images} x {args.size}^2: JAX {result['jax_ms_per_image']:.1f} ms/image, "
        f"lpips package {result['torch_ms_per_image']:.1f} ms/image ({result['speedup']:.2f}x), "
        f"max diff {result['max_abs_diff']:.2g}")
  if args.json:
    write_json(args.json, result)
  return 0


if __name__ == '__main__':
  sys.exit(main())
