"""The open training core: loss terms and degradation ops added from outside the package, keys per step
(dropout, VAE sampling), stage and cadence rules, the best metric, the EMA warm-up, frozen or slower
backbones, old checkpoints refused, and report 001's denoising bar."""

import functools
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import fast_jit, photo_batch, quick_compile, tiny_config
from enhance_jax import evaluate
from enhance_jax import train
from enhance_jax.data import datasets
from enhance_jax.data import degradations
from enhance_jax.data import input_pipeline
from enhance_jax.errors import UserError
from enhance_jax.eval import evaluators
from enhance_jax.io import checkpoints as ckpt_lib
from enhance_jax.training import config as config_lib
from enhance_jax.training import losses
from enhance_jax.training import train_steps

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # `benchmarks` for bare pytest


def _records(workdir, split):
  rows = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]
  return [r for r in rows if r['split'] == split]


def _max_abs(a, b):
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# ------------------------------------------------------------------------------ the core is open


@pytest.mark.slow
@pytest.mark.parametrize('on_device', [False, True])
def test_a_loss_term_and_a_degradation_op_from_a_test_file_train(monkeypatch, tmp_path, on_device):
  """A new loss is one function and one registry line, a new degradation one factory and one line:
  both registered here, in the test file alone, and trained with through train_and_evaluate."""
  monkeypatch.setitem(losses.LOSSES, 'toy', lambda x: jnp.mean(x.image))  # mean output brightness
  monkeypatch.setitem(degradations.OPS, 'toy_shift',
                      lambda amount: lambda img, rng: (img + amount).clip(0.0, 1.0))
  config = config_lib.get_config('cifar10_denoise_ae', [
      'train.num_steps=4', 'train.eval_every_steps=2', 'train.batch_size=4', 'train.progress=False',
      'train.log_every_steps=1', 'data.degradation=toy_shift(0.25)',
      f'data.degrade_on_device={on_device}']).unlock()
  config.loss.pretrain.toy = 0.5
  config_lib.validate(config)
  train.train_and_evaluate(config.lock(), tmp_path)
  steps = _records(tmp_path, 'train')
  assert [r['step'] for r in steps] == [1, 2, 3, 4]
  for r in steps:
    assert 0 < r['loss_toy'] < 1
    assert r['g_loss'] == pytest.approx(r['loss_mse'] + 0.5 * r['loss_toy'], rel=1e-5)
  val = input_pipeline.validation_batch(datasets.embedded(datasets.EMBEDDED_EVAL), config)
  np.testing.assert_allclose(val['lr'], np.clip(val['hr'] + 0.25, 0, 1), atol=1e-6)
  result = evaluate.run(tmp_path, 'latest')
  assert result['mean']['input']['psnr'] < 15  # the input really is the shifted image


# ------------------------------------------------------------------------------ keys per step


def _resnet_sr_setup():
  config = config_lib.get_config('catsdogs_resnet', [
      'model.num_features=8', 'train.batch_size=2', 'data.hr_resize=64', 'data.patch_size=64',
      'data.val_patch_size=64'])
  task = train_steps.make_task(config)
  batch = jax.tree.map(jnp.asarray, photo_batch(config, n=2))
  state = train_steps.init_state(task, jax.random.key(0), batch['lr'].shape, batch['hr'].shape)
  return config, task, batch, state


@pytest.mark.slow
def test_dropout_masks_differ_between_steps_and_repeat_under_the_seed():
  _, task, batch, state = _resnet_sr_setup()

  @jax.jit
  def out(s):
    return train_steps.generate(task, s.g_params, s.g_stats, batch['lr'], True, train_steps.step_keys(s))[0]

  first, again = out(state)['image'], out(state)['image']
  later = out(state.replace(step=state.step + 1))['image']
  other_seed = out(state.replace(rng=jax.random.key(7)))['image']
  np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
  assert float(jnp.max(jnp.abs(first - later))) > 1e-3
  assert float(jnp.max(jnp.abs(first - other_seed))) > 1e-3
  eval_a = train_steps.predict(task, train_steps.eval_variables(state), batch['lr'])  # no dropout in eval
  eval_b = train_steps.predict(task, train_steps.eval_variables(state.replace(step=state.step + 5)),
                           batch['lr'])
  np.testing.assert_array_equal(np.asarray(eval_a), np.asarray(eval_b))
  step = jax.jit(functools.partial(train_steps.pretrain_step, task))
  (s1, m1), (s2, m2) = step(state, batch), step(state, batch)  # same seed, same step
  assert _max_abs(s1.g_params, s2.g_params) == 0 and float(m1['g_loss']) == float(m2['g_loss'])


