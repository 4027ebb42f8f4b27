"""The benchmarks run end to end at a tiny size and write valid JSON; FLOPs agree with the analytic
count (a device-independent figure that must not regress)."""

import json
import os
import pathlib
import subprocess
import sys
import types

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / 'benchmarks'))

import memory  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import perceptual  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import throughput  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

TINY = ['--set', 'model.num_blocks=1', '--set', 'model.num_features=8', '--set',
        'model.growth_channels=4', '--set', 'discriminator.num_features=8', '--set',
        'discriminator.dense_features=16', '--set', 'loss.content_layer=conv2_2']


TOP_KEYS = ('device', 'versions', 'batch', 'patch', 'precision', 'devices', 'threads',
            'analytic_flops_per_step', 'ratio', 'basicsr_ratio', 'torch_basicsr',
            'torch_basicsr_skipped')
RUN_KEYS = ('device', 'num_devices', 'images_per_sec', 'ms_per_step', 'ms_min', 'ms_max',
            'per_step_s', 'compile_s', 'tflops_per_sec', 'mfu', 'mfu_analytic', 'peak_tflops',
            'peak_bytes', 'host_max_rss_bytes')


@pytest.mark.slow
def test_throughput_compare_writes_json_with_ratio_and_flops(tmp_path):
  """The GAN stage (G, D and VGG: every network the pretrain stage runs and more) in both frameworks;
  the pretrain stage's JAX path is timed by test_throughput_times_multi_scale_and_rating_models."""
  stage = 'gan'
  out = tmp_path / 'tp.json'
  assert throughput.main(['--exp', 'esrgan_cpu', '--stage', stage, '--batch', '2', '--patch', '32',
                          '--steps', '1', '--repeats', '2', '--warmup', '1', '--compare',
                          '--peak-tflops', '1', '--json', str(out), *TINY]) == 0
  r = json.loads(out.read_text())
  assert all(k in r for k in TOP_KEYS), sorted(set(TOP_KEYS) - set(r))
  assert all(r['versions'][k] for k in ('jax', 'jaxlib', 'flax', 'optax', 'torch')), r['versions']
  assert r['devices'] == 1 and r['device'] == r['jax']['device']
  for fw in ('jax', 'torch'):
    assert all(k in r[fw] for k in RUN_KEYS), (fw, sorted(set(RUN_KEYS) - set(r[fw])))
    assert r[fw]['images_per_sec'] > 0 and len(r[fw]['per_step_s']) == 2
    assert r[fw]['num_devices'] == 1 and r[fw]['host_max_rss_bytes'] > 2**20
    assert r[fw]['peak_bytes'] is None  # a CPU has no device memory statistics
    # MFU by the JAX step's XLA count, for both frameworks; against a 1 TFLOP/s device here.
    step_s = r[fw]['ms_per_step'] / 1e3
    assert r[fw]['mfu'] == pytest.approx(r['jax']['xla_flops_per_step'] / step_s / 1e12)
    assert r[fw]['mfu_analytic'] == pytest.approx(r['analytic_flops_per_step'] / step_s / 1e12)
  assert r['ratio'] == pytest.approx(r['jax']['images_per_sec'] / r['torch']['images_per_sec'])
  assert (r['torch_basicsr'] is None) == (r['basicsr_ratio'] is None)
  assert (r['torch_basicsr'] is None) == bool(r['torch_basicsr_skipped'])
  assert r['jax']['temp_bytes'] > 0 and r['jax']['convolutions'] in ('onednn+xla', 'xla')
  assert 0.9 < r['jax']['xla_over_analytic'] < 1.1, r['jax']['xla_over_analytic']


@pytest.mark.slow
@pytest.mark.parametrize('exp,extra', [('mdsr', ('--set', 'model.num_blocks=1', '--set',
                                                 'model.num_features=8')),
                                       ('nima', ('--set', 'model.backbone=mobilenet'))])
