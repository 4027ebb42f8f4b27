"""Train-step throughput of enhance_jax (and of the PyTorch twin): images/s, ms/step, compile time,
memory, FLOPs (XLA cost analysis and an analytic count) and MFU.

  python benchmarks/throughput.py --exp esrgan --stage gan --batch 16 --precision bf16
  python benchmarks/throughput.py --exp esrgan --stage gan --batch 16 --precision bf16 --framework torch
  python benchmarks/throughput.py --exp esrgan --compare --json benchmarks/results/cpu.json
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Dense peak FLOP/s by device kind (NVIDIA's SXM datasheets; 'fp32' is TF32 tensor-core math, which
# both XLA and cuDNN use for fp32 convolutions by default).
PEAK_TFLOPS = {
    'H100': {'bf16': 989.0, 'fp32': 494.5},
    'H200': {'bf16': 989.0, 'fp32': 494.5},
    'A100': {'bf16': 312.0, 'fp32': 156.0},
    'L4': {'bf16': 121.0, 'fp32': 60.0},
}


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--exp', default='esrgan')
  p.add_argument('--stage', default='gan', choices=('pretrain', 'gan'))
  p.add_argument('--batch', type=int, default=16)
  p.add_argument('--patch', type=int, default=128, help='HR patch side')
  p.add_argument('--precision', default='fp32', choices=('fp32', 'bf16'))
  p.add_argument('--steps', type=int, default=10, help='steps per timed repeat')
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--framework', default='jax', choices=('jax', 'torch'))
  p.add_argument('--compare', action='store_true', help='run both frameworks; report the ratio')
  p.add_argument('--torch-compile', action='store_true', help='torch.compile the twin')
  p.add_argument('--channels-last', type=int, default=1, choices=(0, 1),
                 help='torch memory format: 1 = channels_last (the GPU default), 0 = NCHW')
  p.add_argument('--threads', type=int, default=0, help='CPU threads for both frameworks (0 = all)')
  p.add_argument('--cpu-devices', type=int, default=0,
                 help='split the CPU into N XLA devices, the batch split over them by the data-parallel '
                      'mesh; with N > 1 convolutions are XLA\'s own (one thread each), not oneDNN')
  p.add_argument('--peak-tflops', type=float, default=0.0, help='device peak, for MFU off the table')
  p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE', help='config override')
  p.add_argument('--json', default=None, help='write the results here')
  return p.parse_args(argv)


def limit_threads(n, cpu_devices=0):
  """Caps XLA's and torch's CPU thread pools at N, and splits the CPU into CPU_DEVICES XLA devices
  (must run before jax is imported)."""
  if cpu_devices > 0:
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                               f' --xla_force_host_platform_device_count={cpu_devices}').strip()
  if n > 0:
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_cpu_multi_thread_eigen=true'
                               f' intra_op_parallelism_threads={n}').strip()
    os.environ['OMP_NUM_THREADS'] = str(n)


def make_config(args):
  from enhance_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.get_config(args.exp, [
      f'train.batch_size={args.batch}', f'data.patch_size={args.patch}',
      f'train.precision={args.precision}', *args.set])


def timings(run_steps, steps, repeats):
  """Seconds per step of each repeat of STEPS steps (RUN_STEPS(n) must block until done)."""
  out = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    run_steps(steps)
    out.append((time.perf_counter() - t0) / steps)
  return out


def summarise(per_step, batch, flops, peak):
  med = statistics.median(per_step)
  return {'ms_per_step': med * 1e3, 'ms_min': min(per_step) * 1e3, 'ms_max': max(per_step) * 1e3,
          'images_per_sec': batch / med,
          'tflops_per_sec': flops / med / 1e12 if flops else None,
          'mfu': flops / med / (peak * 1e12) if flops and peak else None}


def peak_tflops(kind, precision, override):
  if override:
    return override
  for name, peaks in PEAK_TFLOPS.items():
    if name.lower() in kind.lower():
      return peaks[precision]
  return None


def compile_jax_step(args, config):
  """enhance_jax's train step for ARGS.stage, compiled on all local devices, with its inputs."""
  import jax  # pylint: disable=g-import-not-at-top
  from enhance_jax import parallel, trainer, weights  # pylint: disable=g-import-not-at-top
  task = trainer.make_task(config)
  mesh = parallel.make_mesh()
  rep, split = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  lr_side = args.patch // config.model.scale
  shapes = ((args.batch, lr_side, lr_side, 3), (args.batch, args.patch, args.patch, 3))
  state = jax.jit(lambda r: trainer.init_state(task, r, *shapes), out_shardings=rep)(
      jax.random.key(0))
  if args.stage == 'gan':
    state = trainer.start_gan_stage(task, state)
  vgg = (jax.device_put(weights.load_vgg19(None, (config.loss.content_layer,)), rep)
         if trainer.uses_vgg(task) else None)
  keys = jax.random.split(jax.random.key(1), 2)
  batch = {'lr': jax.device_put(jax.random.uniform(keys[0], shapes[0]), split),
           'hr': jax.device_put(jax.random.uniform(keys[1], shapes[1]), split)}
  t0 = time.perf_counter()
  step = trainer.jit_steps(task, mesh)[args.stage]
  compiled = step.lower(state, batch, vgg).compile()
  return compiled, state, batch, vgg, time.perf_counter() - t0


