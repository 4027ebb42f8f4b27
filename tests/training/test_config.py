"""Experiment configs, `--set` overrides and the train CLI's error handling."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

from enhance_jax.errors import UserError
from enhance_jax.training import config as config_lib

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope='module')
def esrgan():
  return config_lib.get_config('esrgan')


def _get(config, key):
  node = config
  for part in key.split('.'):
    node = node[part]
  return node


def test_esrgan_defaults_follow_report_004(esrgan):
  m, loss = esrgan.model, esrgan.loss
  assert (m.num_blocks, m.num_features, m.growth_channels, m.scale) == (23, 64, 32, 4)
  assert m.residual_scale == pytest.approx(0.2)
  assert loss.gan_type == 'relativistic'
  assert loss.gan.content == pytest.approx(1.0)
  assert loss.gan.adversarial == pytest.approx(0.005)
  assert loss.content_before_activation is True
  assert loss.content_layer == 'conv5_4'
  assert dict(loss.pretrain) == {'pixel': 1.0}
  assert esrgan.train.early_stopping_patience > 0
  assert esrgan.train.pretrain_steps <= esrgan.train.num_steps
  assert esrgan.data.degradation == 'bicubic_blur(4, 1.5)'  # bicubic x4 down, then blur radius 1.5
  assert esrgan.data.train_on == 'degraded' and esrgan.train.best_metric == 'psnr'


@pytest.mark.parametrize('key', ['model.num_blocks', 'model.num_features', 'model.scale', 'data.source',
                                 'data.patch_size', 'train.batch_size', 'train.num_steps',
                                 'train.pretrain_steps', 'seed', 'data.degradation', 'data.train_on',
                                 'data.hr_resize_mode', 'data.normalize', 'data.fraction',
                                 'train.eval_every_steps', 'train.checkpoint_every_steps',
                                 'train.best_metric'])
def test_documented_keys_exist(esrgan, key):
  _get(esrgan, key)  # KeyError/AttributeError fails the test
  assert key in config_lib._leaf_keys(esrgan)


@pytest.mark.parametrize('key', ['data.blur_sigma', 'train.sample_every_epochs'])
def test_removed_keys_are_gone(esrgan, key):
  assert key not in config_lib._leaf_keys(esrgan)
  with pytest.raises(UserError, match='no such config key'):
    config_lib.get_config('esrgan', [f'{key}=1'])


@pytest.mark.slow
def test_every_experiment_loads_and_validates():
  names = config_lib.list_experiments()
  assert 'esrgan' in names and 'esrgan_cpu' in names
  for name in names:
    config = config_lib.get_config(name)
    assert config.name == name


@pytest.mark.parametrize('item, key, expected', [
    ('train.batch_size=32', 'train.batch_size', 32),
    ('seed=7', 'seed', 7),
    ('train.g_lr=3e-4', 'train.g_lr', 3e-4),
    ('train.g_lr=1', 'train.g_lr', 1.0),  # an int for a float field
    ('loss.gan.adversarial=0.01', 'loss.gan.adversarial', 0.01),
    ('data.augment=false', 'data.augment', False),
    ('data.augment=False', 'data.augment', False),
    ('loss.content_before_activation=true', 'loss.content_before_activation', True),
    ('data.source=folder:/photos/x=1', 'data.source', 'folder:/photos/x=1'),
    ('loss.gan_type=vanilla', 'loss.gan_type', 'vanilla'),
    ('train.pretrain_milestones=(100, 200)', 'train.pretrain_milestones', (100, 200)),
    ('train.pretrain_milestones=[5,6,7]', 'train.pretrain_milestones', (5, 6, 7)),
    ('train.pretrain_milestones=300', 'train.pretrain_milestones', (300,)),
])
def test_set_overrides_parse_to_the_field_type(item, key, expected):
  config = config_lib.get_config('esrgan', [item])
  value = _get(config, key)
  assert value == expected
  assert type(value) is type(expected)


def test_overrides_leave_the_experiment_untouched():
  config_lib.get_config('esrgan', ['train.batch_size=3'])
  assert config_lib.get_config('esrgan').train.batch_size == 16


@pytest.mark.parametrize('item, type_name', [
    ('train.batch_size=abc', 'int'),
    ('train.batch_size=1.5', 'int'),
    ('train.batch_size=True', 'int'),
    ('train.g_lr=fast', 'float'),
    ('data.augment=maybe', 'bool'),
    ('train.pretrain_milestones=soon', 'tuple'),
])
def test_wrong_type_names_key_and_type(item, type_name):
  key = item.split('=')[0]
  with pytest.raises(UserError) as e:
    config_lib.get_config('esrgan', [item])
  assert key in str(e.value)
  assert type_name in str(e.value)


def test_unknown_key_suggests_nearest():
  with pytest.raises(UserError) as e:
    config_lib.get_config('esrgan', ['train.batchsize=8'])
  msg = str(e.value)
  assert 'train.batchsize' in msg and 'train.batch_size' in msg


def test_missing_equals_sign():
  with pytest.raises(UserError, match='key=value'):
    config_lib.get_config('esrgan', ['train.batch_size'])


def test_unknown_experiment_suggests_esrgan():
  with pytest.raises(UserError) as e:
    config_lib.get_config('esrgn')
  assert 'esrgn' in str(e.value) and 'esrgan' in str(e.value)


@pytest.mark.parametrize('overrides, mentions', [
    (['model.scale=5'], 'model.scale'),
    (['model.scale=3'], 'data.patch_size'),  # x3 is supported, but 128 is no multiple of 3
    (['data.patch_size=130'], 'data.patch_size'),
    (['data.patch_size=4'], 'data.patch_size'),  # the minimum is 8
    (['data.patch_size=6'], 'data.patch_size'),
    (['model.scale=8', 'data.degradation=bicubic(8)', 'data.patch_size=36'], 'data.patch_size'),
    (['model.scale=2', 'data.degradation=bicubic(2)', 'data.patch_size=66'], 'data.patch_size'),
    (['train.batch_size=0'], 'train.batch_size'),
    (['data.val_fraction=1.0'], 'data.val_fraction'),
    (['data.val_fraction=-0.1'], 'data.val_fraction'),
    (['data.degradation=jpeg(90)'], 'jpeg'),
    (['data.degradation=bicubic(4'], 'bicubic(4'),
    (['data.degradation=bicubic'], 'bicubic'),
    (['data.train_on=hr'], 'data.train_on'),
    (['data.hr_resize_mode=squash'], 'data.hr_resize_mode'),
    (['data.normalize=zscore'], 'data.normalize'),
    (['data.fraction=0.0'], 'data.fraction'),
    (['data.fraction=1.5'], 'data.fraction'),
    (['train.eval_every_steps=0'], 'train.eval_every_steps'),
    (['train.checkpoint_every_steps=0'], 'train.checkpoint_every_steps'),
    (['train.best_metric=lpips'], 'train.best_metric'),
])
def test_validation_errors(overrides, mentions):
  with pytest.raises(UserError, match=re.escape(mentions)):
    config_lib.get_config('esrgan', overrides)


@pytest.mark.parametrize('overrides, degradation, scale', [
    (['data.degradation=bicubic(2)'], 'bicubic(2)', 4),
    (['data.degradation=bicubic_blur(8, 1.5)'], 'bicubic_blur(8, 1.5)', 4),
    (['data.degradation=down_up(4)'], 'down_up(4)', 4),
    (['model.scale=2'], 'bicubic_blur(4, 1.5)', 2),
    (['model.scale=1'], 'bicubic_blur(4, 1.5)', 1),
    (['model.scale=8', 'data.degradation=bicubic(4)'], 'bicubic(4)', 8),
])
def test_degradation_factor_must_equal_model_scale(overrides, degradation, scale):
  with pytest.raises(UserError) as e:
    config_lib.get_config('esrgan', overrides)
  msg = str(e.value)
  assert f'data.degradation={degradation!r}' in msg and f'model.scale={scale}' in msg, msg


@pytest.mark.parametrize('overrides', [
    ['model.scale=1', 'data.degradation=down_up(5)'],
    ['model.scale=1', "data.degradation=one_of('salt_pepper(0.3, 0.6)', 'darken(0.3, 0.6)')"],
    ['model.scale=1', 'data.degradation=color_noise(0.3, 0.6)|clip'],
    ['model.scale=2', 'data.degradation=bicubic(2)'],
    ['data.degradation=bicubic(4)|blur(0.8)'],
    ['data.degradation=blur(0.8)|bicubic(4)|clip'],
    ['model.scale=4', 'data.degradation=bicubic(2)|bicubic(2)', 'data.patch_size=64'],
    ['data.patch_size=8'],  # the new minimum
    ['model.scale=1', 'data.train_on=clean', 'data.degradation=down_up(4)'],  # the target as input
])
def test_matching_degradation_and_scale_validate(overrides):
  config = config_lib.get_config('esrgan', overrides)
  assert config.data.degradation == dict(o.split('=', 1) for o in overrides).get(
      'data.degradation', 'bicubic_blur(4, 1.5)')


@pytest.mark.parametrize('scale,patch', [(3, 90), (8, 96)])
def test_x3_and_x8_validate_for_a_model_that_makes_them(scale, patch):
  """ResNet-SR upsamples by any factor; RRDBNet (x4 after an unshuffle) is refused at x3 and x8
  when the config is made, not by a shape error in the first step."""
  config = config_lib.get_config('catsdogs_resnet', [
      f'model.scale={scale}', f'data.degradation=bicubic({scale})', f'data.hr_resize={patch}',
      f'data.patch_size={patch}', f'data.val_patch_size={patch}'])
  assert config.model.scale == scale
  with pytest.raises(UserError, match=f'scale must be 1, 2 or 4, got {scale}'):
    config_lib.get_config('esrgan', [f'model.scale={scale}', f'data.degradation=bicubic({scale})',
                                     f'data.patch_size={patch}'])


def test_train_on_clean_needs_a_same_size_model():
  with pytest.raises(UserError, match='train_on=clean .* model.scale=1 .got 4'):
    config_lib.get_config('esrgan', ['data.train_on=clean'])


def test_a_model_whose_output_is_not_the_target_size_is_refused(monkeypatch):
  """A model that ignores model.scale (here one returning its input) is caught by the abstract build."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from enhance_jax import models# pylint: disable=g-import-not-at-top

  class Same(nn.Module):
    features: tuple = ()
    scale: int = 1
    dtype: object = None

    def __call__(self, x, train=False):
      return x

  monkeypatch.setitem(models.GENERATORS, 'deconv_sr', Same)
  with pytest.raises(UserError, match='makes 16x16 of a 16x16 input, not the 64x64 target'):
    config_lib.get_config('catsdogs_deconv', ['data.hr_resize=64', 'data.patch_size=64',
                                              'data.val_patch_size=64', 'model.scale=4',
                                              'data.degradation=bicubic(4)'])