def test_throughput_times_multi_scale_and_rating_models(exp, extra, tmp_path):
  """MDSR (one compiled step per scale: the model.scale one is timed) and NIMA ({'image',
  'histogram'} batches) go through the same benchmark, their FLOPs from XLA alone."""
  out = tmp_path / 'tp.json'
  assert throughput.main(['--exp', exp, '--stage', 'pretrain', '--batch', '2', '--patch', '48',
                          '--steps', '1', '--repeats', '1', '--warmup', '0', '--json', str(out),
                          *extra]) == 0
  r = json.loads(out.read_text())
  assert r['jax']['images_per_sec'] > 0 and r['jax']['xla_flops_per_step'] > 0
  assert r['analytic_flops_per_step'] is None


def _fake_basicsr(monkeypatch):
  """Installs a stand-in `basicsr.archs.rrdbnet_arch`: the twin's RRDBNet behind BasicSR's
  constructor (num_in_ch, num_out_ch, scale, num_feat, num_block, num_grow_ch)."""
  from benchmarks.torch_reference import models  # pylint: disable=g-import-not-at-top

  class RRDBNet(models.RRDBNet):

    def __init__(self, num_in_ch, num_out_ch, scale=4, num_feat=64, num_block=23, num_grow_ch=32):
      super().__init__(num_in_ch, num_out_ch, num_feat, num_block, num_grow_ch, scale)

  arch = types.ModuleType('basicsr.archs.rrdbnet_arch')
  RRDBNet.__module__, arch.RRDBNet = arch.__name__, RRDBNet
  for name in ('basicsr', 'basicsr.archs'):
    monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
  monkeypatch.setitem(sys.modules, arch.__name__, arch)


@pytest.mark.slow
def test_torch_run_times_basicsr_rrdbnet_as_an_extra_column(tmp_path, monkeypatch):
  _fake_basicsr(monkeypatch)
  out = tmp_path / 'torch.json'
  assert throughput.main(['--exp', 'esrgan_cpu', '--stage', 'pretrain', '--batch', '2', '--patch',
                          '32', '--steps', '1', '--repeats', '2', '--warmup', '1', '--framework',
                          'torch', '--json', str(out), *TINY]) == 0
  r = json.loads(out.read_text())
  assert r['torch']['generator'] == 'benchmarks.torch_reference.models'
  assert r['torch_basicsr']['generator'] == 'basicsr.archs.rrdbnet_arch'
  assert r['torch_basicsr_skipped'] is None and r['torch_basicsr']['images_per_sec'] > 0
  assert all(k in r['torch_basicsr'] for k in RUN_KEYS)
  assert r['torch']['mfu'] is None  # no XLA count in a torch-only run; the analytic one is there


def test_compare_fills_ratios_and_torch_mfu_from_the_xla_count():
  run = lambda ips, ms: {'images_per_sec': ips, 'ms_per_step': ms, 'num_devices': 1,
                         'peak_tflops': 2.0}
  r = {'jax': {**run(8.0, 250.0), 'xla_flops_per_step': 1e12}, 'torch': run(4.0, 500.0),
       'torch_basicsr': run(2.0, 1000.0)}
  throughput.compare(r, analytic=2e12)
  assert r['ratio'] == 2.0 and r['basicsr_ratio'] == 4.0
  assert r['torch']['mfu'] == pytest.approx(1.0) and r['torch']['mfu_analytic'] == pytest.approx(2)
  assert r['torch_basicsr']['mfu'] == pytest.approx(0.5)
  r['torch_basicsr'] = None
  throughput.compare(r, analytic=2e12)
  assert r['basicsr_ratio'] is None


@pytest.mark.parametrize('kind,precision,peak', [
    ('NVIDIA H100 80GB HBM3', 'bf16', 989.5), ('NVIDIA H100 PCIe', 'bf16', 756.5),
    ('NVIDIA H100 PCIe', 'fp32', 378.0), ('NVIDIA H100 NVL', 'bf16', 835.5),
    ('NVIDIA H200', 'fp32', 494.5), ('NVIDIA H200 NVL', 'bf16', 835.5),
    ('NVIDIA A100-SXM4-80GB', 'bf16', 312.0), ('NVIDIA L4', 'bf16', 121.0),
    ('NVIDIA L40S', 'bf16', 362.0), ('cpu', 'fp32', None)])