def xla_flops(config, state, batch, vgg, stage):
  """FLOPs of one train step by XLA's cost analysis, counted on the step traced with XLA's own
  convolutions (the oneDNN path is an FFI call, opaque to the cost analysis; same arithmetic)."""
  from enhance_jax import conv, parallel, trainer  # pylint: disable=g-import-not-at-top
  task, mesh = trainer.make_task(config), parallel.make_mesh()
  with conv.xla_convolutions():
    lowered = trainer.jit_steps(task, mesh)[stage].lower(state, batch, vgg)
  cost = lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get('flops', 0.0)) if cost else None


def bench_jax(args, config):
  """Compiles and times enhance_jax's jitted train step on all local devices."""
  import jax  # pylint: disable=g-import-not-at-top
  from enhance_jax import conv  # pylint: disable=g-import-not-at-top
  compiled, state, batch, vgg, compile_s = compile_jax_step(args, config)
  flops = xla_flops(config, state, batch, vgg, args.stage)
  mem = compiled.memory_analysis()
  holder = {'state': state}

  def run_steps(n):
    for _ in range(n):
      holder['state'], metrics = compiled(holder['state'], batch, vgg)
    jax.block_until_ready((holder['state'], metrics))

  run_steps(args.warmup)
  per_step = timings(run_steps, args.steps, args.repeats)
  device = jax.devices()[0]
  stats = device.memory_stats() or {}
  return per_step, {
      'compile_s': compile_s,
      'xla_flops_per_step': flops,
      'temp_bytes': getattr(mem, 'temp_size_in_bytes', None),
      'argument_bytes': getattr(mem, 'argument_size_in_bytes', None),
      'peak_bytes': stats.get('peak_bytes_in_use'),
      'device': device.device_kind, 'num_devices': jax.device_count(), 'backend': jax.default_backend(),
      'convolutions': 'onednn' if conv.onednn_enabled() else 'xla',
      'versions': {'jax': jax.__version__, 'jaxlib': __import__('jaxlib').__version__,
                   'flax': __import__('flax').__version__}}