@pytest.mark.slow
def test_the_vae_samples_per_step_its_kl_is_finite_and_its_loss_falls():
  config = config_lib.get_config('cifar10_denoise_vae', ['train.batch_size=8'])
  task = train_steps.make_task(config)
  batch = jax.tree.map(jnp.asarray, photo_batch(config, n=8))
  state = train_steps.init_state(task, jax.random.key(0), batch['lr'].shape, batch['hr'].shape)
  sample = jax.jit(lambda s: train_steps.generate(task, s.g_params, s.g_stats, batch['lr'], True,
                                              train_steps.step_keys(s))[0])
  a, b = sample(state), sample(state.replace(step=state.step + 1))
  assert set(a) == {'image', 'mean', 'logvar'}
  np.testing.assert_array_equal(np.asarray(a['mean']), np.asarray(b['mean']))  # same encoder
  assert float(jnp.max(jnp.abs(a['image'] - b['image']))) > 1e-4  # another sample of z
  step = jax.jit(functools.partial(train_steps.pretrain_step, task))
  history = []
  for _ in range(40):
    state, metrics = step(state, batch)
    history.append(jax.device_get(metrics))
  kl = [h['loss_kl'] for h in history]
  assert all(np.isfinite(kl)) and min(kl) >= 0 and max(kl) > 0
  assert np.mean([h['g_loss'] for h in history[-5:]]) < 0.8 * history[0]['g_loss']
  np.testing.assert_allclose([h['g_loss'] for h in history],
                             [h['loss_mse'] + 0.04 * h['loss_kl'] for h in history], rtol=1e-5)


# ------------------------------------------------------------------------------ stages, cadence, best


@pytest.fixture(scope='module')
def cadence_run(tmp_path_factory):
  """One step an epoch (2 embedded images, batch 2): validation and checkpoints still follow steps."""
  workdir = tmp_path_factory.mktemp('cadence')
  config = tiny_config('train.steps_per_epoch=1', 'train.eval_every_steps=3',
                       'train.checkpoint_every_steps=3', 'train.num_steps=7',
                       'train.log_every_steps=100', 'train.best_metric=mse')
  with quick_compile():
    train.train_and_evaluate(config, workdir)
  return workdir, config


@pytest.mark.slow
def test_evaluation_and_checkpoints_follow_steps_not_epochs(cadence_run):
  workdir, _ = cadence_run
  val = _records(workdir, 'val')
  assert [r['step'] for r in val] == [2, 3, 6, 7]  # end of the L1 stage, every 3, end of the run
  assert [r['step'] for r in _records(workdir, 'train')] == [2, 3, 6, 7]  # one host read per window
  ckpts = ckpt_lib.Checkpoints(workdir, read_only=True)
  assert set(ckpts.latest.all_steps()) <= {2, 3, 6, 7} and 7 in ckpts.latest.all_steps()
  assert all(r['epoch_seconds'] > 0 for r in _records(workdir, 'train'))


@pytest.mark.slow
def test_the_best_checkpoint_follows_train_best_metric(cadence_run):
  workdir, _ = cadence_run
  gan = [r for r in _records(workdir, 'val') if r['stage'] == 'gan']
  best = min(gan, key=lambda r: r['mse'])  # mse: lower is better; counted afresh in the GAN stage
  ckpts = ckpt_lib.Checkpoints(workdir, read_only=True)
  meta = ckpts.read_meta('best')
  assert meta['best_metric'] == 'mse' and meta['best'] == pytest.approx(best['mse'])
  assert ckpts.best.latest_step() == best['step']
  assert {'loss', 'loss_pixel', 'loss_content'} <= set(gan[0])  # held-out loss terms, for best_metric


def test_after_an_early_stop_the_gan_stage_runs_to_num_steps():
  """An early-stopped supervised stage hands over to the GAN stage, which still ends at num_steps
  (so evaluation keeps its cadence and does not run every step)."""
  config = tiny_config('train.pretrain_steps=5', 'train.num_steps=9')
  assert train._stage_end(config, {'stage': 'pretrain', 'gan_start': None}) == 5  # pylint: disable=protected-access
  assert train._stage_end(config, {'stage': 'gan', 'gan_start': 3}) == 9  # pylint: disable=protected-access
  one_stage = config_lib.get_config('cifar10_denoise_ae', ['train.num_steps=9'])
  assert train._stage_end(one_stage, {'stage': 'pretrain', 'gan_start': None}) == 9  # pylint: disable=protected-access


def test_better_knows_each_metrics_direction():
  assert evaluators.better('psnr', 20.0, 19.0) and not evaluators.better('psnr', 19.0, 20.0)
  assert evaluators.better('ssim', 0.9, 0.8) and evaluators.better('psnr', -1.0, None)
  for lower in ('mse', 'loss', 'loss_pixel'):
    assert evaluators.better(lower, 0.1, 0.2) and not evaluators.better(lower, 0.2, 0.1)
  with pytest.raises(UserError, match='best_metric'):
    tiny_config('train.best_metric=sharpness')


