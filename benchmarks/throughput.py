"""Train-step throughput of enhance_jax (and of the PyTorch twin): images/s, ms/step, compile time,
memory, FLOPs (XLA cost analysis and an analytic count) and MFU.

  python benchmarks/throughput.py --exp esrgan --stage gan --batch 16 --precision bf16
  python benchmarks/throughput.py --stage pretrain --batch 16 --precision bf16 --framework torch
  python benchmarks/throughput.py --exp esrgan --compare --json benchmarks/results/cpu.json

JAX runs on one device unless --devices says more (the PyTorch twin always runs on one). Where
BasicSR is installed, the torch run also times the step with BasicSR's own RRDBNet as G.
"""

import argparse
import datetime
import gc
import importlib.metadata
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Dense peak TFLOP/s of one device, by a substring of its name (the longest that matches wins): half
# NVIDIA's datasheet figures "with sparsity". 'fp32' is TF32 tensor-core math, which both XLA and
# cuDNN use for fp32 convolutions by default.
PEAK_TFLOPS = {
    'H100': {'bf16': 989.5, 'fp32': 494.5},  # SXM: 1979 / 989 sparse
    'H100 PCIe': {'bf16': 756.5, 'fp32': 378.0},  # 1513 / 756
    'H100 NVL': {'bf16': 835.5, 'fp32': 417.5},  # 1671 / 835
    'H200': {'bf16': 989.5, 'fp32': 494.5},  # SXM, as the H100 SXM
    'H200 NVL': {'bf16': 835.5, 'fp32': 417.5},  # 1671 / 835
    'A100': {'bf16': 312.0, 'fp32': 156.0},
    'L4': {'bf16': 121.0, 'fp32': 60.0},  # 242 / 120
    'L40': {'bf16': 181.0, 'fp32': 90.5},  # dense as listed (the L4 numbers must not match it)
    'L40S': {'bf16': 362.0, 'fp32': 183.0},  # dense as listed
}
PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'torch', 'basicsr')


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
  p.add_argument('--exp', default='esrgan')
  p.add_argument('--stage', default=None, choices=('pretrain', 'gan'),
                 help="default: 'gan' when the experiment has a GAN stage, else 'pretrain'")
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
  p.add_argument('--threads', type=int, default=0,
                 help='pin each framework to N CPUs (affinity) and N OpenMP threads (0 = all)')
  p.add_argument('--cpu-devices', type=int, default=0,
                 help='split the CPU into N XLA devices; with N > 1 convolutions are XLA\'s own '
                      '(one thread each), not oneDNN')
  p.add_argument('--devices', type=int, default=0,
                 help='JAX devices the batch is split over (default 1, or --cpu-devices); MFU is '
                      'against N x the peak, and the PyTorch twin always runs on one')
  p.add_argument('--peak-tflops', type=float, default=0.0,
                 help='one device\'s peak, for MFU off the table')
  p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE', help='config override')
  p.add_argument('--json', default=None, help='write the results here')
  args = p.parse_args(argv)
  args.devices = args.devices or args.cpu_devices or 1
  return args


def _set_xla_flag(name, value):
  """Sets --NAME=VALUE in XLA_FLAGS, replacing an earlier one (a child inherits its parent's)."""
  flags = [f for f in os.environ.get('XLA_FLAGS', '').split() if not f.startswith(f'--{name}=')]
  os.environ['XLA_FLAGS'] = ' '.join([*flags, f'--{name}={value}'])


def limit_threads(n, cpu_devices=0):
  """Pins this process to N CPUs and caps OpenMP (oneDNN's, torch's) at N threads; splits the CPU
  into CPU_DEVICES XLA devices. Run it before jax or torch start a thread pool.

  XLA has no thread-count flag (XLA_FLAGS 'intra_op_parallelism_threads=N' is ignored, and
  --xla_cpu_multi_thread_eigen=false changes nothing): it sizes its pools by the affinity mask.
  """
  if cpu_devices > 0:
    _set_xla_flag('xla_force_host_platform_device_count', cpu_devices)
  if n > 0:
    if hasattr(os, 'sched_setaffinity'):
      os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:n])
    os.environ['OMP_NUM_THREADS'] = str(n)


