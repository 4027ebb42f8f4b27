"""Input-pipeline throughput: images/s of the grain pipeline (decode, crop, augment, degrade, batch)
by worker count, against the images/s the train step consumes (goal: at least 2x the step's).

  python benchmarks/pipeline.py --exp esrgan --workers 8
  python benchmarks/pipeline.py --exp esrgan --workers 2 --set data.source=records:/data/div2k
  python benchmarks/pipeline.py --exp esrgan --step-images-per-sec 40 --step-device H100

What is timed is `input_pipeline.train_iterator`, as the trainer builds it. '0 workers' is the main
process alone, where grain's read threads (input_pipeline.READ_OPTIONS: 8 threads, a 16-batch
prefetch buffer) run decode .. batch; N workers are N processes, each with those threads and buffer, feeding the main
process through 1-batch queues. The buffers stock batches ahead of the consumer (with grain's default
500-batch buffer a short run once measured 50,000 images/s with 0 workers), so each worker count first draws as many batches as the
buffers hold (`buffered_batches`) and only then times a window: what comes out of it is the steady
production rate (each row also gives the warm-up's own rate, for comparison). The embedded photos
live in memory, so they are written once as PNG files and read back as `folder:` to include
decoding; `--set data.source=...` times your own dataset (and `--set data.degrade_on_device=True`
the pipeline that leaves the degradation to the step).

The step's figure is the larger of the two stages' (pretrain, L1 only, is the faster consumer), each
timed here by throughput.py's `bench_jax` unless --step-images-per-sec gives it. On a CPU-only host
the step and the pipeline share the cores, which this (timing them apart) does not capture; the JSON
records the host's load average before and after the pipeline's timing.
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOAL = 2.0  # the pipeline must give at least this many times the step's images/s
STAGES = ('pretrain', 'gan')


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--exp', default='esrgan')
  p.add_argument('--workers', type=int, default=8, help='the largest worker count (0, 1, 2, 4, ..)')
  p.add_argument('--batch', type=int, default=16)
  p.add_argument('--patch', type=int, default=128)
  p.add_argument('--batches', type=int, default=0,
                 help='batches timed per worker count (0: 4 x read threads x max(1, workers))')
  p.add_argument('--warmup', type=int, default=-1,
                 help='batches drawn before timing (-1: what the buffers hold; fewer overstate)')
  p.add_argument('--step-images-per-sec', type=float, default=0.0,
                 help="the train step's images/s (e.g. from throughput.py); 0: measure both stages")
  p.add_argument('--step-device', default='', help='the device that measured --step-images-per-sec')
  p.add_argument('--step-note', default='', help='where that figure comes from (stage, file)')
  p.add_argument('--step-steps', type=int, default=3, help='steps per timed repeat, measured here')
  p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE', help='config override')
  p.add_argument('--json', default=None)
  return p.parse_args(argv)


def worker_counts(largest):
  counts, n = [0], 1
  while n <= largest:
    counts.append(n)
    n *= 2
  return counts if largest in counts else counts + [largest]


def buffered_batches(workers):
  """Batches grain's buffers can hold ahead of the consumer with WORKERS processes (the read
  threads' prefetch buffer per process, plus each worker's queue and the main process's slot)."""
  import grain  # pylint: disable=g-import-not-at-top
  from enhance_jax.data import input_pipeline# pylint: disable=g-import-not-at-top
  read, mp = input_pipeline.READ_OPTIONS, grain.MultiprocessingOptions()
  return max(1, workers) * read.prefetch_buffer_size + workers * (mp.per_worker_buffer_size + 1)


def timed_batches(args, workers):
  from enhance_jax.data import input_pipeline# pylint: disable=g-import-not-at-top
  return args.batches or 4 * input_pipeline.READ_OPTIONS.num_threads * max(1, workers)


def check_args(args):
  """UserError for counts that cannot be timed."""
  from enhance_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  for flag, low in (('workers', 0), ('batches', 0), ('warmup', -1), ('step_images_per_sec', 0),
                    ('step_steps', 1)):
    if getattr(args, flag) < low:
      raise UserError(f'--{flag.replace("_", "-")}={getattr(args, flag)} must be at least {low}.')