@pytest.mark.slow
def test_a_checkpoint_from_before_the_core_is_refused_in_one_sentence(tmp_path):
  """Meta format 1 (no 'format' key, epochs and best_psnr) is refused, never misread, and the
  refusal writes nothing."""
  config = tiny_config()
  task = train_steps.make_task(config)
  state = train_steps.init_state(task, jax.random.key(0), (8, 8, 8, 3), (8, 32, 32, 3))
  old = ckpt_lib.Checkpoints(tmp_path)
  old.save(state, {}, {'signature': ckpt_lib.model_signature(config), 'config': config.to_dict(),
                       'epoch': 3, 'stage': 'pretrain', 'best_psnr': 20.0, 'bad_epochs': 0})
  old.wait()
  old.close()
  listing = lambda: sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*') if p.name != '.lock')
  before = listing()
  for run in (lambda: evaluate.run(tmp_path, 'latest'),
              lambda: train.train_and_evaluate(config, tmp_path)):
    with pytest.raises(UserError, match='older enhance_jax .* train it again in a new --workdir'):
      run()
  assert listing() == before  # (but the run lock every run takes)


@pytest.mark.slow
def test_the_ema_is_warmed_up_so_a_short_run_is_not_scored_on_its_init():
  """With decay 0.999 from the start, 60 steps would leave the average 94% initialisation; warmed
  up it tracks the trained weights."""
  config = tiny_config('train.ema_decay=0.999', 'train.pretrain_lr=1e-3')
  task = train_steps.make_task(config)
  batch = jax.tree.map(jnp.asarray, photo_batch(config))
  state = train_steps.init_state(task, jax.random.key(0), batch['lr'].shape, batch['hr'].shape)
  init = jax.tree.map(jnp.copy, state.g_params)
  step = jax.jit(functools.partial(train_steps.pretrain_step, task))
  for _ in range(60):
    state, _ = step(state, batch)
  travelled = _max_abs(state.g_params, init)
  assert _max_abs(state.ema_params, state.g_params) < 0.3 * travelled


# ------------------------------------------------------------------------------ backbones


@pytest.fixture(scope='module')
def backbone_gan():
  """celeba_gan with a ResNet18 generator backbone at a small size, and its fixed batch."""
  def make(multiplier):
    config = config_lib.get_config('celeba_gan', [
        'model.backbone=resnet18', 'model.num_features=8', 'discriminator.num_features=8',
        'data.patch_size=(64, 64)', 'train.batch_size=2', 'train.b1=0.9',
        f'train.lr_multipliers.backbone={multiplier}'])
    return train_steps.make_task(config)
  batch = jax.tree.map(jnp.asarray, photo_batch(config_lib.get_config(
      'celeba_gan', ['data.patch_size=(64, 64)']), n=2))
  return make, batch


@pytest.mark.slow
def test_a_backbone_can_be_frozen_or_get_its_own_learning_rate(backbone_gan):
  make, batch = backbone_gan
  moved = {}
  for m in (1.0, 0.0, 0.5):
    task = make(m)
    state = train_steps.init_state(task, jax.random.key(0), batch['lr'].shape, batch['hr'].shape)
    started = train_steps.start_gan_stage(task, state)
    new, _ = fast_jit(functools.partial(train_steps.gan_step, task), started, batch)(started, batch)
    moved[m] = jax.tree.map(jnp.subtract, new.g_params, state.g_params)
    if m == 0:  # frozen: its BatchNorm statistics stay too, while the decoder's move
      assert _max_abs(new.g_stats['backbone'], state.g_stats['backbone']) == 0
      assert _max_abs(new.g_stats, state.g_stats) > 0
  rest = [k for k in state.g_params if k != 'backbone']
  full = moved[1.0]['backbone']
  assert _max_abs(full, jax.tree.map(jnp.zeros_like, full)) > 1e-6
  for multiplier in (0.0, 0.5):
    assert rest and _max_abs({k: moved[1.0][k] for k in rest},
                             {k: moved[multiplier][k] for k in rest}) < 1e-7  # others as before
    want = jax.tree.map(lambda d, m=multiplier: m * d, full)  # Adam's first step: lr x sign-like
    assert _max_abs(moved[multiplier]['backbone'], want) < 1e-3 * _max_abs(
        full, jax.tree.map(jnp.zeros_like, full))


# ------------------------------------------------------------------------------ report 001's bar


@pytest.fixture(scope='module')
def denoise_run(tmp_path_factory):
  """cifar10_denoise_ae (model B: noisy in, clean out) for 1,000 steps on 32x32 embedded crops."""
  workdir = tmp_path_factory.mktemp('denoise_ae')
  config = config_lib.get_config('cifar10_denoise_ae', [
      'train.num_steps=1000', 'train.eval_every_steps=500', 'train.checkpoint_every_steps=500',
      'train.progress=False'])
  train.train_and_evaluate(config, workdir)
  return workdir