def bench_torch(args, config):
  """Times the PyTorch twin's train step (channels_last, autocast for bf16, cudnn.benchmark)."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks.torch_reference import train_step  # pylint: disable=g-import-not-at-top
  if args.threads:
    torch.set_num_threads(args.threads)
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  tr = train_step.make_trainer(config, device, args.precision, channels_last=args.channels_last,
                               compile=args.torch_compile)
  lr_side = args.patch // config.model.scale
  fmt = torch.channels_last if args.channels_last else torch.contiguous_format
  lr = torch.rand(args.batch, 3, lr_side, lr_side, device=device).contiguous(memory_format=fmt)
  hr = torch.rand(args.batch, 3, args.patch, args.patch, device=device).contiguous(memory_format=fmt)
  step = tr.pretrain_step if args.stage == 'pretrain' else tr.gan_step
  sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)

  def run_steps(n):
    for _ in range(n):
      out = step(lr, hr)
    sync()
    return out

  t0 = time.perf_counter()
  run_steps(1)  # cudnn autotuning / torch.compile happen here
  first_s = time.perf_counter() - t0
  run_steps(args.warmup)
  per_step = timings(run_steps, args.steps, args.repeats)
  return per_step, {
      'compile_s': first_s,
      'peak_bytes': torch.cuda.max_memory_allocated() if device == 'cuda' else None,
      'device': torch.cuda.get_device_name() if device == 'cuda' else platform.processor() or 'cpu',
      'threads': torch.get_num_threads(), 'torch_compile': args.torch_compile,
      'channels_last': bool(args.channels_last),
      'versions': {'torch': torch.__version__}}


def run_isolated(argv, framework):
  """This script's result for FRAMEWORK alone, measured in a child process: with --compare each
  framework gets a fresh process, so neither's thread pools (XLA's, two OpenMP runtimes) slow the
  other (in one process PyTorch's step measured 25% slower after JAX's had run)."""
  rest, skip = [], False
  for a in argv:
    if skip or a == '--compare' or a.startswith('--json='):
      skip = False
      continue
    if a == '--json':
      skip = True
      continue
    rest.append(a)
  with tempfile.TemporaryDirectory() as tmp:
    out = pathlib.Path(tmp) / 'result.json'
    subprocess.run([sys.executable, str(pathlib.Path(__file__).resolve()), *rest,
                    '--framework', framework, '--json', str(out)], check=True)
    return json.loads(out.read_text())[framework]


def main(argv=None):
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parse_args(argv)
  limit_threads(args.threads, args.cpu_devices)
  sys.path.insert(0, str(ROOT / 'benchmarks'))
  import flops as flops_lib  # pylint: disable=g-import-not-at-top
  config = make_config(args)
  analytic = flops_lib.train_step(config, args.stage, args.batch, args.patch)
  frameworks = ('jax', 'torch') if args.compare else (args.framework,)
  result = {'exp': args.exp, 'stage': args.stage, 'batch': args.batch, 'patch': args.patch,
            'precision': args.precision, 'steps': args.steps, 'repeats': args.repeats,
            'threads': args.threads or os.cpu_count(), 'host': platform.node(),
            'cpu_count': os.cpu_count(), 'analytic_flops_per_step': analytic,
            'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}
  for fw in frameworks:
    if args.compare:
      result[fw] = run_isolated(argv, fw)
      continue
    per_step, info = (bench_jax if fw == 'jax' else bench_torch)(args, config)
    peak = peak_tflops(info['device'], args.precision, args.peak_tflops)
    result[fw] = {**info, **summarise(per_step, args.batch, analytic, peak), 'peak_tflops': peak,
                  'per_step_s': per_step}
    if fw == 'jax' and info['xla_flops_per_step']:
      result[fw]['xla_over_analytic'] = info['xla_flops_per_step'] / analytic
    r = result[fw]
    print(f'{fw:5s} {args.stage} b{args.batch} p{args.patch} {args.precision}: '
          f'{r["images_per_sec"]:.2f} img/s, {r["ms_per_step"]:.1f} ms/step '
          f'[{r["ms_min"]:.1f}-{r["ms_max"]:.1f}], compile {r["compile_s"]:.1f} s'
          + (f', MFU {r["mfu"]:.1%}' if r['mfu'] else '') + f' on {info["device"]}', flush=True)
  if args.compare:
    result['ratio'] = result['jax']['images_per_sec'] / result['torch']['images_per_sec']
    print(f'JAX / PyTorch images/s: {result["ratio"]:.3f}')
  if args.json:
    out = pathlib.Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + '\n')
  return 0


if __name__ == '__main__':
  sys.exit(main())
