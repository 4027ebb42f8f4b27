"""EDSR and MDSR (report 002): parameter counts at the papers' sizes, MDSR's one parameter set for
x2/x3/x4, `model.size=large`, the `edsr` and `edsr_deblur` experiments, and the bar: a small EDSR x2
trained on the embedded photos beats bicubic on the held-out ones (Y channel, border crop)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from enhance_jax import evaluate
from enhance_jax import models
from enhance_jax import train
from enhance_jax.data import input_pipeline
from enhance_jax.errors import UserError
from enhance_jax.models.edsr import EDSR, MDSR
from enhance_jax.training import config as config_lib
from enhance_jax.training import train_steps


def _count(module, **kwargs):
  """Parameters of MODULE, from abstract shapes only (no big model is initialised)."""
  variables = jax.eval_shape(lambda k: module.init(k, jnp.zeros((1, 12, 12, 3)), **kwargs),
                             jax.random.key(0))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables))


def _random_variables(module, x, seed=0):
  """MODULE's variables for input X: init's structure (abstract), filled from numpy (initialising
  the convolutions for real costs seconds of compilation here)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(module.init, jax.random.key(0), x)
  return jax.tree.map(lambda s: rng.normal(0.0, 0.1, s.shape).astype(np.float32), shapes)


def _near(count, paper, rel):
  return abs(count - paper) <= rel * paper


# The EDSR paper's sizes: baseline x2/x3/x4 1.37M/1.55M/1.52M (Table 1: "1.5M"), EDSR x4 43M.
@pytest.mark.parametrize('scale,size,paper', [(2, 'baseline', 1.37e6), (3, 'baseline', 1.55e6),
                                               (4, 'baseline', 1.52e6), (4, 'large', 43e6)])
def test_edsr_parameter_counts(scale, size, paper):
  count = _count(EDSR(scale=scale, size=size))
  assert _near(count, paper, 0.02), f'EDSR {size} x{scale}: {count:,} parameters, paper {paper:,.0f}'


# Baseline MDSR (16 blocks of 64): "3.2M"; MDSR (80 blocks of 64, EDSR-PyTorch's r80f64): 8.0M.
@pytest.mark.parametrize('num_blocks,paper', [(16, 3.2e6), (80, 8.0e6)])
def test_mdsr_parameter_counts(num_blocks, paper):
  count = _count(MDSR(num_blocks=num_blocks))
  assert _near(count, paper, 0.02), f'MDSR {num_blocks} blocks: {count:,} parameters, paper {paper:,.0f}'


@pytest.mark.slow
def test_mdsr_gives_every_scale_from_one_parameter_set():
  model = MDSR(num_blocks=1, num_features=8)
  x = jax.random.uniform(jax.random.key(1), (2, 6, 5, 3))
  variables = _random_variables(model, x)  # init at the default scale creates every branch
  names = set(variables['params'])
  apply = jax.jit(model.apply, static_argnames='scale')  # one program per scale
  for s in (2, 3, 4):
    assert {f'pre_process_x{s}_0', f'pre_process_x{s}_1', f'upsample_x{s}'} <= names
    y = apply(variables, x, scale=s)  # the same variables, no new parameter
    assert y.shape == (2, 6 * s, 5 * s, 3) and y.dtype == jnp.float32
  np.testing.assert_allclose(apply(variables, x), apply(variables, x, scale=2))
  # x3's loss reaches the shared body and x3's branches only.
  grads = jax.jit(jax.grad(lambda p: jnp.sum(model.apply({'params': p}, x, scale=3) ** 2)))(
      variables['params'])
  norm = lambda name: sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads[name]))
  assert norm('body_0') > 0 and norm('pre_process_x3_0') > 0 and norm('upsample_x3') > 0
  assert norm('pre_process_x2_0') == norm('upsample_x4') == 0


def test_mdsr_scales_are_checked():
  model = MDSR(num_blocks=1, num_features=8, scales=(2, 4))
  x = jnp.zeros((1, 4, 4, 3))
  variables = _random_variables(model, x)
  assert 'upsample_x3' not in variables['params']
  with pytest.raises(ValueError, match='not x3'):
    model.apply(variables, x, scale=3)
  with pytest.raises(ValueError, match='scale=3 is not one of'):
    MDSR(scale=3, scales=(2, 4))
  config = config_lib.get_config('edsr', ['model.num_blocks=1'])
  with config.unlocked():
    config.model = ml_collections.ConfigDict({'name': 'mdsr', 'scale': 8})
  with pytest.raises(UserError, match='model.name=.mdsr. does not accept'):
    models.check_config(config)


