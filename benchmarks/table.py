"""The GPU table of issue 23 in one call: for the seven new architectures and ESRGAN, EDSR and
SRVGGNetCompact, the train step (bf16: images/s, MFU, peak memory) of enhance_jax against PyTorch
eager and `torch.compile` (traiNNer-redux's default), and tiled inference against PyTorch, each
framework in its own process. `benchmarks/device.sh` runs it on a GPU; `--dry-run` runs the same
calls at tiny sizes and one step on the CPU (the tests), so a device call never meets a typo.

  bash benchmarks/device.sh                        # writes benchmarks/results/<device>_table.json
  python benchmarks/table.py --dry-run --json /tmp/t.json
"""

import argparse
import datetime
import json
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks import architectures  # noqa: E402  pylint: disable=wrong-import-position

# label: (experiment, train-step overrides, HR patch, enhance --models name or None)
ROWS = {
    'swinir': ('swinir_classical_x4', (), 256, 'swinir_classical_x4'),
    'hat': ('hat_x4', (), 256, 'hat_x4'),
    'dat': ('dat_x4', (), 256, 'dat_x4'),
    'span': ('span_x4', (), 256, 'span_x4'),
    'realplksr': ('realplksr_x4', (), 256, 'realplksr_x4'),
    'omnisr': ('omnisr_x4', (), 256, 'omnisr_x4'),
    'rcan': ('rcan_x4', (), 192, 'rcan_x4'),
    'esrgan': ('esrgan', (), 128, 'rrdbnet'),
    'edsr': ('edsr', (), 96, None),
    'srvgg_compact': ('realesr_general_x4v3', (), 256, 'srvgg_compact'),
}
TINY_TRAIN = {'esrgan': ('model.num_blocks=1', 'model.num_features=8', 'model.growth_channels=4'),
              'edsr': ('model.num_blocks=1', 'model.num_features=8'),
              'realesr_general_x4v3': ('model.num_features=8', 'model.num_convs=2'),
              **architectures.TINY}


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
  p.add_argument('--rows', default=','.join(ROWS), help='labels of ROWS, comma-separated')
  p.add_argument('--batch', type=int, default=16)
  p.add_argument('--patch', type=int, default=0, help="HR patch side (0: each row's)")
  p.add_argument('--enhance-size', type=int, default=512, help='the photo resized to SIZE x SIZE')
  p.add_argument('--enhance-tile', type=int, default=256)
  p.add_argument('--enhance-pad', type=int, default=16)
  p.add_argument('--enhance-repeats', type=int, default=3)
  p.add_argument('--precision', default='bf16', choices=('fp32', 'bf16'))
  p.add_argument('--steps', type=int, default=5, help='timed steps per repeat')
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--torch-compile', type=int, default=1, choices=(0, 1),
                 help='also time torch.compile (default mode, as traiNNer-redux)')
  p.add_argument('--dry-run', action='store_true',
                 help='tiny models, batch 2, patch 32, one step: checks every call on a CPU')
  p.add_argument('--json', default=None)
  return p.parse_args(argv)


def _run(cmd, log):
  """Runs CMD (a benchmark script), its output to LOG; (ok, seconds)."""
  t0 = time.perf_counter()
  done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
  return done.returncode == 0, time.perf_counter() - t0


def _throughput(exp, patch, args, extra, out, log):
  sets = [*(TINY_TRAIN.get(exp, ()) if args.dry_run else ())]
  patch = 32 if args.dry_run else args.patch or patch
  cmd = [sys.executable, str(ROOT / 'benchmarks/throughput.py'), '--exp', exp, '--stage', 'pretrain',
         '--batch', str(2 if args.dry_run else args.batch), '--patch', str(patch),
         '--precision', args.precision, '--steps', str(1 if args.dry_run else args.steps),
         '--repeats', str(1 if args.dry_run else args.repeats), '--warmup', '1',
         *[a for s in sets for a in ('--set', s)], *extra, '--json', str(out)]
  return _run(cmd, log)


def _enhance(name, args, out, log):
  cmd = [sys.executable, str(ROOT / 'benchmarks/enhance.py'), '--models', name,
         '--precision', args.precision, '--repeats', '1' if args.dry_run else str(args.enhance_repeats),
         *(['--tiny', '--tile', '64', '--tile-pad', '8'] if args.dry_run else
           ['--size', str(args.enhance_size), '--tile', str(args.enhance_tile), '--tile-pad',
            str(args.enhance_pad)]), '--json', str(out)]
  return _run(cmd, log)


def main(argv=None):
  args = parse_args(argv)
  labels = args.rows.split(',')
  unknown = [r for r in labels if r not in ROWS]
  if unknown:
    print(f'error: unknown --rows {", ".join(unknown)}; use {", ".join(ROWS)}.', file=sys.stderr)
    return 2
  table = {'benchmark': 'device_table', 'dry_run': args.dry_run, 'settings': vars(args), 'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
               timespec='seconds'), 'rows': {}}
  failed = []
  with tempfile.TemporaryDirectory() as tmp, open(pathlib.Path(tmp) / 'log.txt', 'w+') as log:
    for label in labels:
      exp, _, patch, enhance_name = ROWS[label]
      row = table['rows'][label] = {'experiment': exp}
      runs = [('train', lambda o: _throughput(exp, patch, args, ['--compare'], o, log))]
      if args.torch_compile:
        runs.append(('train_torch_compile', lambda o: _throughput(
            exp, patch, args, ['--framework', 'torch', '--torch-compile'], o, log)))
      if enhance_name:
        runs.append(('enhance', lambda o: _enhance(enhance_name, args, o, log)))
      for what, call in runs:
        out = pathlib.Path(tmp) / f'{label}_{what}.json'
        ok, seconds = call(out)
        row[f'{what}_s'] = seconds
        if ok:
          row[what] = json.loads(out.read_text())
        else:
          failed.append(f'{label} {what}')
        print(f'{label:14s} {what:20s} {"ok" if ok else "FAILED"} in {seconds:.0f} s', flush=True)
    if failed:
      log.seek(0)
      print(log.read()[-4000:], file=sys.stderr)
  table['failed'] = failed
  if args.json:
    path = pathlib.Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table, indent=2) + '\n')
  if failed:
    print(f'error: {len(failed)} benchmark calls failed: {", ".join(failed)}.', file=sys.stderr)
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
