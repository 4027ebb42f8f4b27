"""Report 002's hybrid loss: L2 + gamma * (10 - NIMA mean score), NIMA frozen inside the jitted step."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import fast_jit
from enhance_jax.errors import UserError
from enhance_jax.models.nima import mean_score
from enhance_jax.training import config as config_lib
from enhance_jax.training import frozen as frozen_lib
from enhance_jax.training import losses
from enhance_jax.training import train_steps

TINY = ('model.num_blocks=1', 'model.num_features=8', 'data.patch_size=16', 'train.batch_size=2',
        'loss.nima_backbone=mobilenet')


@pytest.fixture(scope='module')
def setup():
  """A tiny edsr_nima task, its state, its frozen NIMA and a batch of photo patches."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  config = config_lib.get_config('edsr_nima', TINY)
  task = train_steps.make_task(config)
  state = train_steps.init_state(task, jax.random.key(0), (2, 8, 8, 3), (2, 16, 16, 3))
  frozen = frozen_lib.load(tuple(task.frozen), config)
  hr = np.stack([skimage.data.astronaut()[100:116, 200:216], skimage.data.coffee()[50:66, 60:76]])
  hr = jnp.asarray(hr, jnp.float32) / 255.0
  lr = jax.image.resize(hr, (2, 8, 8, 3), 'bicubic')
  return config, task, state, frozen, {'lr': lr, 'hr': hr}


@pytest.mark.slow
def test_the_experiment_weights_l2_and_the_nima_term_and_runs_nima_frozen(setup):
  config, task, _, frozen, _ = setup
  assert dict(config.loss.pretrain) == {'mse': 1.0, 'nima': 0.4}
  assert tuple(task.frozen) == ('nima',) and set(frozen['nima']) == {'params', 'batch_stats'}


@pytest.mark.slow
def test_the_term_is_ten_minus_the_mean_score(setup):
  _, task, _, frozen, batch = setup
  nets = frozen_lib.bind(task.frozen, frozen)
  inputs = losses.LossInputs(outputs={'image': batch['hr']}, batch=batch, options=task.options,
                             frozen=nets, rng=jax.random.key(0))
  probs = task.frozen['nima'].apply(frozen['nima'], batch['hr'])
  np.testing.assert_allclose(losses.LOSSES['nima'](inputs), 10 - jnp.mean(mean_score(probs)),
                             rtol=1e-6)


@pytest.mark.slow
def test_the_gradient_reaches_the_generator_and_leaves_nima_unchanged(setup):
  _, task, state, frozen, batch = setup
  before = jax.tree.map(np.array, frozen)
  step = fast_jit(functools.partial(train_steps.pretrain_step, task), state, batch, frozen)
  new_state, metrics = step(state, batch, frozen)
  assert float(metrics['loss_nima']) > 0 and np.isfinite(float(metrics['loss_mse']))
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new_state.g_params, state.g_params)
  assert min(jax.tree.leaves(moved)) >= 0 and max(jax.tree.leaves(moved)) > 0
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.array, frozen))

  # the NIMA term alone moves G: its gradient flows through the frozen network to the pixels
  def nima_only(g_params):
    sr = train_steps.generate(task, g_params, state.g_stats, batch['lr'])[0]['image']
    nets = frozen_lib.bind(task.frozen, frozen)
    return losses.LOSSES['nima'](losses.LossInputs(outputs={'image': sr}, batch=batch, options=task.options,
                                                   frozen=nets, rng=jax.random.key(0)))
  grads = jax.grad(nima_only)(state.g_params)
  assert float(jax.tree.reduce(lambda a, g: a + jnp.abs(g).sum(), grads, 0.0)) > 0


def test_a_nima_of_another_backbone_is_refused(tmp_path):
  from enhance_jax.io import weights# pylint: disable=g-import-not-at-top
  from enhance_jax.models.nima import NIMA  # pylint: disable=g-import-not-at-top
  shapes = jax.eval_shape(NIMA(backbone='mobilenet').init, jax.random.key(0),
                          jnp.zeros((1, 32, 32, 3)))
  variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  weights.write_model_dir(tmp_path / 'nima', {'name': 'nima', 'backbone': 'mobilenet'}, variables,
                          {'source': 'test'})
  config = config_lib.get_config('edsr_nima', [*TINY[:-1], f'loss.nima_from={tmp_path / "nima"}'])
  with pytest.raises(UserError, match='set loss.nima_backbone=mobilenet'):
    frozen_lib.load(('nima',), config)


@pytest.fixture(scope='module')
def nima_dir(setup, tmp_path_factory):
  """The frozen (random, MobileNet) NIMA of `setup` written as a NIMA model directory."""
  from enhance_jax.io import weights# pylint: disable=g-import-not-at-top
  _, _, _, frozen, _ = setup
  path = tmp_path_factory.mktemp('nima') / 'nima_mobilenet'
  weights.write_model_dir(path, {'name': 'nima', 'backbone': 'mobilenet'},
                          jax.tree.map(np.asarray, frozen['nima']), {'source': 'test'})
  return path


@pytest.mark.slow
def test_a_tiny_edsr_nima_run_checkpoints_and_evaluates_with_the_nima_column(nima_dir, tmp_path):
  from enhance_jax import evaluate# pylint: disable=g-import-not-at-top
  from enhance_jax import train# pylint: disable=g-import-not-at-top
  config = config_lib.get_config('edsr_nima', [
      *TINY, f'loss.nima_from={nima_dir}', 'data.val_patch_size=32', 'train.num_steps=2',
      'train.pretrain_steps=2', 'train.eval_every_steps=2', 'train.checkpoint_every_steps=2',
      'train.progress=False'])
  train.train_and_evaluate(config, tmp_path / 'run')
  assert (tmp_path / 'run' / 'checkpoints').is_dir()
  assert evaluate.main(['--workdir', str(tmp_path / 'run'), '--checkpoint', 'latest', '--nima',
                        str(nima_dir)]) == 0
  import json  # pylint: disable=g-import-not-at-top
  result = json.loads((tmp_path / 'run' / 'eval' / 'metrics.json').read_text())
  assert set(result['mean']['nima']) == {'model', 'bicubic', 'nearest', 'target'}
  assert all(1.0 <= v <= 10.0 for v in result['mean']['nima'].values())
  assert all(set(r['nima']) == {'model', 'bicubic', 'nearest', 'target'} for r in result['images'])
  assert 'nima target' in (tmp_path / 'run' / 'eval' / 'metrics.md').read_text()