def test_size_large_takes_effect():
  config = config_lib.get_config('edsr', ['model.size=large', 'model.scale=4',
                                          'data.degradation=bicubic(4)', 'data.patch_size=96'])
  model = models.build_generator(config)
  assert model.trunk == (32, 256, 0.1)
  assert _near(_count(model), 43e6, 0.02)
  with pytest.raises(UserError, match="size='large' is 32 blocks"):
    config_lib.get_config('edsr', ['model.size=large', 'model.num_blocks=8'])
  with pytest.raises(UserError, match="use 'baseline' or 'large'"):
    config_lib.get_config('edsr', ['model.size=huge'])


def test_an_imported_edsr_section_builds():
  """io/weights' sections (no `size` field) build as before, the large one included."""
  for nf, res_scale in ((64, 1.0), (256, 0.1)):
    section = {'name': 'edsr', 'num_blocks': 32, 'num_features': nf, 'scale': 4, 'res_scale': res_scale}
    config = ml_collections.ConfigDict({'model': section, 'train': {'precision': 'fp32'}})
    assert models.build_generator(config).trunk == (32, nf, res_scale)


def test_edsr_experiments_build_and_validate():
  c = config_lib.get_config('edsr')
  m = c.model
  assert (m.name, m.size, m.num_blocks, m.num_features, m.res_scale, m.scale) == (
      'edsr', 'baseline', 16, 64, 1.0, 2)
  assert (c.data.patch_size, c.data.degradation, c.discriminator.name) == (48, 'bicubic(2)', 'none')
  assert (c.loss.pixel_criterion, dict(c.loss.pretrain)) == ('l1', {'pixel': 1.0})
  t = c.train
  assert (t.pretrain_lr, t.b1, t.b2, t.lr_decay, t.ema_decay) == (1e-4, 0.9, 0.999, 0.5, 0.0)
  assert t.pretrain_milestones[:2] == (200_000, 400_000) and t.num_steps == t.pretrain_steps
  assert not train.has_gan_stage(c)
  d = config_lib.get_config('edsr_deblur')
  assert d.data.degradation == 'bicubic(2)|blur(1.5)' and d.model.to_dict() == m.to_dict()
  for scale, patch in ((3, 72), (4, 96)):  # LR 24 at every scale
    config_lib.get_config('edsr', [f'model.scale={scale}', f'data.degradation=bicubic({scale})',
                                   f'data.patch_size={patch}'])
  with pytest.raises(UserError, match='make the degradation factor equal the model scale'):
    config_lib.get_config('edsr', ['model.scale=4', 'data.patch_size=96'])
  config_lib.get_config('edsr', ['loss.pixel_criterion=l2'])


@pytest.mark.parametrize('name', ['edsr', 'edsr_deblur'])
def test_edsr_experiment_shapes(name):
  """The experiment's own sizes (16 x 64, 24 -> 48) through the trainer, abstractly."""
  config = config_lib.get_config(name)
  task = train_steps.make_task(config)
  hh, hw = input_pipeline.patch_hw(config)
  lr_shape, hr_shape = (2, hh // 2, hw // 2, 3), (2, hh, hw, 3)
  state = jax.eval_shape(lambda k: train_steps.init_state(task, k, lr_shape, hr_shape), jax.random.key(0))
  sr = jax.eval_shape(lambda v, x: train_steps.predict(task, v, x), {'params': state.g_params},
                      jax.ShapeDtypeStruct(lr_shape, np.float32))
  assert sr.shape == hr_shape and (hh, hw) == (48, 48)
  assert _near(sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.g_params)), 1.37e6, 0.02)


BAR_STEPS = 500


@pytest.fixture(scope='module')
def edsr_run(tmp_path_factory):
  """`edsr` x2 with a 4-block, 32-feature trunk, 500 L1 steps (60-90 s on 2 CPU cores) at lr 1e-3
  on the embedded photos' 48 -> 24 patches."""
  workdir = tmp_path_factory.mktemp('edsr')
  config = config_lib.get_config('edsr', [
      'model.num_blocks=4', 'model.num_features=32', 'train.pretrain_lr=1e-3',
      f'train.num_steps={BAR_STEPS}', f'train.pretrain_steps={BAR_STEPS}',
      f'train.eval_every_steps={BAR_STEPS}', f'train.checkpoint_every_steps={BAR_STEPS}',
      'data.val_patch_size=96', 'train.log_every_steps=100', 'train.progress=False'])
  train.train_and_evaluate(config, workdir)
  return workdir


@pytest.mark.slow
def test_edsr_beats_bicubic_on_held_out_photos(edsr_run):
  result = evaluate.run(edsr_run, 'latest')
  assert result['checkpoint']['step'] == BAR_STEPS and result['experiment'] == 'edsr'
  assert [r['name'] for r in result['images']] == ['astronaut', 'coffee']
  model, bicubic = result['mean']['model'], result['mean']['bicubic']
  assert model['psnr_y'] > bicubic['psnr_y'] + 0.5, (model, bicubic)  # 32.09 vs 31.16 dB here
  assert model['ssim_y'] > bicubic['ssim_y'], (model, bicubic)
