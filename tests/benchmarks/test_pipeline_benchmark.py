"""benchmarks/pipeline.py runs end to end at a tiny size: it decodes, times each worker count,
measures (or takes) the step's consumption and writes the comparison; bad input is one error
line."""

import json
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / 'benchmarks'))

import pipeline  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

TINY = ['--set', 'model.num_blocks=1', '--set', 'model.num_features=8', '--set',
        'model.growth_channels=4', '--set', 'discriminator.num_features=8', '--set',
        'discriminator.dense_features=16', '--set', 'loss.content_layer=conv2_2']
# A short warm-up keeps the tests fast; the default (the buffers' capacity) is checked apart.
SHORT = ['--exp', 'esrgan_cpu', '--batch', '2', '--patch', '32', '--batches', '3', '--warmup', '2']


def check_rows(r, workers):
  assert [row['workers'] for row in r['rows']] == workers
  assert all(row['images_per_sec'] > 0 and row['timed_batches'] == 3 for row in r['rows'])
  assert r['source'] == 'folder' and r['dataset'] == 'embedded, as PNG files'  # decodes PNGs
  assert r['images'] > 0 and r['goal'] == 2.0
  assert r['headroom'] == pytest.approx(r['best']['images_per_sec'] / r['step_images_per_sec'])
  assert r['meets_goal'] == (r['headroom'] >= 2.0)


@pytest.mark.slow
def test_pipeline_benchmark_writes_json(tmp_path):
  out = tmp_path / 'pl.json'
  assert pipeline.main([*SHORT, '--workers', '1', '--step-images-per-sec', '10', '--step-device',
                        'H100', '--step-note', 'pretrain', '--json', str(out)]) == 0
  r = json.loads(out.read_text())
  check_rows(r, [0, 1])
  assert r['step'] == {'measured_here': False, 'given_by': '--step-images-per-sec',
                       'device': 'H100', 'note': 'pretrain', 'images_per_sec': 10.0}


@pytest.mark.slow
def test_pipeline_benchmark_measures_both_stages_here(tmp_path):
  out = tmp_path / 'pl.json'
  assert pipeline.main([*SHORT, '--workers', '0', '--step-steps', '1', '--json', str(out),
                        *TINY]) == 0
  r = json.loads(out.read_text())
  check_rows(r, [0])
  step = r['step']
  assert step['measured_here'] and step['device'] == 'cpu'
  assert set(step['stages']) == {'pretrain', 'gan'}
  assert all(s['images_per_sec'] > 0 for s in step['stages'].values())
  larger = max(step['stages'], key=lambda s: step['stages'][s]['images_per_sec'])
  assert step['stage'] == larger
  assert r['step_images_per_sec'] == step['stages'][larger]['images_per_sec']


def test_warmup_covers_grains_buffers():
  from enhance_jax.data import input_pipeline# pylint: disable=g-import-not-at-top
  held = input_pipeline.READ_OPTIONS.prefetch_buffer_size
  assert pipeline.buffered_batches(0) == held
  assert pipeline.buffered_batches(4) > 4 * held
  assert pipeline.worker_counts(8) == [0, 1, 2, 4, 8] and pipeline.worker_counts(6)[-1] == 6


@pytest.mark.parametrize('argv', [['--exp', 'nosuch'],
                                  ['--set', 'data.source=folder:/no/such/folder'],
                                  ['--set', 'train.no_such_key=1'],
                                  ['--workers', '-1']])
def test_bad_input_is_one_error_line(argv, capsys):
  assert pipeline.main(['--exp', 'esrgan_cpu', *argv, '--step-images-per-sec', '1']) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1, err
