"""Experiment configs, `--set` overrides and the train CLI's error handling."""

import os
import pathlib
import subprocess
import sys

import pytest

from enhance_jax import config as config_lib
from enhance_jax.errors import UserError

REPO = pathlib.Path(__file__).resolve().parent.parent


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


@pytest.mark.parametrize('key', ['model.num_blocks', 'model.num_features', 'model.scale', 'data.source',
                                 'data.patch_size', 'train.batch_size', 'train.num_steps',
                                 'train.pretrain_steps', 'seed'])
def test_documented_keys_exist(esrgan, key):
  _get(esrgan, key)  # KeyError/AttributeError fails the test
  assert key in config_lib._leaf_keys(esrgan)


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
    (['model.scale=3'], 'model.scale'),
    (['train.pretrain_steps=10', 'train.num_steps=5'], 'train.pretrain_steps'),
    (['data.patch_size=130'], 'data.patch_size'),
    (['data.patch_size=8'], 'data.patch_size'),
    (['train.batch_size=0'], 'train.batch_size'),
    (['data.val_fraction=1.0'], 'data.val_fraction'),
    (['data.val_fraction=-0.1'], 'data.val_fraction'),
])
def test_validation_errors(overrides, mentions):
  with pytest.raises(UserError, match=mentions.replace('.', r'\.')):
    config_lib.get_config('esrgan', overrides)


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


@pytest.mark.parametrize('args', [('--exp', 'nope'), ('--set', 'train.batch_size=abc'),
                                  ('--set', 'train.batchsize=8'), ('--set', 'model.scale=3')])
def test_cli_user_errors_exit_2_with_one_line(args, tmp_path):
  out = _cli(*args, '--workdir', str(tmp_path / 'run'))
  assert out.returncode == 2, out.stderr
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1, out.stderr
  assert lines[0].startswith('error:')
  assert 'Traceback' not in out.stderr
  assert not (tmp_path / 'run').exists()


def test_cli_list_prints_experiments():
  out = _cli('--list')
  assert out.returncode == 0, out.stderr
  assert 'esrgan' in out.stdout.split()
