"""The benchmarks run end to end at a tiny size and write valid JSON; FLOPs agree with the analytic
count (a device-independent figure that must not regress)."""

import json
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'benchmarks'))

import pipeline  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import throughput  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

TINY = ['--set', 'model.num_blocks=1', '--set', 'model.num_features=8', '--set',
        'model.growth_channels=4', '--set', 'discriminator.num_features=8', '--set',
        'discriminator.dense_features=16', '--set', 'loss.content_layer=conv2_2']


@pytest.mark.parametrize('stage', ['pretrain', 'gan'])
def test_throughput_compare_writes_json_with_ratio_and_flops(stage, tmp_path):
  out = tmp_path / 'tp.json'
  assert throughput.main(['--exp', 'esrgan_cpu', '--stage', stage, '--batch', '2', '--patch', '32',
                          '--steps', '1', '--repeats', '2', '--warmup', '1', '--compare',
                          '--json', str(out), *TINY]) == 0
  r = json.loads(out.read_text())
  for fw in ('jax', 'torch'):
    assert r[fw]['images_per_sec'] > 0 and len(r[fw]['per_step_s']) == 2
  assert r['ratio'] == pytest.approx(r['jax']['images_per_sec'] / r['torch']['images_per_sec'])
  assert r['jax']['temp_bytes'] > 0
  assert 0.85 < r['jax']['xla_over_analytic'] < 1.15, r['jax']['xla_over_analytic']


def test_analytic_flops_of_the_report_rrdbnet():
  import flops  # pylint: disable=g-import-not-at-top
  from enhance_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  m = config_lib.get_config('esrgan').model
  # 2 x (params of the 3x3 convs) x pixels, summed per resolution: trunk at 32x32, up1 at 64x64,
  # up2/hr/last at 128x128 (biases excluded).
  trunk = 9 * (3 * 64 + 23 * 3 * sum((64 + 32 * i) * 32 for i in range(4)) + 23 * 3 * 192 * 64
               + 64 * 64)
  expected = 2 * (trunk * 32 * 32 + 9 * 64 * 64 * 64 * 64 + 9 * (64 * 64 * 2 + 64 * 3) * 128 * 128)
  assert flops.rrdbnet(32, 32, m) == expected


def test_pipeline_benchmark_writes_json(tmp_path):
  out = tmp_path / 'pl.json'
  assert pipeline.main(['--exp', 'esrgan_cpu', '--workers', '1', '--batch', '2', '--patch', '32',
                        '--batches', '2', '--step-images-per-sec', '10', '--json', str(out)]) == 0
  r = json.loads(out.read_text())
  assert [row['workers'] for row in r['rows']] == [0, 1]
  assert all(row['images_per_sec'] > 0 for row in r['rows'])
  assert r['headroom'] == pytest.approx(r['best']['images_per_sec'] / 10)


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
