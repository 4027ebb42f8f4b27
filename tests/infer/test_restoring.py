"""One restore for every consumer: a converted model directory, a released weights file and a training
workdir give the same generator to enhance, evaluate and training's model.init_from."""

import pathlib
import sys

import jax
import numpy as np
import pytest
import skimage.data
import skimage.transform

from conftest import tiny_config
from enhance_jax import convert
from enhance_jax import enhance
from enhance_jax import evaluate
from enhance_jax import train
from enhance_jax.errors import UserError
from enhance_jax.infer import restoring
from enhance_jax.io import image_io
from enhance_jax.training import train_steps

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # `benchmarks` for bare pytest


@pytest.fixture(scope='module')
def released(tmp_path_factory):
  """A tiny BasicSR RRDBNet x4 (tiny_config's sizes) saved as a release, and its converted directory."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks.torch_reference import models as torch_models  # pylint: disable=g-import-not-at-top
  torch.manual_seed(1)
  net = torch_models.RRDBNet(num_feat=8, num_block=1, num_grow_ch=4, scale=4)
  with torch.no_grad():
    net.conv_last.bias.fill_(0.4)
  root = tmp_path_factory.mktemp('released')
  torch.save({'params_ema': net.state_dict()}, root / 'tiny_x4.pth')
  assert convert.main([str(root / 'tiny_x4.pth'), '--out', str(root / 'tiny_x4')]) == 0
  return root / 'tiny_x4.pth', root / 'tiny_x4'


def test_a_weights_file_and_its_converted_directory_restore_the_same_generator(released):
  pth, model_dir = released
  a, b = restoring.restore(pth), restoring.restore(model_dir)
  assert a.model == b.model == {'name': 'rrdbnet', 'num_blocks': 1, 'num_features': 8,
                                'growth_channels': 4, 'scale': 4}
  jax.tree.map(np.testing.assert_array_equal, a.variables, b.variables)
  assert b.meta['arch'] == 'rrdbnet' and b.config is None


def test_enhance_from_the_directory_equals_enhance_from_the_file(released, tmp_path):
  pth, model_dir = released
  photo = skimage.transform.resize(skimage.data.chelsea(), (40, 60)).astype(np.float32)
  image_io.write(tmp_path / 'cat.png', photo)
  assert enhance.main([str(tmp_path / 'cat.png'), '-o', str(tmp_path / 'a.png'), '--weights',
                       str(pth)]) == 0
  assert enhance.main([str(tmp_path / 'cat.png'), '-o', str(tmp_path / 'b.png'), '--workdir',
                       str(model_dir)]) == 0
  a, b = image_io.read(tmp_path / 'a.png')[0], image_io.read(tmp_path / 'b.png')[0]
  assert a.shape == (160, 240, 3)
  np.testing.assert_array_equal(a, b)


def test_evaluate_scores_a_converted_directory_on_the_bicubic_protocol(released, tmp_path):
  _, model_dir = released
  photo = skimage.data.astronaut()[:96, :128]
  (tmp_path / 'data').mkdir()
  image_io.write(tmp_path / 'data' / 'a.png', photo.astype(np.float32) / 255.0)
  result = evaluate.run(model_dir, data=f'folder:{tmp_path / "data"}', out=tmp_path / 'eval')
  assert result['scale'] == 4 and result['checkpoint']['step'] == 0
  assert result['kinds'] == ['model', 'bicubic', 'nearest']
  assert (tmp_path / 'eval' / 'metrics.json').is_file() and (tmp_path / 'eval' / 'a.png').is_file()


@pytest.mark.slow
def test_init_from_starts_the_generator_and_its_ema_from_the_converted_weights(released):
  _, model_dir = released
  config = tiny_config(f'model.init_from={model_dir}', 'train.ema_decay=0.999')
  task = train_steps.make_task(config)
  state = train_steps.init_state(task, jax.random.key(0), (2, 8, 8, 3), (2, 32, 32, 3))
  started = restoring.with_initial_weights(state, config)
  want = restoring.restore(model_dir).variables['params']
  jax.tree.map(np.testing.assert_array_equal, dict(started.g_params), dict(want))
  jax.tree.map(np.testing.assert_array_equal, dict(started.ema_params), dict(want))
  assert not np.array_equal(state.g_params['conv_first']['kernel'], want['conv_first']['kernel'])


@pytest.mark.slow
def test_training_from_a_release_runs_and_a_misfit_is_one_sentence(released, tmp_path, capsys):
  pth, _ = released
  assert train.main(['--exp', 'esrgan_cpu', '--workdir', str(tmp_path / 'ok'),
                     '--set', f'model.init_from={pth}', '--set', 'model.num_blocks=1',
                     '--set', 'model.num_features=8', '--set', 'model.growth_channels=4',
                     '--set', 'data.patch_size=32', '--set', 'data.val_patch_size=64',
                     '--set', 'train.batch_size=2', '--set', 'train.pretrain_steps=2',
                     '--set', 'train.num_steps=2', '--set', 'train.progress=False']) == 0
  assert f'generator initialised from {pth}' in capsys.readouterr().out
  assert train.main(['--exp', 'esrgan_cpu', '--workdir', str(tmp_path / 'bad'),
                     '--set', f'model.init_from={pth}', '--set', 'model.num_blocks=2',
                     '--set', 'model.num_features=8', '--set', 'model.growth_channels=4',
                     '--set', 'train.progress=False']) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith('error: model.init_from=') and "'body_1/" in err
  assert 'model.num_blocks=1' in err and len(err.splitlines()) == 1
  assert not (tmp_path / 'bad' / 'checkpoints').exists() or not any(
      (tmp_path / 'bad' / 'checkpoints').iterdir())


def test_init_from_another_architecture_is_refused(tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks.torch_reference import models as torch_models  # pylint: disable=g-import-not-at-top
  torch.save(torch_models.SRVGGNetCompact(num_feat=8, num_conv=2).state_dict(), tmp_path / 'v.pth')
  config = tiny_config(f'model.init_from={tmp_path / "v.pth"}')
  task = train_steps.make_task(config)
  state = train_steps.init_state(task, jax.random.key(0), (2, 8, 8, 3), (2, 32, 32, 3))
  with pytest.raises(UserError, match='holds a srvgg_compact generator but model.name is'):
    restoring.with_initial_weights(state, config)


@pytest.mark.slow
def test_init_from_a_training_workdir(l1_run):
  config = tiny_config(f'model.init_from={l1_run}', 'model.num_blocks=2', 'model.num_features=32',
                       'model.growth_channels=16')
  task = train_steps.make_task(config)
  state = train_steps.init_state(task, jax.random.key(0), (2, 8, 8, 3), (2, 32, 32, 3))
  started = restoring.with_initial_weights(state, config)
  want = restoring.restore(l1_run).variables['params']
  jax.tree.map(np.testing.assert_array_equal, dict(started.g_params), dict(want))


def test_restore_names_what_to_give(tmp_path):
  with pytest.raises(UserError, match='does not exist'):
    restoring.restore(tmp_path / 'missing')
  (tmp_path / 'plain').mkdir()
  with pytest.raises(UserError, match='holds no checkpoints and is not a converted model'):
    restoring.restore(tmp_path / 'plain')
  with pytest.raises(UserError, match='--precision'):
    restoring.generator(restoring.Restored({'name': 'rrdbnet', 'scale': 4}, {}, 'x'), 'fp16')