def test_pretrain_steps_may_exceed_num_steps():
  # the run ends at num_steps in whatever stage it has reached (no longer a config error)
  config = config_lib.get_config('esrgan', ['train.pretrain_steps=10', 'train.num_steps=5'])
  assert (config.train.pretrain_steps, config.train.num_steps) == (10, 5)


def test_returned_config_is_locked(esrgan):
  with pytest.raises((AttributeError, KeyError)):
    esrgan.train.new_field = 1
  with pytest.raises((AttributeError, KeyError)):
    esrgan.brand_new = 1
  with pytest.raises(TypeError):
    esrgan.train.batch_size = 'many'  # ConfigDict keeps field types too


def _cli(*args):
  env = dict(os.environ, PYTHONWARNINGS='ignore')
  return subprocess.run([sys.executable, '-m', 'enhance_jax.train', *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize('args', [('--exp', 'nope'), ('--set', 'train.batch_size=abc'),
                                  ('--set', 'train.batchsize=8'), ('--set', 'model.scale=5'),
                                  ('--set', 'data.degradation=bicubic(2)')])
def test_cli_user_errors_exit_2_with_one_line(args, tmp_path):
  out = _cli(*args, '--workdir', str(tmp_path / 'run'))
  assert out.returncode == 2, out.stderr
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1, out.stderr
  assert lines[0].startswith('error:')
  assert 'Traceback' not in out.stderr
  assert not (tmp_path / 'run').exists()


@pytest.mark.slow
def test_cli_list_prints_experiments():
  out = _cli('--list')
  assert out.returncode == 0, out.stderr
  assert 'esrgan' in out.stdout.split()
