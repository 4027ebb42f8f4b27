"""Input-pipeline throughput: images/s of the grain pipeline (decode, crop, augment, degrade, batch)
by worker count, against the images/s the train step consumes.

  python benchmarks/pipeline.py --exp esrgan --workers 8
  python benchmarks/pipeline.py --exp esrgan --workers 2 --step-images-per-sec 40 --json out.json
"""

import argparse
import datetime
import json
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--exp', default='esrgan')
  p.add_argument('--workers', type=int, default=8, help='the largest worker count (0, 1, 2, 4, ..)')
  p.add_argument('--batch', type=int, default=16)
  p.add_argument('--patch', type=int, default=128)
  p.add_argument('--batches', type=int, default=40, help='batches timed per worker count')
  p.add_argument('--step-images-per-sec', type=float, default=0.0,
                 help="the train step's consumption (e.g. from throughput.py); 0 = measure it here")
  p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE', help='config override')
  p.add_argument('--json', default=None)
  return p.parse_args(argv)


def worker_counts(largest):
  counts, n = [0], 1
  while n <= largest:
    counts.append(n)
    n *= 2
  return counts if largest in counts else counts + [largest]


def pipeline_images_per_sec(ds, workers, batches, batch):
  """Images/s out of a fresh iterator (after two warm-up batches that start the workers)."""
  from enhance_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  it = input_pipeline.train_iterator(ds, workers)
  for _ in range(2):
    next(it)
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * batch / (time.perf_counter() - t0)


def main(argv=None):
  args = parse_args(argv)
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.FLAGS(sys.argv[:1], known_only=True)  # grain's worker processes read absl flags
  from enhance_jax import config as config_lib, datasets, input_pipeline  # pylint: disable=g-import-not-at-top
  config = config_lib.get_config(args.exp, [f'train.batch_size={args.batch}',
                                            f'data.patch_size={args.patch}', *args.set])
  train_src, _ = datasets.train_val_sources(config.data)
  ds = input_pipeline.train_dataset(train_src, config)
  rows = []
  for workers in worker_counts(args.workers):
    ips = pipeline_images_per_sec(ds, workers, args.batches, args.batch)
    rows.append({'workers': workers, 'images_per_sec': ips})
    print(f'{workers:2d} workers: {ips:8.1f} images/s', flush=True)
  step_ips = args.step_images_per_sec
  if not step_ips:
    import throughput  # pylint: disable=g-import-not-at-top
    targs = throughput.parse_args(['--exp', args.exp, '--stage', 'gan', '--batch', str(args.batch),
                                   '--patch', str(args.patch), '--steps', '3', '--repeats', '2',
                                   *sum((['--set', s] for s in args.set), [])])
    per_step, _ = throughput.bench_jax(targs, config)
    step_ips = args.batch / sorted(per_step)[len(per_step) // 2]
  best = max(rows, key=lambda r: r['images_per_sec'])
  result = {'exp': args.exp, 'batch': args.batch, 'patch': args.patch, 'source': config.data.source,
            'degradation': config.data.degradation, 'cpu_count': os.cpu_count(), 'rows': rows,
            'step_images_per_sec': step_ips, 'best': best,
            'headroom': best['images_per_sec'] / step_ips,
            'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}
  print(f'train step consumes {step_ips:.1f} images/s; the pipeline gives {best["images_per_sec"]:.1f} '
        f'with {best["workers"]} workers: {result["headroom"]:.2f}x (goal: at least 2x)')
  if args.json:
    pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.json).write_text(json.dumps(result, indent=2) + '\n')
  return 0


if __name__ == '__main__':
  sys.exit(main())
