"""Device memory of one compiled train step, with and without `model.remat` (XLA's memory_analysis of
the compiled program: on a GPU the buffers the step holds; on the CPU the same estimate, no GPU
needed). The figure issue 23 asks for: HAT-L at batch 4, LR patch 64 (HR 256).

  python benchmarks/memory.py --exp hat_x4 --set model.size=... --batch 4 --patch 256 \
      --json benchmarks/results/cpu-compiled_hat_l_memory_b4_p256.json
"""

import argparse
import datetime
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from benchmarks.throughput import lower_jax_step, make_config, one_line_errors, versions, write_json  # noqa: E402  pylint: disable=wrong-import-position


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
  p.add_argument('--exp', default='hat_x4')
  p.add_argument('--stage', default='pretrain', choices=('pretrain', 'gan'))
  p.add_argument('--batch', type=int, default=4)
  p.add_argument('--patch', type=int, default=256, help='HR patch side')
  p.add_argument('--precision', default='bf16', choices=('fp32', 'bf16'))
  p.add_argument('--remat', default='0,1', help='model.remat values to compile, comma-separated')
  p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE', help='config override')
  p.add_argument('--json', default=None)
  args = p.parse_args(argv)
  args.devices = 1
  return args


def compiled_memory(args, remat):
  """memory_analysis() of the step compiled with model.remat=REMAT, as a dict of byte counts."""
  run = argparse.Namespace(**{**vars(args), 'set': [*args.set, f'model.remat={bool(remat)}']})
  config = make_config(run)
  lowered = lower_jax_step(run, config)[0]
  mem = lowered.compile().memory_analysis()
  out = {k: int(getattr(mem, k)) for k in ('temp_size_in_bytes', 'argument_size_in_bytes',
                                           'output_size_in_bytes', 'alias_size_in_bytes')}
  out['total_gib'] = (out['temp_size_in_bytes'] + out['argument_size_in_bytes']
                      + out['output_size_in_bytes'] - out['alias_size_in_bytes']) / 2 ** 30
  return out


@one_line_errors
def main(argv=None):
  args = parse_args(argv)
  result = {'what': "compiled train step's memory_analysis(), model.remat off and on",
            'exp': args.exp, 'stage': args.stage, 'batch': args.batch, 'patch': args.patch,
            'precision': args.precision, 'overrides': args.set, 'versions': versions(),
            'remat': {},
            'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}
  for remat in (int(r) for r in args.remat.split(',')):
    result['remat'][str(remat)] = mem = compiled_memory(args, remat)
    print(f'{args.exp} {args.stage} b{args.batch} p{args.patch} {args.precision} remat={remat}: '
          f'{mem["total_gib"]:.2f} GiB ({mem["temp_size_in_bytes"] / 2 ** 30:.2f} GiB temporaries)',
          flush=True)
    if args.json:  # after each figure: a slow second compile never loses the first
      write_json(args.json, result)
  return 0


if __name__ == '__main__':
  sys.exit(main())
