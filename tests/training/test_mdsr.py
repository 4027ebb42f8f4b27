"""MDSR training (issue 13): the `mdsr` experiment, one model trained on x2, x3 and x4, each batch
one scale cycling by step (2, 3, 4, 2, ...), LR made on the device by that scale's degradation, one
compiled step per scale and no recompile after the first cycle; validation and evaluate score every
scale."""

import json

import jax
import numpy as np
import pytest

from enhance_jax import evaluate
from enhance_jax import models
from enhance_jax import train
from enhance_jax.data import input_pipeline
from enhance_jax.errors import UserError
from enhance_jax.training import config as config_lib
from enhance_jax.training import train_steps

TINY = ['model.num_blocks=2', 'model.num_features=8', 'data.patch_size=24', 'data.val_patch_size=48',
        'train.batch_size=2', 'train.num_steps=6', 'train.pretrain_steps=6',
        'train.eval_every_steps=6', 'train.checkpoint_every_steps=6', 'train.log_every_steps=3',
        'train.progress=False']


def test_mdsr_experiment_builds_and_validates():
  c = config_lib.get_config('mdsr')
  assert (c.model.name, tuple(c.model.scales), c.model.scale, c.model.num_blocks) == (
      'mdsr', (2, 3, 4), 2, 16)
  assert c.data.degrade_on_device and c.data.patch_size == 96 and c.discriminator.name == 'none'
  assert models.hr_multiple(c) == 12  # lcm(2, 3, 4)
  task = train_steps.make_task(c)
  assert task.scales == (2, 3, 4) and [s for s, _ in task.degrades] == [2, 3, 4]
  assert [train_steps.step_scale(task, i) for i in range(7)] == [2, 3, 4, 2, 3, 4, 2]
  assert [input_pipeline.degradation_spec(c, s) for s in (2, 3, 4)] == [
      'bicubic(2)', 'bicubic(3)', 'bicubic(4)']
  with pytest.raises(UserError, match='multiple of 12'):
    config_lib.get_config('mdsr', ['data.patch_size=100'])
  with pytest.raises(UserError, match='degrade_on_device=True'):
    config_lib.get_config('mdsr', ['data.degrade_on_device=False'])
  with pytest.raises(UserError, match='scale_degradations.x3'):
    config_lib.get_config('mdsr', ['data.scale_degradations.x3=bicubic(2)'])
  # Single-scale models: no scales, the same step as before.
  edsr = train_steps.make_task(config_lib.get_config('edsr'))
  assert edsr.scales == () and train_steps.step_scale(edsr, 5) is None