def cpu_threads():
  return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()


def versions():
  """Installed versions of PACKAGES (None: not installed), read without importing them."""
  out = {}
  for name in PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  return out


def host_max_rss_bytes():
  """This process's peak resident set: host RAM, not device memory (ru_maxrss is KiB on Linux)."""
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return rss if sys.platform == 'darwin' else rss * 1024


def make_config(args):
  from enhance_jax.training import config as config_lib# pylint: disable=g-import-not-at-top
  return config_lib.get_config(args.exp, [
      f'train.batch_size={args.batch}', f'data.patch_size={args.patch}',
      f'train.precision={args.precision}', *args.set])


def has_gan_stage(config):
  """Whether CONFIG trains a discriminator after its pretrain stage."""
  return config.discriminator.name != 'none' and config.train.num_steps > config.train.pretrain_steps


def resolve_stage(stage, config, exp):
  """The stage to time: STAGE, or the GAN stage where the experiment has one and 'pretrain' where not;
  'gan' for an experiment without a discriminator is a UserError."""
  from enhance_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  if stage == 'gan' and not has_gan_stage(config):
    raise UserError(f'--stage gan: experiment {exp!r} has no GAN stage; use --stage '
                    'pretrain.')
  return stage or ('gan' if has_gan_stage(config) else 'pretrain')


def timings(run_steps, steps, repeats):
  """Seconds per step of each repeat of STEPS steps (RUN_STEPS(n) must block until done)."""
  out = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    run_steps(steps)
    out.append((time.perf_counter() - t0) / steps)
  return out


def utilisation(step_s, devices, peak, xla_flops, analytic):
  """TFLOP/s and MFU (against DEVICES x PEAK TFLOP/s) by XLA's FLOP count and the analytic one."""
  total = peak * devices * 1e12 if peak else None
  tflops = lambda flops: flops / step_s / 1e12 if flops else None
  mfu = lambda flops: flops / step_s / total if flops and total else None
  return {'tflops_per_sec': tflops(xla_flops), 'tflops_per_sec_analytic': tflops(analytic),
          'mfu': mfu(xla_flops), 'mfu_analytic': mfu(analytic)}


def summarise(per_step, batch):
  med = statistics.median(per_step)
  return {'ms_per_step': med * 1e3, 'ms_min': min(per_step) * 1e3, 'ms_max': max(per_step) * 1e3,
          'images_per_sec': batch / med, 'per_step_s': per_step}


def peak_tflops(kind, precision, override=0.0):
  """OVERRIDE, else the peak of the longest PEAK_TFLOPS name in device KIND (any case), or None."""
  if override:
    return override
  names = [n for n in PEAK_TFLOPS if n.lower() in kind.lower()]
  return PEAK_TFLOPS[max(names, key=len)][precision] if names else None


def lower_jax_step(args, config):
  """enhance_jax's train step for ARGS.stage, lowered for ARGS.devices devices: (lowered, state,
  batch, vgg, mesh, seconds to lower)."""
  import jax  # pylint: disable=g-import-not-at-top
  from enhance_jax.training import frozen# pylint: disable=g-import-not-at-top
  from enhance_jax import parallel# pylint: disable=g-import-not-at-top
  from enhance_jax.training import train_steps# pylint: disable=g-import-not-at-top
  task = train_steps.make_task(config)
  mesh = parallel.make_mesh(args.devices)
  if mesh.devices.size != args.devices:
    from enhance_jax.errors import UserError  # pylint: disable=g-import-not-at-top
    raise UserError(f'--devices {args.devices}: this host has {jax.device_count()}; pass at most '
                    'that many.')
  parallel.check_batch(args.batch, mesh)
  rep, split = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  lr_side = args.patch // config.model.scale
  shapes = ((args.batch, lr_side, lr_side, 3), (args.batch, args.patch, args.patch, 3))
  state = jax.jit(lambda r: train_steps.init_state(task, r, *shapes), out_shardings=rep)(
      jax.random.key(0))
  if args.stage == 'gan':
    state = train_steps.start_gan_stage(task, state)
  vgg = jax.device_put(frozen.load(tuple(task.frozen), config), rep)  # the frozen networks
  keys = jax.random.split(jax.random.key(1), 2)
  if task.output == 'image':
    batch = {'lr': jax.random.uniform(keys[0], shapes[0]), 'hr': jax.random.uniform(keys[1], shapes[1])}
  else:  # a rating model (NIMA): images and their rating histograms
    batch = {'image': jax.random.uniform(keys[0], shapes[0]),
             'histogram': jax.nn.softmax(jax.random.normal(keys[1], (args.batch, 10)))}
  batch = jax.device_put(batch, split)
  t0 = time.perf_counter()
  lowered = stage_step(train_steps.jit_steps(task, mesh), args.stage, config).lower(state, batch, vgg)
  return lowered, state, batch, vgg, mesh, time.perf_counter() - t0


