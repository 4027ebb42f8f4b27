"""The shared L1 run (conftest.l1_run: the train command's main, in process, on the embedded photos)
read back by evaluate (its run and main, and `python -m enhance_jax.evaluate` in a subprocess), and
evaluate's bad inputs."""

import json
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.torch_reference import metric_references
from enhance_jax import evaluate
from enhance_jax.errors import UserError
from enhance_jax.io import checkpoints as ckpt_lib

pytestmark = pytest.mark.slow  # the shared training run


def test_l1_stage_beats_bicubic_on_held_out_photos(l1_run):
  result = evaluate.run(l1_run, 'best')
  model, bicubic = result['mean']['model'], result['mean']['bicubic']
  assert model['psnr'] > bicubic['psnr'] + 0.5, (model, bicubic)
  assert model['psnr_y'] > bicubic['psnr_y'], (model, bicubic)
  assert model['ssim'] > bicubic['ssim'], (model, bicubic)


def test_evaluate_writes_the_interface_json_table_and_grids(l1_run):
  assert evaluate.main(['--workdir', str(l1_run), '--checkpoint', 'latest']) == 0
  out = l1_run / 'eval'
  result = json.loads((out / 'metrics.json').read_text())
  for kind in ('model', 'bicubic'):
    assert set(result['mean'][kind]) == {'psnr', 'ssim', 'psnr_y', 'ssim_y', 'mse'}
  names = [r['name'] for r in result['images']]
  assert names == ['astronaut', 'coffee']
  for r in result['images']:
    assert (out / f'{r["name"]}.png').is_file()
    assert 0 < r['model']['mse'] < 0.05
  assert result['checkpoint']['step'] == 400
  assert np.isclose(result['mean']['model']['psnr'],
                    np.mean([r['model']['psnr'] for r in result['images']]))
  table = (out / 'metrics.md').read_text()
  assert '| astronaut |' in table and '**mean**' in table


def test_training_writes_logs_curves_samples_and_checkpoints(l1_run):
  records = [json.loads(line) for line in (l1_run / 'metrics.jsonl').read_text().splitlines()]
  val = [r for r in records if r['split'] == 'val']
  assert [r['step'] for r in val] == [200, 400]
  train_records = [r for r in records if r['split'] == 'train']
  assert all({'g_loss', 'loss_pixel', 'psnr', 'ssim', 'step_time', 'images_per_sec'} <= set(r)
             for r in train_records)
  assert train_records[-1]['g_loss'] < train_records[0]['g_loss']
  assert (l1_run / 'loss_curves.png').stat().st_size > 1000
  assert (l1_run / 'samples.png').is_file()
  assert list((l1_run / 'tb').glob('events.out.tfevents.*'))
  ckpts = ckpt_lib.Checkpoints(l1_run, read_only=True)
  assert ckpts.latest.all_steps() == [200, 400]
  assert ckpts.best.latest_step() in (200, 400)


def test_evaluate_on_a_folder(l1_run, tmp_path):
  from PIL import Image
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(tmp_path / 'noise.png')
  result = evaluate.run(l1_run, 'best', data=f'folder:{tmp_path}', out=tmp_path / 'out')
  assert result['images'][0]['name'] == 'noise'
  # mod-cropped to a multiple of the scale: 68 x 88
  assert (result['images'][0]['height'], result['images'][0]['width']) == (68, 88)


def test_evaluate_bad_inputs(l1_run, tmp_path):
  with pytest.raises(UserError, match='available'):
    evaluate.run(l1_run, '12345')
  with pytest.raises(UserError, match='not best, latest or a step'):
    evaluate.run(l1_run, 'newest')
  with pytest.raises(UserError, match='does not exist'):
    evaluate.run(tmp_path / 'missing')
  (tmp_path / 'empty').mkdir()
  with pytest.raises(UserError, match='holds no checkpoints'):
    evaluate.run(tmp_path / 'empty')
  with pytest.raises(UserError, match='holds no'):
    evaluate.run(l1_run, data=f'folder:{tmp_path}')


def test_evaluate_cli_error_is_one_line(tmp_path):
  proc = subprocess.run([sys.executable, '-m', 'enhance_jax.evaluate', '--workdir', str(tmp_path)],
                        capture_output=True, text=True, check=False)
  assert proc.returncode == 2
  lines = [l for l in proc.stderr.splitlines() if l.strip() and 'absl' not in l]
  assert len(lines) == 1 and lines[0].startswith('error:'), proc.stderr


def test_evaluate_adds_perceptual_columns_for_model_baselines_and_target(l1_run, tmp_path, monkeypatch,
                                                                         capsys):
  cache = tmp_path / 'models'
  cache.mkdir()
  (cache / 'niqe_pris_params.npz').write_bytes(metric_references.pristine_params_path().read_bytes())
  monkeypatch.setenv('ENHANCE_JAX_MODELS', str(cache))  # NIQE's parameters found in the model cache
  out = tmp_path / 'eval'
  assert evaluate.main(['--workdir', str(l1_run), '--out', str(out),
                        '--metrics', 'psnr,ssim,lpips,ms_ssim,niqe']) == 0
  printed = capsys.readouterr().out
  assert 'mean lpips' in printed and 'mean niqe' in printed and 'target' in printed
  result = json.loads((out / 'metrics.json').read_text())
  for kind in ('model', 'bicubic', 'nearest'):
    m = result['mean'][kind]
    assert m['lpips'] >= 0 and 0 < m['ms_ssim'] <= 1 and m['niqe'] > 0, (kind, m)
  assert set(result['mean']['target']) == {'niqe'} and result['images'][0]['target']['niqe'] > 0
  header = (out / 'metrics.md').read_text().splitlines()[2]
  assert 'lpips model' in header and 'niqe bicubic' in header and 'niqe target' in header
  assert evaluate.main(['--workdir', str(l1_run), '--metrics', 'psnr,fid']) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error: --metrics fid')