@pytest.mark.slow
def test_mdsr_trains_cycling_scales_with_one_compile_each(tmp_path, monkeypatch):
  traced, called, jitted = [], [], {}
  real_step, real_jit_steps = train_steps.pretrain_step, train_steps.jit_steps

  def counting_step(task, state, batch, frozen=None, scale=None):
    traced.append((scale, batch['hr'].shape))  # runs once per trace (compilation)
    return real_step(task, state, batch, frozen, scale=scale)

  def recording_jit_steps(task, mesh):
    steps = real_jit_steps(task, mesh)
    jitted.update(steps)

    def recorder(s, fn):
      return lambda *a: (called.append(s), fn(*a))[1]

    return {**steps, 'pretrain': {s: recorder(s, fn) for s, fn in steps['pretrain'].items()}}

  monkeypatch.setattr(train_steps, 'pretrain_step', counting_step)
  monkeypatch.setattr(train_steps, 'jit_steps', recording_jit_steps)
  config = config_lib.get_config('mdsr', TINY)
  state = train.train_and_evaluate(config, tmp_path)
  assert int(state.step) == 6
  assert called == [2, 3, 4, 2, 3, 4]
  assert sorted(s for s, _ in traced) == [2, 3, 4]  # one trace per scale, none in the second cycle
  assert {shape for _, shape in traced} == {(2, 24, 24, 3)}  # one HR shape for every scale
  assert {s: fn._cache_size() for s, fn in jitted['pretrain'].items()} == {2: 1, 3: 1, 4: 1}
  # Validation scored each scale (their mean is what best_metric reads).
  val = [r for r in map(json.loads, (tmp_path / 'metrics.jsonl').read_text().splitlines())
         if r.get('split') == 'val'][-1]
  for s in (2, 3, 4):
    assert np.isfinite(val[f'psnr_x{s}'])
  assert val['psnr'] == pytest.approx(np.mean([val[f'psnr_x{s}'] for s in (2, 3, 4)]))

  # evaluate: the top level is model.scale's result as for every model, and each scale under 'scales'.
  result = evaluate.run(tmp_path, 'latest', out=tmp_path / 'eval')
  assert result['scale'] == 2 and set(result['scales']) == {2, 3, 4}
  assert result['scales'][2]['mean'] == result['mean']
  for s in (2, 3, 4):
    r = result['scales'][s]
    assert r['kinds'] == ['model', 'bicubic', 'nearest']
    assert [im['name'] for im in r['images']] == ['astronaut', 'coffee']
    assert np.isfinite(r['mean']['model']['psnr']) and np.isfinite(r['mean']['bicubic']['psnr'])
  # x4's bicubic baseline is the worst: each scale's LR was made at that scale.
  assert (result['scales'][2]['mean']['bicubic']['psnr'] > result['scales'][3]['mean']['bicubic']['psnr']
          > result['scales'][4]['mean']['bicubic']['psnr'])
  assert (tmp_path / 'eval' / 'astronaut_x4.png').exists()
  assert '## x4' in (tmp_path / 'eval' / 'metrics.md').read_text()

  # enhance runs the one model at each of its scales (--scale), and refuses any other.
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from enhance_jax import enhance# pylint: disable=g-import-not-at-top
  photo = tmp_path / 'photo.png'
  Image.fromarray((np.random.default_rng(0).random((20, 26, 3)) * 255).astype(np.uint8)).save(photo)
  for s in (2, 3, 4):
    out = tmp_path / f'photo_x{s}.png'
    assert enhance.main([str(photo), '-o', str(out), '--workdir', str(tmp_path), '--scale', str(s),
                         '--checkpoint', 'latest', '--tile', '0']) == 0
    assert Image.open(out).size == (26 * s, 20 * s)
  assert enhance.main([str(photo), '-o', str(tmp_path / 'x8.png'), '--workdir', str(tmp_path),
                       '--scale', '8', '--checkpoint', 'latest']) == 2
  assert not (tmp_path / 'x8.png').exists()


def test_mdsr_step_degrades_each_scale():
  """The step's model batch: the HR patch degraded by the scale's bicubic, on the device."""
  config = config_lib.get_config('mdsr', TINY)
  task = train_steps.make_task(config)
  hr = jax.random.uniform(jax.random.key(0), (2, 24, 24, 3))
  for s in (2, 3, 4):
    lr = train_steps.model_batch(task, {'hr': hr}, jax.random.key(1), s)['lr']
    assert lr.shape == (2, 24 // s, 24 // s, 3)
    want = input_pipeline.degrade_fixed(np.asarray(hr), config, scale=s)
    np.testing.assert_allclose(lr, np.stack(want), atol=1e-4)


def test_mdsr_nima_and_mdsr_deblur_experiments():
  hybrid = config_lib.get_config('mdsr_nima')
  assert dict(hybrid.loss.pretrain) == {'mse': 1.0, 'nima': 0.4} and hybrid.model.name == 'mdsr'
  task = train_steps.make_task(hybrid)
  assert task.scales == (2, 3, 4) and set(task.frozen) == {'nima'}
  assert task.frozen['nima'].backbone == 'mnasnet'
  deblur = config_lib.get_config('mdsr_deblur')
  assert [input_pipeline.degradation_spec(deblur, s) for s in (2, 3, 4)] == [
      f'bicubic({s})|blur(1.5)' for s in (2, 3, 4)]
  assert dict(deblur.loss.pretrain) == {'pixel': 1.0, 'mse': 0.0, 'nima': 0.0}
  assert set(train_steps.make_task(deblur).frozen) == set()  # the NIMA term at weight 0 loads nothing
  on = config_lib.get_config('mdsr_deblur', ['loss.pretrain.nima=0.1'])
  assert set(train_steps.make_task(on).frozen) == {'nima'}
  # Each scale's LR is the blurred bicubic downscale: sharper bicubic alone differs.
  hr = np.random.default_rng(0).random((48, 48, 3)).astype(np.float32)
  for s in (2, 3, 4):
    blurred = input_pipeline.degrade_fixed([hr], deblur, scale=s)[0]
    plain = input_pipeline.degrade_fixed([hr], config_lib.get_config('mdsr'), scale=s)[0]
    assert blurred.shape == plain.shape == (48 // s, 48 // s, 3)
    assert blurred.std() < plain.std()