def stage_step(steps, stage, config):
  """STAGE's jitted step; a multi-scale model's (MDSR) at its default scale, model.scale."""
  step = steps[stage]
  return step[config.model.scale] if isinstance(step, dict) else step


def compile_jax_step(args, config):
  """enhance_jax's train step for ARGS.stage compiled on ARGS.devices devices, with its inputs:
  (compiled, state, batch, vgg, seconds to lower and compile)."""
  lowered, state, batch, vgg, _, lower_s = lower_jax_step(args, config)
  t0 = time.perf_counter()
  return lowered.compile(), state, batch, vgg, lower_s + time.perf_counter() - t0


def xla_flops(config, state, batch, vgg, stage, mesh):
  """FLOPs of one train step (all devices) by XLA's cost analysis, counted on the step traced with
  XLA's own convolutions (the oneDNN path is an FFI call, opaque to the cost analysis)."""
  from enhance_jax.ops import conv# pylint: disable=g-import-not-at-top
  from enhance_jax.training import train_steps# pylint: disable=g-import-not-at-top
  with conv.xla_convolutions():
    lowered = stage_step(train_steps.jit_steps(train_steps.make_task(config), mesh), stage, config).lower(
        state, batch, vgg)
  cost = lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get('flops', 0.0)) if cost else None


def conv_paths(hlo_text):
  """Which convolutions the lowered step runs ('onednn', 'xla' or 'onednn+xla') and how many of
  each its StableHLO holds: oneDNN's are FFI custom calls, XLA's stablehlo.convolution."""
  counts = {'onednn': hlo_text.count('@enhance_jax_conv_'),
            'xla': hlo_text.count('stablehlo.convolution')}
  return '+'.join(k for k, n in counts.items() if n) or 'none', counts


def bench_jax(args, config):
  """Compiles and times enhance_jax's jitted train step on ARGS.devices devices."""
  import jax  # pylint: disable=g-import-not-at-top
  lowered, state, batch, vgg, mesh, lower_s = lower_jax_step(args, config)
  t0 = time.perf_counter()
  compiled = lowered.compile()
  compile_s = lower_s + time.perf_counter() - t0
  convolutions, conv_ops = conv_paths(lowered.as_text())
  flops = xla_flops(config, state, batch, vgg, args.stage, mesh)
  mem = compiled.memory_analysis()
  holder = {'state': state, 'metrics': None}

  def run_steps(n):
    for _ in range(n):
      holder['state'], holder['metrics'] = compiled(holder['state'], batch, vgg)
    jax.block_until_ready(holder)

  run_steps(args.warmup)
  per_step = timings(run_steps, args.steps, args.repeats)
  device = mesh.devices.flat[0]
  stats = device.memory_stats() or {}
  return per_step, {
      'compile_s': compile_s, 'xla_flops_per_step': flops,
      'temp_bytes': getattr(mem, 'temp_size_in_bytes', None),
      'argument_bytes': getattr(mem, 'argument_size_in_bytes', None),
      'peak_bytes': stats.get('peak_bytes_in_use'), 'host_max_rss_bytes': host_max_rss_bytes(),
      'device': device.device_kind, 'num_devices': mesh.devices.size,
      'backend': jax.default_backend(), 'convolutions': convolutions, 'conv_ops': conv_ops}