def test_peak_tflops_takes_the_longest_matching_name(kind, precision, peak):
  assert throughput.peak_tflops(kind, precision) == peak
  assert throughput.peak_tflops(kind, precision, override=7.0) == 7.0


def test_flags_are_never_abbreviated():
  with pytest.raises(SystemExit):
    throughput.parse_args(['--com'])  # would be --compare, which run_isolated strips only in full
  args = throughput.parse_args(['--cpu-devices', '2'])
  assert (args.devices, throughput.parse_args([]).devices) == (2, 1)


def test_limit_threads_pins_the_process_once(tmp_path):
  """The affinity mask is what XLA sizes its pools by; a child inherits XLA_FLAGS, set once."""
  code = ('import os, throughput; throughput.limit_threads(1, 2); throughput.limit_threads(1, 2); '
          'print(len(os.sched_getaffinity(0)), os.environ["OMP_NUM_THREADS"], '
          'os.environ["XLA_FLAGS"])')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8')
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT / 'benchmarks', env=env, check=True,
                       capture_output=True, text=True).stdout.split()
  assert out == ['1', '1', '--xla_force_host_platform_device_count=2']


def test_conv_paths_reports_onednn_for_float32_only():
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from enhance_jax.ops import conv# pylint: disable=g-import-not-at-top
  fn = lambda x, w: conv.conv_general_dilated(x, w, (1, 1), 'SAME',
                                              dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  paths = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    x, w = jnp.ones((1, 8, 8, 4), dtype), jnp.ones((3, 3, 4, 4), dtype)
    paths[dtype] = throughput.conv_paths(jax.jit(fn).lower(x, w).as_text())
  assert paths[jnp.bfloat16] == ('xla', {'onednn': 0, 'xla': 1})
  assert paths[jnp.float32][0] == ('onednn' if conv.onednn_enabled() else 'xla')


def test_analytic_flops_of_the_report_rrdbnet():
  import flops  # pylint: disable=g-import-not-at-top
  from enhance_jax.training import config as config_lib# pylint: disable=g-import-not-at-top
  m = config_lib.get_config('esrgan').model
  # 2 x (params of the 3x3 convs) x pixels, summed per resolution: trunk at 32x32, up1 at 64x64,
  # up2/hr/last at 128x128 (biases excluded).
  trunk = 9 * (3 * 64 + 23 * 3 * sum((64 + 32 * i) * 32 for i in range(4)) + 23 * 3 * 192 * 64
               + 64 * 64)
  expected = 2 * (trunk * 32 * 32 + 9 * 64 * 64 * 64 * 64 + 9 * (64 * 64 * 2 + 64 * 3) * 128 * 128)
  assert flops.rrdbnet(32, 32, m) == expected


@pytest.mark.slow
def test_op_profile_groups_the_step_ops_by_kind(tmp_path):
  import op_profile  # pylint: disable=g-import-not-at-top
  out = tmp_path / 'prof.json'
  assert op_profile.main(['--exp', 'esrgan_cpu', '--stage', 'pretrain', '--batch', '2', '--patch', '32',
                          '--warmup', '1', '--json', str(out), *TINY]) == 0
  r = json.loads(out.read_text())
  kinds = {row['kind'] for row in r['ops']}
  assert not any(k[-1].isdigit() for k in kinds), kinds  # numeric suffixes are grouped away
  assert sum(row['share'] for row in r['ops']) == pytest.approx(1.0)
  assert 0 < r['op_ms_per_device'] <= r['step_ms'] * 1.5
  assert any('fusion' in k or 'convolution' in k for k in kinds), kinds


def test_op_kind_strips_the_hlo_suffix():
  import op_profile  # pylint: disable=g-import-not-at-top
  assert op_profile.op_kind('ynn_fusion.2103') == 'ynn_fusion'
  assert op_profile.op_kind('all-reduce.7') == 'all-reduce'
  rows = op_profile.breakdown([{'ph': 'X', 'name': 'convolution.1', 'dur': 2000},
                               {'ph': 'X', 'name': 'convolution.2', 'dur': 1000},
                               {'ph': 'X', 'name': '$api', 'dur': 9000},
                               {'ph': 'i', 'name': 'fusion.3', 'dur': 5}])
  assert rows == {'convolution': {'ms': 3.0, 'count': 2}}


@pytest.mark.parametrize('argv, match', [
    (['--exp', 'nosuch', '--framework', 'jax'], 'unknown experiment'),
    (['--exp', 'esrgan_cpu', '--devices', '64', '--framework', 'jax'], '--devices 64'),
    (['--exp', 'esrgan_cpu', '--set', 'train.no_such_key=1', '--framework', 'jax'], 'no_such_key'),
    (['--exp', 'swinir_classical_x4', '--stage', 'gan', '--framework', 'jax'], 'no GAN stage'),
])
def test_bad_input_is_one_error_line(argv, match, capsys):
  assert throughput.main(argv) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error: ') and match in err[0], err


@pytest.mark.parametrize('exp, stage', [('esrgan', 'gan'), ('swinir_classical_x4', 'pretrain'),
                                        ('swinir_real_x4', 'gan'), ('span_x4', 'pretrain')])
def test_default_stage_is_the_gan_stage_only_where_there_is_one(exp, stage):
  config = throughput.make_config(throughput.parse_args(['--exp', exp]))
  assert throughput.resolve_stage(None, config, exp) == stage


@pytest.mark.slow
def test_enhance_benchmark_runs_both_frameworks_on_the_same_weights(tmp_path):
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location('enhance_benchmark', ROOT / 'benchmarks' / 'enhance.py')
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  out = tmp_path / 'enhance.json'
  assert bench.main(['--tiny', '--size', '40', '--tile', '24', '--tile-pad', '4', '--repeats',
                     '1', '--json', str(out)]) == 0
  r = json.loads(out.read_text())
  assert r['photo'] == 'chelsea 40x40' and r['tile'] == 24 and r['versions']['torch']
  for name in ('rrdbnet', 'srvgg_compact'):
    m = r['models'][name]
    assert m['output_megapixels'] == 160 * 160 / 1e6
    assert m['jax']['megapixels_per_s'] > 0 and m['torch']['megapixels_per_s'] > 0
    assert m['ratio'] == m['jax']['megapixels_per_s'] / m['torch']['megapixels_per_s']
    # the same weights in both frameworks: the tilings differ only where tiles meet
    assert m['mean_abs_diff'] < 1e-3 and m['model']['name'] == name


@pytest.mark.slow
def test_enhance_defaults_give_the_whole_image_on_a_full_size_photo_with_released_weights(tmp_path):
  """realesr-animevideov3-x4 on hubble_deep_field (872 x 1000: 2 x 3 windows at the defaults) run
  at enhance's defaults and whole: within 2 levels of 8 bits, under 0.1 % of pixels over 1."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location('enhance_benchmark', ROOT / 'benchmarks' / 'enhance.py')
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  out = tmp_path / 'defaults.json'
  assert bench.main(['--released', 'realesr-animevideov3-x4:hubble_deep_field', '--json',
                     str(out)]) == 0
  r = json.loads(out.read_text())['models']['realesr-animevideov3-x4']
  row = r['photos']['hubble_deep_field']
  assert r['tile'] == 512 and r['pad'] == 24 and row['size'] == '872x1000' and row['windows'] == 6
  assert row['max_levels'] <= 2 and row['frac_over_1'] < 1e-3, row
  assert row['whole_s'] > 0 and row['ratio'] == row['defaults_s'] / row['whole_s']


# ------------------------------------------------------------------ issue 23: the new architectures


@pytest.mark.slow
def test_throughput_times_a_new_architecture_against_its_spandrel_module(tmp_path):
  """JAX and spandrel's SPAN, same sizes, each in its own process; the torch side is spandrel's."""
  out = tmp_path / 'span.json'
  assert throughput.main(['--exp', 'span_x4', '--stage', 'pretrain', '--batch', '2', '--patch', '32',
                          '--steps', '1', '--repeats', '1', '--warmup', '1', '--set',
                          'model.num_features=8', '--compare', '--json', str(out)]) == 0
  r = json.loads(out.read_text())
  assert r['ratio'] == r['jax']['images_per_sec'] / r['torch']['images_per_sec'] > 0
  assert r['torch']['generator'].startswith('spandrel.architectures.SPAN')
  assert 'upstream module' in r['torch_basicsr_skipped']


@pytest.mark.slow
def test_device_table_dry_run_makes_every_call_of_a_row(tmp_path):
  """benchmarks/device.sh --dry-run (table.py at tiny sizes): train step vs PyTorch eager, and tiled
  inference vs PyTorch, for one row (SPAN: the quickest); a bad row name is one error line."""
  env = dict(os.environ, OUT=str(tmp_path), JAX_PLATFORMS='cpu')
  done = subprocess.run(['bash', str(ROOT / 'benchmarks' / 'device.sh'), '--dry-run', '--rows',
                         'span'], env=env, capture_output=True, text=True, check=False)
  assert done.returncode == 0, done.stdout + done.stderr
  table = json.loads((tmp_path / 'dry_run_table.json').read_text())
  assert table['dry_run'] and table['failed'] == [] and list(table['rows']) == ['span']
  row = table['rows']['span']
  assert row['train']['ratio'] > 0 and row['train']['jax']['images_per_sec'] > 0
  assert row['train']['torch']['generator'].startswith('spandrel.architectures.SPAN')
  assert row['enhance']['models']['span_x4']['ratio'] > 0
  bad = subprocess.run(['bash', str(ROOT / 'benchmarks' / 'device.sh'), '--dry-run', '--rows',
                        'swinirr'], env=env, capture_output=True, text=True, check=False)
  assert bad.returncode == 2 and bad.stderr.strip().startswith('error: unknown --rows swinirr')


@pytest.mark.slow
def test_memory_benchmark_reports_the_compiled_step_with_and_without_remat(tmp_path):
  """Both compiled figures, same parameters. (On XLA:CPU, nn.remat of unrolled transformer blocks
  does not lower the figure: 97.0 vs 93.1 MB for a 2x4-block HAT at b2 p128; the rematerialised
  RRDBNet trunk scans one block instead, tests/training/test_train_steps.py.)"""
  out = tmp_path / 'memory.json'
  assert memory.main(['--exp', 'hat_x4', '--batch', '2', '--patch', '64', '--precision', 'fp32',
                      '--set', 'model.embed_dim=12', '--set', 'model.depths=(2, 2)', '--set',
                      'model.num_heads=(2, 2)', '--set', 'model.window_size=4', '--set',
                      'model.num_feat=8', '--set', 'model.compress_ratio=3', '--set',
                      'model.squeeze_factor=4', '--json', str(out)]) == 0
  result = json.loads(out.read_text())
  r = result['remat']
  assert set(r) == {'0', '1'} and result['batch'] == 2 and result['patch'] == 64
  assert all(m['temp_size_in_bytes'] > 0 and m['total_gib'] > 0 for m in r.values())
  assert r['1']['argument_size_in_bytes'] == r['0']['argument_size_in_bytes']


def test_lpips_validation_benchmark_times_both_on_the_same_weights(tmp_path):
  out = tmp_path / 'lpips.json'
  assert perceptual.main(['--net', 'squeeze', '--images', '2', '--size', '64', '--repeats', '1',
                          '--json', str(out)]) == 0
  result = json.loads(out.read_text())
  assert result['jax_ms_per_image'] > 0 and result['torch_ms_per_image'] > 0
  assert result['max_abs_diff'] < 1e-5 and result['images'] == 2