def write_pngs(source, folder):
  """Writes SOURCE's images to FOLDER as PNG files."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  for i, (name, image) in enumerate(zip(source.names, source.images)):
    Image.fromarray(image).save(pathlib.Path(folder) / f'{i:03d}_{name}.png')


def train_source(config, tmp):
  """(the training source the trainer would read, a description); embedded photos are first written
  to TMP as PNG files, so reading them decodes."""
  from enhance_jax.data import datasets# pylint: disable=g-import-not-at-top
  spec = config.data.source
  if spec.partition(':')[0] == 'embedded':
    embedded, _ = datasets.train_val_sources(config.data)
    write_pngs(embedded, tmp)
    src, info = datasets.folder(tmp), {'source': 'folder', 'dataset': 'embedded, as PNG files'}
  else:
    src, info = datasets.train_val_sources(config.data)[0], {'source': spec.partition(':')[0],
                                                             'dataset': spec}
  if not config.data.get('hr_resize', 0):
    datasets.check_sizes(src, config.data.patch_size, 'data.patch_size')
  return src, {**info, 'images': len(src)}


def pipeline_row(ds, workers, warmup, batches, batch):
  """Images/s of a fresh train_iterator over DS, timed for BATCHES after WARMUP batches."""
  from enhance_jax.data import input_pipeline# pylint: disable=g-import-not-at-top
  it = input_pipeline.train_iterator(ds, workers)
  try:
    t0 = time.perf_counter()
    for _ in range(warmup):
      next(it)
    t1 = time.perf_counter()
    for _ in range(batches):
      next(it)
    seconds = time.perf_counter() - t1
  finally:
    it.close()
  warmup_rate = warmup * batch / (t1 - t0) if warmup else None
  return {'workers': workers, 'images_per_sec': batches * batch / seconds, 'warmup_batches': warmup,
          'warmup_s': t1 - t0, 'warmup_images_per_sec': warmup_rate, 'timed_batches': batches,
          'timed_s': seconds}


def measure_step(args):
  """{stage: images/s, ms/step, device} of the jitted train step, timed by throughput.bench_jax."""
  sys.path.insert(0, str(ROOT / 'benchmarks'))
  import throughput  # pylint: disable=g-import-not-at-top
  out = {}
  for stage in STAGES:
    targs = throughput.parse_args(['--exp', args.exp, '--stage', stage, '--batch', str(args.batch),
                                   '--patch', str(args.patch), '--steps', str(args.step_steps),
                                   '--repeats', '2', '--warmup', '1',
                                   *sum((['--set', s] for s in args.set), [])])
    per_step, info = throughput.bench_jax(targs, throughput.make_config(targs))
    step_s = statistics.median(per_step)
    out[stage] = {'images_per_sec': args.batch / step_s, 'ms_per_step': step_s * 1e3,
                  'device': info['device'], 'backend': info['backend'],
                  'num_devices': info['num_devices']}
    print(f'train step ({stage}) consumes {args.batch / step_s:.2f} images/s on {info["device"]}',
          flush=True)
  return out


def step_figure(args):
  """The step's images/s to compare with: the larger stage's measured here, or the given one."""
  if args.step_images_per_sec:
    return {'measured_here': False, 'given_by': '--step-images-per-sec',
            'device': args.step_device or 'unknown', 'note': args.step_note,
            'images_per_sec': args.step_images_per_sec}
  stages = measure_step(args)
  stage = max(stages, key=lambda s: stages[s]['images_per_sec'])
  return {'measured_here': True, 'device': stages[stage]['device'], 'stage': stage,
          'images_per_sec': stages[stage]['images_per_sec'], 'stages': stages}


def run(args):
  """The benchmark's result (see the module docstring)."""
  check_args(args)
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.FLAGS(sys.argv[:1], known_only=True)  # grain's worker processes read absl flags
  from enhance_jax.training import config as config_lib# pylint: disable=g-import-not-at-top
  from enhance_jax.data import input_pipeline# pylint: disable=g-import-not-at-top
  config = config_lib.get_config(args.exp, [f'train.batch_size={args.batch}',
                                            f'data.patch_size={args.patch}', *args.set])
  rows, load = [], [os.getloadavg()[0]]
  with tempfile.TemporaryDirectory(prefix='pipeline_pngs_') as tmp:
    src, source_info = train_source(config, tmp)
    ds = input_pipeline.train_dataset(src, config)
    for workers in worker_counts(args.workers):
      warmup = buffered_batches(workers) if args.warmup < 0 else args.warmup
      rows.append(pipeline_row(ds, workers, warmup, timed_batches(args, workers), args.batch))
      print(f'{workers:2d} workers: {rows[-1]["images_per_sec"]:8.1f} images/s '
            f'({warmup} batches warm-up)', flush=True)
  load.append(os.getloadavg()[0])
  step = step_figure(args)
  best = max(rows, key=lambda r: r['images_per_sec'])
  headroom = best['images_per_sec'] / step['images_per_sec']
  return {'exp': args.exp, 'batch': args.batch, 'patch': args.patch, **source_info,
          'degradation': config.data.degradation,
          'degrade_on_device': bool(config.data.get('degrade_on_device', False)),
          'host': platform.node(), 'cpu_count': os.cpu_count(), 'load_average_1min': load,
          'read_threads': input_pipeline.READ_OPTIONS.num_threads,
          'prefetch_buffer_size': input_pipeline.READ_OPTIONS.prefetch_buffer_size, 'rows': rows,
          'best': {'workers': best['workers'], 'images_per_sec': best['images_per_sec']},
          'step': step, 'step_images_per_sec': step['images_per_sec'], 'headroom': headroom,
          'goal': GOAL, 'meets_goal': headroom >= GOAL,
          'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}


def main(argv=None):
  args = parse_args(argv)
  from enhance_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  try:
    result = run(args)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  best, step = result['best'], result['step']
  verdict = 'met' if result['meets_goal'] else 'NOT met'
  print(f'train step consumes {step["images_per_sec"]:.2f} images/s'
        + (f' ({step["stage"]})' if step['measured_here'] else ' (given)')
        + f'; the pipeline gives {best["images_per_sec"]:.1f} with {best["workers"]} workers: '
        f'{result["headroom"]:.1f}x (goal {GOAL:g}x: {verdict})')
  if args.json:
    pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.json).write_text(json.dumps(result, indent=2) + '\n')
  return 0


if __name__ == '__main__':
  sys.exit(main())