def bench_torch(args, config, generator=None):
  """Times the PyTorch twin's train step (channels_last, autocast for bf16, cudnn.benchmark), or the
  same step with GENERATOR as G."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks.torch_reference import train_step  # pylint: disable=g-import-not-at-top
  if args.threads:
    torch.set_num_threads(args.threads)
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  if device == 'cuda':  # a peak of this run's alone, not of an earlier trainer's leftovers
    gc.collect()
    torch.cuda.reset_peak_memory_stats()
  if generator is None:  # G, then D, inputs: bench_basicsr seeds and builds G itself
    torch.manual_seed(0)
  tr = train_step.make_trainer(config, device, args.precision, channels_last=args.channels_last,
                               compile=args.torch_compile, generator=generator)
  lr_side = args.patch // config.model.scale
  fmt = torch.channels_last if args.channels_last else torch.contiguous_format
  lr = torch.rand(args.batch, 3, lr_side, lr_side, device=device).contiguous(memory_format=fmt)
  hr = torch.rand(args.batch, 3, args.patch, args.patch, device=device)
  hr = hr.contiguous(memory_format=fmt)
  step = tr.pretrain_step if args.stage == 'pretrain' else tr.gan_step
  sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)

  def run_steps(n):
    for _ in range(n):
      step(lr, hr)
    sync()

  t0 = time.perf_counter()
  run_steps(1)  # cudnn autotuning / torch.compile happen here
  first_s = time.perf_counter() - t0
  run_steps(args.warmup)
  per_step = timings(run_steps, args.steps, args.repeats)
  return per_step, {
      'compile_s': first_s,
      'peak_bytes': torch.cuda.max_memory_allocated() if device == 'cuda' else None,
      'host_max_rss_bytes': host_max_rss_bytes(),
      'device': torch.cuda.get_device_name() if device == 'cuda' else platform.processor() or 'cpu',
      'num_devices': 1, 'threads': torch.get_num_threads(), 'torch_compile': args.torch_compile,
      'channels_last': bool(args.channels_last), 'generator': type(tr.generator).__module__}


def bench_basicsr(args, config):
  """bench_torch with BasicSR's own RRDBNet as G, or (None, why not): same seed, so the same G, D
  and inputs as the twin's run."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks.torch_reference import train_step  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  twin = train_step.build_generator(config)
  rng = torch.get_rng_state()  # where the twin's run goes on to build D (BasicSR's init draws too)
  net, reason = train_step.basicsr_generator(config, twin)
  torch.set_rng_state(rng)
  return (None, reason) if net is None else (bench_torch(args, config, generator=net), None)


def result_of(per_step, info, args, xla, analytic):
  peak = peak_tflops(info['device'], args.precision, args.peak_tflops)
  summary = summarise(per_step, args.batch)
  rates = utilisation(summary['ms_per_step'] / 1e3, info['num_devices'], peak, xla, analytic)
  return {**info, **summary, **rates, 'peak_tflops': peak}


def report(name, r, args):
  print(f'{name:13s} {args.stage} b{args.batch} p{args.patch} {args.precision}: '
        f'{r["images_per_sec"]:.2f} img/s, {r["ms_per_step"]:.1f} ms/step '
        f'[{r["ms_min"]:.1f}-{r["ms_max"]:.1f}], first/compile {r["compile_s"]:.1f} s'
        + (f', MFU {r["mfu"]:.1%}' if r['mfu'] else '') + f' on {r["device"]}', flush=True)


def run_framework(args, config, analytic):
  """This process's results for ARGS.framework: {'jax': ...} or {'torch': ..., 'torch_basicsr':
  ... or None, 'torch_basicsr_skipped': None or why}."""
  if args.framework == 'jax':
    per_step, info = bench_jax(args, config)
    out = {'jax': result_of(per_step, info, args, info['xla_flops_per_step'], analytic)}
    if info['xla_flops_per_step'] and analytic:
      out['jax']['xla_over_analytic'] = info['xla_flops_per_step'] / analytic
  else:
    out = {'torch': result_of(*bench_torch(args, config), args, None, analytic)}
    basicsr, reason = bench_basicsr(args, config)
    out['torch_basicsr'] = basicsr and result_of(*basicsr, args, None, analytic)
    out['torch_basicsr_skipped'] = reason
  for name, r in out.items():
    if isinstance(r, dict):
      report(name, r, args)
    elif isinstance(r, str):
      print(f'{name}: {r}')
  return out