@pytest.mark.slow
def test_the_denoising_autoencoder_beats_its_noisy_input_on_held_out_photos(denoise_run):
  result = evaluate.run(denoise_run, 'best')
  model, noisy = result['mean']['model'], result['mean']['input']
  assert result['kinds'] == ['model', 'input'] and 'bicubic' not in result['mean']
  assert model['psnr'] > noisy['psnr'] + 0.5, (model, noisy)
  assert model['mse'] < noisy['mse']
  assert result['epoch_seconds'] > 0
  table = (denoise_run / 'eval' / 'metrics.md').read_text()
  assert 'psnr input' in table and 'mean epoch duration' in table


@pytest.mark.slow
def test_imagenet_backbone_weights_from_a_user_file_go_into_g_and_d(tmp_path):
  """model/discriminator.backbone_weights (torchvision state_dicts) fill the 'backbone' submodules
  of a fresh state, BatchNorm statistics included; the rest stays as initialised."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks.torch_reference.backbones import TorchResNet18, randomise  # pylint: disable=g-import-not-at-top
  from enhance_jax.io import weights# pylint: disable=g-import-not-at-top
  torch.save(randomise(TorchResNet18()).state_dict(), tmp_path / 'resnet18.pth')
  config = config_lib.get_config('celeba_gan', [
      'model.backbone=resnet18', 'discriminator.backbone=resnet18', 'model.num_features=8',
      f'model.backbone_weights={tmp_path / "resnet18.pth"}',
      f'discriminator.backbone_weights={tmp_path / "resnet18.pth"}', 'train.ema_decay=0.9'])
  task = train_steps.make_task(config)
  state = train_steps.init_state(task, jax.random.key(0), (1, 64, 64, 3), (1, 64, 64, 3))
  loaded = weights.with_backbone_weights(state, config)
  want = weights.load_backbone('resnet18', tmp_path / 'resnet18.pth')
  for params, stats in (('g_params', 'g_stats'), ('d_params', 'd_stats')):
    assert _max_abs(getattr(loaded, params)['backbone'], want['params']) == 0
    assert _max_abs(getattr(loaded, stats)['backbone'], want['batch_stats']) == 0
    assert _max_abs(getattr(state, params)['backbone'], want['params']) > 0.1
    rest = [k for k in getattr(state, params) if k != 'backbone']
    assert _max_abs({k: getattr(loaded, params)[k] for k in rest},
                    {k: getattr(state, params)[k] for k in rest}) == 0
  assert _max_abs(loaded.ema_params, loaded.g_params) == 0


# ------------------------------------------------------------------------------ report data


def test_data_fraction_takes_an_even_share_before_the_split(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  for i in range(20):
    Image.fromarray(np.full((40, 40, 3), i * 10, np.uint8)).save(tmp_path / f'{i:02d}.png')
  config = config_lib.get_config('celeba_cnn', [f'data.source=folder:{tmp_path}', 'data.fraction=0.5',
                                                'data.patch_size=(32, 32)'])
  train_src, val_src = datasets.train_val_sources(config.data)
  assert len(train_src) + len(val_src) == 10 and len(val_src) == 4  # 40 % of the half held out
  names = sorted(list(train_src.names) + list(val_src.names))
  assert names[0] == '00' and names[-1] == '19'  # spread over the folder, not its first half
  generic = datasets.Subset(datasets.embedded(('camera', 'moon', 'brick', 'grass')), [0, 2])
  assert list(generic.names) == ['camera', 'brick'] and generic[1].shape == (512, 512, 3)
  assert len(datasets.take_fraction(datasets.embedded(('camera', 'moon', 'brick', 'grass')), 0.5)) == 2


def test_minmax_and_crop_or_resize_prepare_the_target():
  image = np.linspace(40, 200, 500 * 400 * 3).reshape(500, 400, 3).astype(np.uint8)
  stretched = input_pipeline.normalize(image.astype(np.float32) / 255, 'minmax')
  assert stretched.min() == 0 and stretched.max() == pytest.approx(1)
  big = input_pipeline.prepare_hr(image, 360, 'crop_or_resize')  # larger: a centre crop
  np.testing.assert_array_equal(big, image[70:430, 20:380].astype(np.float32) / 255)
  small = image[:300, :300]  # smaller: bicubic rescale of the square
  np.testing.assert_allclose(input_pipeline.prepare_hr(small, 360, 'crop_or_resize'),
                             degradations.square_resize(small, 360), atol=1e-6)
  assert input_pipeline.prepare_hr(small, 360, 'crop_or_resize').shape == (360, 360, 3)
