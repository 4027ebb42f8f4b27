"""Where the compiled train step spends its time: one step under jax.profiler, XLA's ops grouped by
kind (convolutions, transposes, all-reduces, optimiser fusions, ...), per device.

  python benchmarks/op_profile.py --exp esrgan --stage pretrain --batch 4 --patch 128 --cpu-devices 2
  python benchmarks/op_profile.py --exp esrgan --stage gan --json benchmarks/results/profile.json

Takes throughput.py's flags. An op's kind is its HLO name without the numeric suffix
(`ynn_fusion.2103` -> `ynn_fusion`: a convolution run by XNNPACK on the CPU backend).
"""

import collections
import glob
import gzip
import json
import pathlib
import re
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))

import throughput  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

# Runtime bookkeeping events (Python, dispatch, waits) that contain the ops rather than being ops.
_RUNTIME = re.compile(r'^(\$|ThunkExecutor|PjitFunction|CommonPjRt|ExecuteReplicated|Wait|shard_args|'
                      r'batched_copy|BatchedCopy|end: )')


def op_kind(name):
  return re.sub(r'[.:]\d+$', '', name.split(' ')[0])


def breakdown(trace_events):
  """{kind: {'ms': total, 'count': n}} over the complete ('X') events that are XLA ops."""
  out = collections.defaultdict(lambda: {'ms': 0.0, 'count': 0})
  for e in trace_events:
    if e.get('ph') != 'X' or _RUNTIME.match(e['name']):
      continue
    row = out[op_kind(e['name'])]
    row['ms'] += e.get('dur', 0) / 1e3
    row['count'] += 1
  return dict(out)


def profile_step(args, config, trace_dir):
  import jax  # pylint: disable=g-import-not-at-top
  compiled, state, batch, vgg, _ = throughput.compile_jax_step(args, config)
  for _ in range(max(args.warmup, 1)):
    state, metrics = compiled(state, batch, vgg)
  jax.block_until_ready((state, metrics))
  jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
  t0 = time.perf_counter()
  state, metrics = compiled(state, batch, vgg)
  jax.block_until_ready((state, metrics))
  step_s = time.perf_counter() - t0
  jax.profiler.stop_trace()
  traces = sorted(glob.glob(f'{trace_dir}/**/*.trace.json.gz', recursive=True))
  with gzip.open(traces[-1]) as f:
    events = json.load(f)['traceEvents']
  return step_s, jax.device_count(), breakdown(events)


@throughput.one_line_errors
def main(argv=None):
  args = throughput.parse_args(argv)
  throughput.limit_threads(args.threads, args.cpu_devices)
  config = throughput.make_config(args)
  with tempfile.TemporaryDirectory() as trace_dir:
    step_s, devices, kinds = profile_step(args, config, trace_dir)
  total = sum(r['ms'] for r in kinds.values())
  rows = sorted(({'kind': k, **r, 'ms_per_device': r['ms'] / devices, 'share': r['ms'] / total}
                 for k, r in kinds.items()), key=lambda r: -r['ms'])
  print(f'{args.exp} {args.stage} b{args.batch} p{args.patch} {args.precision}: step {step_s * 1e3:.0f} ms '
        f'on {devices} device(s); op time per device {total / devices:.0f} ms')
  for r in rows[:15]:
    print(f'{r["ms_per_device"]:9.1f} ms/device {r["share"]:6.1%} {r["count"]:6d}  {r["kind"]}')
  if args.json:
    out = pathlib.Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({'exp': args.exp, 'stage': args.stage, 'batch': args.batch,
                               'patch': args.patch, 'precision': args.precision,
                               'threads': args.threads, 'devices': devices, 'step_ms': step_s * 1e3,
                               'op_ms_per_device': total / devices, 'ops': rows}, indent=2) + '\n')
  return 0


if __name__ == '__main__':
  sys.exit(main())