def run_isolated(argv, framework):
  """This script's results for FRAMEWORK alone, measured in a child process: with --compare each
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
  env = dict(os.environ, **({'JAX_PLATFORMS': 'cpu'} if framework == 'torch' else {}))
  with tempfile.TemporaryDirectory() as tmp:
    out = pathlib.Path(tmp) / 'result.json'
    subprocess.run([sys.executable, str(pathlib.Path(__file__).resolve()), *rest,
                    '--framework', framework, '--json', str(out)], check=True, env=env)
    child = json.loads(out.read_text())
  return {k: v for k, v in child.items() if k == framework or k.startswith(f'{framework}_')}


def compare(result, analytic):
  """MFU of the torch columns by JAX's XLA count (the same step), and JAX / PyTorch images/s."""
  xla, jax_ips = result['jax']['xla_flops_per_step'], result['jax']['images_per_sec']
  for name in ('torch', 'torch_basicsr'):
    r = result.get(name)
    if r:
      r.update(utilisation(r['ms_per_step'] / 1e3, r['num_devices'], r['peak_tflops'], xla,
                           analytic))
  result['ratio'] = jax_ips / result['torch']['images_per_sec']
  basicsr = result.get('torch_basicsr')
  result['basicsr_ratio'] = jax_ips / basicsr['images_per_sec'] if basicsr else None
  print(f'JAX / PyTorch images/s: {result["ratio"]:.3f}' + (
      f'; JAX / BasicSR G: {result["basicsr_ratio"]:.3f}' if basicsr else ''))


def one_line_errors(run):
  """RUN(argv) as a CLI: a bad experiment, override or device count is one `error:` line, exit 2."""
  from enhance_jax.errors import UserError  # pylint: disable=g-import-not-at-top

  def main(argv=None):
    try:
      return run(argv)
    except UserError as e:
      print(f'error: {e}', file=sys.stderr)
    except subprocess.CalledProcessError as e:  # the child printed its own error above
      print(f'error: the {e.cmd[e.cmd.index("--framework") + 1]} run failed (exit {e.returncode}); '
            'see its message above.', file=sys.stderr)
    return 2

  return main


@one_line_errors
def main(argv=None):
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parse_args(argv)
  if not args.compare:  # with --compare each child pins itself
    limit_threads(args.threads, args.cpu_devices)
  sys.path.insert(0, str(ROOT / 'benchmarks'))
  import flops as flops_lib  # pylint: disable=g-import-not-at-top
  config = make_config(args)
  args.stage = resolve_stage(args.stage, config, args.exp)
  analytic = flops_lib.train_step(config, args.stage, args.batch, args.patch)
  result = {'exp': args.exp, 'stage': args.stage, 'batch': args.batch, 'patch': args.patch,
            'precision': args.precision, 'steps': args.steps, 'repeats': args.repeats,
            'devices': args.devices, 'threads': args.threads or cpu_threads(),
            'host': platform.node(), 'cpu_count': os.cpu_count(), 'versions': versions(),
            'analytic_flops_per_step': analytic,
            'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}
  if args.compare:
    for fw in ('jax', 'torch'):
      result.update(run_isolated(argv, fw))
    compare(result, analytic)
  else:
    result.update(run_framework(args, config, analytic))
  result['device'] = result['jax' if 'jax' in result else 'torch']['device']
  if args.json:
    write_json(args.json, result)
  return 0


def write_json(path, result):
  """Writes a benchmark's RESULT as indented JSON at PATH, making its folder."""
  out = pathlib.Path(path)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=2) + '\n')


if __name__ == '__main__':
  sys.exit(main())
