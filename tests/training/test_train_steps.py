"""Trainer tests at tiny width: model shapes and the report's parameter count, the losses against
numpy, the L1 and GAN steps on a fixed batch of real photo patches (they must learn), the fused GAN
step against a naive two-pass one, bf16, EMA, no host transfers inside a step, and the NaN guard."""

import dataclasses
import functools
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import fast_jit
from conftest import photo_batch
from conftest import tiny_config
from enhance_jax import parallel
from enhance_jax import train
from enhance_jax.io import weights
from enhance_jax.models.discriminator import VGGStyleDiscriminator
from enhance_jax.models.rrdbnet import RRDBNet
from enhance_jax.training import config as config_lib
from enhance_jax.training import output_kinds
from enhance_jax.training import losses
from enhance_jax.training import train_steps

# The trainer tests' config: EMA on, and learning rates high enough that 10-15 steps show learning.
BASE = ('train.ema_decay=0.9', 'train.pretrain_lr=1e-3', 'train.g_lr=1e-3', 'train.d_lr=1e-3')


def _count(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


def _dtypes(tree):
  return {jnp.dtype(x.dtype) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}


def _conv_dtypes(fn, *args):
  """Output dtype of every convolution in FN's program (XLA convs and oneDNN FFI calls), nested
  jaxprs included."""
  found = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == 'conv_general_dilated' or (
          eqn.primitive.name == 'ffi_call' and 'enhance_jax_conv' in str(eqn.params.get('target_name'))):
        found.append(jnp.dtype(eqn.outvars[0].aval.dtype))
      for v in eqn.params.values():
        for sub in (v if isinstance(v, (tuple, list)) else (v,)):
          inner = getattr(sub, 'jaxpr', sub)
          if hasattr(inner, 'eqns'):
            walk(inner)

  walk(jax.make_jaxpr(fn)(*args).jaxpr)
  return found


def _max_rel_diff(a, b):
  """max |a - b| / max |b| over all leaves of two pytrees of the same structure."""
  a, b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(a) == len(b)
  num = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b))
  return num / max(float(np.max(np.abs(np.asarray(y)))) for y in b)


@pytest.fixture(scope='module')
def setup():
  """The base task, a fresh state, the fixed batch on device, random VGG19 params and the compiled
  steps (jit of train_steps.*_step via functools.partial with the task), shared by the tests below."""
  config = tiny_config(*BASE)
  task = train_steps.make_task(config)
  batch = jax.device_put(photo_batch(config))
  vgg = {'vgg19': {'params': weights.load_vgg19(None, (config.loss.content_layer,))}}  # `frozen`
  key = jax.random.key(config.seed)
  init = fast_jit(lambda rng: train_steps.init_state(task, rng, batch['lr'].shape, batch['hr'].shape), key)
  state = init(key)
  gan_state = train_steps.start_gan_stage(task, state)
  return dict(
      config=config, task=task, batch=batch, vgg=vgg, state=state, gan_state=gan_state,
      pretrain=fast_jit(functools.partial(train_steps.pretrain_step, task), state, batch),
      gan=fast_jit(functools.partial(train_steps.gan_step, task), gan_state, batch, vgg))


# ------------------------------------------------------------------------------------------- models


def test_rrdbnet_report_parameter_count():
  """ESRGAN x4, 64 features, growth 32, 23 RRDBs: 16,697,987 parameters, as BasicSR's RRDBNet."""
  model = RRDBNet(num_blocks=23, num_features=64, growth_channels=32, scale=4)
  variables = jax.eval_shape(model.init, jax.random.key(0),
                             jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32))
  assert set(variables) == {'params'}
  assert _count(variables) == 16_697_987


@pytest.mark.parametrize('scale', [4, 2, 1])
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_rrdbnet_output_shapes(scale, dtype):
  model = RRDBNet(num_blocks=1, num_features=8, growth_channels=4, scale=scale, dtype=dtype)
  out, variables = jax.eval_shape(model.init_with_output, jax.random.key(0),
                                  jax.ShapeDtypeStruct((2, 12, 20, 3), jnp.float32))
  assert out.shape == (2, 12 * scale, 20 * scale, 3)
  assert out.dtype == jnp.float32
  assert _dtypes(variables) == {jnp.dtype(jnp.float32)}  # compute dtype only, parameters stay fp32


@pytest.mark.parametrize('norm', ['batch', 'none'])
def test_discriminator_gives_one_logit_per_image_at_any_patch_size(norm):
  d = VGGStyleDiscriminator(num_features=8, dense_features=16, norm=norm)
  shapes = {}
  for patch in (32, 48):
    x = jax.ShapeDtypeStruct((3, patch, patch, 3), jnp.float32)
    logits, variables = jax.eval_shape(d.init_with_output, jax.random.key(0), x)
    assert logits.shape == (3,) and logits.dtype == jnp.float32
    train_logits, updates = jax.eval_shape(
        lambda v, x: d.apply(v, x, train=True, mutable=['batch_stats']), variables, x)
    assert train_logits.shape == (3,)
    assert ('batch_stats' in variables) == (norm == 'batch') == ('batch_stats' in updates)
    shapes[patch] = jax.tree.map(lambda a: a.shape, variables)
  assert shapes[32] == shapes[48]  # one set of weights serves every patch size


# ------------------------------------------------------------------------------------------- losses


def _np_bce(logits, target):
  """PyTorch's BCEWithLogitsLoss (mean) in numpy."""
  x = np.asarray(logits, np.float64)
  return np.mean(np.maximum(x, 0) - x * target + np.log1p(np.exp(-np.abs(x))))


def test_relativistic_losses_match_numpy():
  rng = np.random.default_rng(0)
  real, fake = rng.normal(1.0, 2.0, 16).astype(np.float32), rng.normal(-0.5, 1.5, 16).astype(np.float32)
  want_d = 0.5 * (_np_bce(real - fake.mean(), 1.0) + _np_bce(fake - real.mean(), 0.0))
  want_g = 0.5 * (_np_bce(real - fake.mean(), 0.0) + _np_bce(fake - real.mean(), 1.0))
  np.testing.assert_allclose(losses.discriminator_adversarial(real, fake, 'relativistic'), want_d,
                             rtol=1e-6)
  np.testing.assert_allclose(losses.generator_adversarial(real, fake, 'relativistic'), want_g,
                             rtol=1e-6)
  # Constant logits a (real) and b (fake): D's loss is softplus(b - a), G's is softplus(a - b).
  ones = np.ones(4, np.float32)
  np.testing.assert_allclose(losses.discriminator_adversarial(ones, 0 * ones, 'relativistic'),
                             np.log1p(np.exp(-1.0)), rtol=1e-6)
  np.testing.assert_allclose(losses.generator_adversarial(ones, 0 * ones, 'relativistic'),
                             np.log1p(np.exp(1.0)), rtol=1e-6)
  np.testing.assert_allclose(losses.discriminator_adversarial(ones, ones, 'relativistic'), np.log(2),
                             rtol=1e-6)


def test_vanilla_losses_match_numpy():
  rng = np.random.default_rng(1)
  real, fake = rng.normal(0.5, 3.0, 16).astype(np.float32), rng.normal(-1.0, 3.0, 16).astype(np.float32)
  np.testing.assert_allclose(losses.discriminator_adversarial(real, fake, 'vanilla'),
                             _np_bce(real, 1.0) + _np_bce(fake, 0.0), rtol=1e-6)
  np.testing.assert_allclose(losses.generator_adversarial(real, fake, 'vanilla'), _np_bce(fake, 1.0),
                             rtol=1e-6)
  np.testing.assert_allclose(losses.bce(np.zeros(3, np.float32), 1.0), np.log(2), rtol=1e-6)


def test_gan_losses_are_stable_for_large_logits():
  real, fake = np.full(4, 100.0, np.float32), np.full(4, -100.0, np.float32)
  for gan_type in ('vanilla', 'relativistic'):
    assert float(losses.discriminator_adversarial(real, fake, gan_type)) == pytest.approx(0, abs=1e-6)
    assert np.isfinite(float(losses.generator_adversarial(real, fake, gan_type)))
  np.testing.assert_allclose(losses.generator_adversarial(real, fake, 'relativistic'), 200.0, rtol=1e-5)
  with pytest.raises(ValueError, match='gan_type'):
    losses.generator_adversarial(real, fake, 'hinge?')


def test_pixel_and_content_losses():
  pred, target = np.zeros((2, 4, 4, 3), np.float32), np.full((2, 4, 4, 3), 0.5, np.float32)
  assert float(losses.l1(pred, target)) == pytest.approx(0.5)
  assert float(losses.l2(pred, target)) == pytest.approx(0.25)
  assert float(losses.charbonnier(pred, target)) == pytest.approx(np.sqrt(0.25 + 1e-6), rel=1e-6)
  assert float(losses.charbonnier(target, target)) == pytest.approx(1e-3, rel=1e-4)  # eps floor
  rng = np.random.default_rng(2)
  a, b = rng.random((2, 5, 5, 3), np.float32), rng.random((2, 5, 5, 3), np.float32)
  np.testing.assert_allclose(losses.l1(a, b), np.mean(np.abs(a - b)), rtol=1e-6)
  np.testing.assert_allclose(losses.PIXEL_CRITERIA['mse'](a, b), np.mean((a - b) ** 2), rtol=1e-6)
  features = {'conv1': a, 'conv2': 2 * a}
  np.testing.assert_allclose(losses.content(features, {'conv1': b, 'conv2': 2 * b}),
                             3 * np.mean(np.abs(a - b)), rtol=1e-6)
  # SRGAN's MSE on VGG features: 1 + 4 times the per-layer mean square
  np.testing.assert_allclose(losses.content(features, {'conv1': b, 'conv2': 2 * b}, 'l2'),
                             5 * np.mean((a - b) ** 2), rtol=1e-6)


def test_bce_from_logits_is_stable_at_extreme_logits():
  """log(sigmoid(x)) computed naively is -inf for x = -200 in float32; the loss must stay exact."""
  logits = np.array([-200.0, 200.0, 0.0], np.float32)
  np.testing.assert_allclose(losses.bce(logits, 1.0), np.mean([200.0, 0.0, np.log(2)]), rtol=1e-6)
  np.testing.assert_allclose(losses.bce(logits, 0.0), np.mean([0.0, 200.0, np.log(2)]), rtol=1e-6)
  grad = jax.grad(lambda x: losses.bce(x, 1.0))(logits)
  assert np.all(np.isfinite(grad))
  np.testing.assert_allclose(grad, [-1 / 3, 0.0, -0.5 / 3], atol=1e-6)


# ------------------------------------------------------------------------------------- train steps


@pytest.mark.slow
def test_init_state_layout(setup):
  task, state, batch = setup['task'], setup['state'], setup['batch']
  assert int(state.step) == 0
  assert _dtypes(state) == {jnp.dtype('float32')}
  assert set(state.d_stats) == {f'bn{i}' for i in range(1, 8)}  # BatchNorm after convs 1..7
  assert jax.tree.structure(state.ema_params) == jax.tree.structure(state.g_params)
  no_ema = dataclasses.replace(task, ema_decay=0.0)
  abstract = jax.eval_shape(
      lambda rng: train_steps.init_state(no_ema, rng, batch['lr'].shape, batch['hr'].shape),
      jax.random.key(0))
  assert abstract.ema_params is None


def test_init_state_can_be_donated(setup):
  """Built outside jit, the state holds no buffer twice (the EMA starts as a copy of G's weights),
  so the jitted steps, which donate the state, accept it."""
  task = dataclasses.replace(setup['task'], generator=nn.Dense(3), discriminator=nn.Dense(1))
  state = train_steps.init_state(task, jax.random.key(0), (2, 4, 4, 3), (2, 16, 16, 3))
  assert state.ema_params is not None
  bump = jax.jit(lambda s: s.replace(step=s.step + 1), donate_argnums=0)
  assert int(bump(state).step) == 1


def test_pretrain_steps_lower_l1_on_a_fixed_batch(setup):
  state, batch, step = setup['state'], setup['batch'], setup['pretrain']
  g0 = state.g_params
  history = []
  for _ in range(15):
    state, metrics = step(state, batch)
    history.append({k: float(v) for k, v in metrics.items()})
  assert {'g_loss', 'loss_pixel', 'psnr', 'ssim', 'g_grad_norm', 'g_param_norm'} <= set(history[0])
  assert all(np.isfinite(v) for m in history for v in m.values())
  assert history[0]['loss_pixel'] == pytest.approx(history[0]['g_loss'])  # L1 is the whole objective
  assert history[-1]['g_loss'] < 0.8 * history[0]['g_loss'], [m['g_loss'] for m in history]
  assert history[-1]['psnr'] > history[0]['psnr'] + 1.0
  assert int(state.step) == 15
  assert _dtypes(state.g_params) == _dtypes(state.g_opt) == {jnp.dtype('float32')}
  assert int(state.g_opt[0].count) == 15  # Adam's count drives the milestone schedule
  # D is not touched by the L1 stage.
  assert jax.tree.all(jax.tree.map(np.array_equal, state.d_params, setup['state'].d_params))
  # EMA (decay 0.9) lags behind the trained weights, and is not the initial weights either.
  assert _max_rel_diff(state.ema_params, state.g_params) > 1e-4
  assert _max_rel_diff(state.ema_params, g0) > 1e-4


def test_ema_update_is_the_exponential_moving_average(setup):
  """The EMA is warmed up as TensorFlow's: decay min(0.9, (1 + t) / (10 + t)) after t updates, so
  the first update (t = 1) keeps 2/11 of the old average, not 0.9 of the random init."""
  state, batch = setup['state'], setup['batch']
  new, _ = setup['pretrain'](state, batch)
  d = 2.0 / 11.0
  assert float(train_steps.ema_decay_at(0.9, 1)) == pytest.approx(d)
  assert float(train_steps.ema_decay_at(0.9, 10_000)) == pytest.approx(0.9)
  assert float(train_steps.ema_decay_at(0.999, 1000)) == pytest.approx(1001 / 1010)
  want = jax.tree.map(lambda e, p: d * e + (1 - d) * p, state.ema_params, new.g_params)
  assert _max_rel_diff(new.ema_params, want) < 1e-6
  assert _max_rel_diff(new.ema_params, new.g_params) > 1e-5
  assert train_steps.eval_params(new) is new.ema_params
  assert train_steps.eval_params(new.replace(ema_params=None)) is new.g_params


def test_start_gan_stage_gives_a_fresh_optimizer_laid_out_like_the_old_one(setup):
  task, batch = setup['task'], setup['batch']
  state, _ = setup['pretrain'](setup['state'], batch)
  # As train.py holds it: replicated over the mesh (here a 1-device one).
  state = jax.device_put(state, parallel.replicated(parallel.make_mesh(1)))
  gan_state = train_steps.start_gan_stage(task, state)
  assert int(gan_state.g_opt[0].count) == 0 and int(state.g_opt[0].count) == 1
  assert all(float(jnp.max(jnp.abs(x))) == 0 for x in jax.tree.leaves(gan_state.g_opt[0].mu))
  assert gan_state.g_params is state.g_params and gan_state.step is state.step
  # Every leaf keeps its sharding: else the GAN step recompiles (1 device) or must move the
  # optimizer state between devices, which the transfer guard refuses (several devices).
  old = jax.tree.leaves(jax.tree.map(lambda x: x.sharding, state.g_opt))
  new = jax.tree.leaves(jax.tree.map(lambda x: x.sharding, gan_state.g_opt))
  assert new == old


def _reference_losses(task, state, batch, vgg):
  """G's and D's losses for STATE computed directly (D on HR then SR in training mode)."""
  lr, hr = batch['lr'], batch['hr']
  variables = {'params': state.d_params, 'batch_stats': state.d_stats}
  sr = task.generator.apply({'params': state.g_params}, lr)
  real, upd = task.discriminator.apply(variables, hr, train=True, mutable=['batch_stats'])
  fake, _ = task.discriminator.apply({'params': state.d_params, **upd}, sr, train=True,
                                     mutable=['batch_stats'])
  content = losses.content(task.frozen['vgg19'].apply(vgg['vgg19'], sr), task.frozen['vgg19'].apply(vgg['vgg19'], hr))
  return {'loss_pixel': losses.l1(sr, hr), 'loss_content': content,
          'loss_adversarial': losses.generator_adversarial(real, fake, 'relativistic'),
          'd_loss': losses.discriminator_adversarial(real, fake, 'relativistic'),
          'd_real': jnp.mean(jax.nn.sigmoid(real)), 'd_fake': jnp.mean(jax.nn.sigmoid(fake))}


@pytest.mark.slow
def test_gan_steps_on_a_fixed_batch(setup):
  """What a correct GAN step must do: report the losses of the state it starts from, move G and D,
  update D's BatchNorm statistics, lower G's content/pixel loss and teach D real from fake."""
  task, state, batch, vgg, step = (setup[k] for k in ('task', 'gan_state', 'batch', 'vgg', 'gan'))
  state0 = state
  history = []
  for _ in range(10):
    state, metrics = step(state, batch, vgg)
    history.append({k: float(v) for k, v in metrics.items()})
  first, last = history[0], history[-1]
  assert {'g_loss', 'd_loss', 'loss_pixel', 'loss_content', 'loss_adversarial', 'd_real', 'd_fake',
          'g_grad_norm', 'd_grad_norm', 'psnr', 'ssim'} <= set(first)
  assert all(np.isfinite(v) for m in history for v in m.values())
  # Step 1's metrics are the losses of the starting state, weighted by loss.gan.
  reference = fast_jit(functools.partial(_reference_losses, task), state0, batch, vgg)(
      state0, batch, vgg)
  for k, v in reference.items():
    assert first[k] == pytest.approx(float(v), rel=1e-4), k
  w = setup['config'].loss.gan
  weighted = (w.pixel * first['loss_pixel'] + w.content * first['loss_content'] +
              w.adversarial * first['loss_adversarial'])
  assert first['g_loss'] == pytest.approx(weighted, rel=1e-5)
  # Fresh D: chance level, relativistic D loss near log 2.
  assert first['d_loss'] == pytest.approx(np.log(2), abs=0.1)
  # G learns its (content-dominated) objective; D learns to tell HR from SR.
  assert last['loss_content'] < 0.85 * first['loss_content']
  assert last['loss_pixel'] < first['loss_pixel']
  assert last['g_loss'] < first['g_loss']
  assert last['d_loss'] < 0.7 * first['d_loss'], [m['d_loss'] for m in history]
  assert last['d_real'] > last['d_fake']
  assert int(state.step) == int(state0.step) + 10
  assert int(state.g_opt[0].count) == 10 and int(state.d_opt[0].count) == 10
  for name in ('g_params', 'd_params', 'd_stats', 'ema_params'):
    assert _max_rel_diff(getattr(state, name), getattr(state0, name)) > 1e-4, name
  assert _dtypes(state) == {jnp.dtype('float32')}


def _naive_gan_step(task, state, batch, vgg):
  """The GAN step written the obvious way: G's gradient by value_and_grad of its whole objective (D
  applied to HR and SR inside), then D's by value_and_grad of its loss on stop_gradient(SR)."""
  lr, hr = batch['lr'], batch['hr']
  weights_ = dict(task.gan_weights)

  def discriminate(d_params, d_stats, x):
    logits, updates = task.discriminator.apply({'params': d_params, 'batch_stats': d_stats}, x,
                                               train=True, mutable=['batch_stats'])
    return logits, updates.get('batch_stats', {})

  def vgg19(x):
    return task.frozen['vgg19'].apply(vgg['vgg19'], x)

  def g_objective(g_params):
    sr = task.generator.apply({'params': g_params}, lr)
    real, stats = discriminate(state.d_params, state.d_stats, hr)
    fake, _ = discriminate(state.d_params, stats, sr)
    terms = {'pixel': losses.PIXEL_CRITERIA[task.options.pixel_criterion](sr, hr),
             'content': losses.content(vgg19(sr), vgg19(hr)),
             'adversarial': losses.generator_adversarial(real, fake, task.options.gan_type)}
    return sum(w * terms[k] for k, w in weights_.items()), sr

  (g_loss, sr), g_grads = jax.value_and_grad(g_objective, has_aux=True)(state.g_params)

  def d_objective(d_params):
    real, stats = discriminate(d_params, state.d_stats, hr)
    fake, stats = discriminate(d_params, stats, jax.lax.stop_gradient(sr))
    return losses.discriminator_adversarial(real, fake, task.options.gan_type), stats

  (d_loss, d_stats), d_grads = jax.value_and_grad(d_objective, has_aux=True)(state.d_params)
  g_updates, g_opt = task.g_tx_gan.update(g_grads, state.g_opt, state.g_params)
  d_updates, d_opt = task.d_tx.update(d_grads, state.d_opt, state.d_params)
  new = state.replace(step=state.step + 1, g_params=optax.apply_updates(state.g_params, g_updates),
                      g_opt=g_opt, d_params=optax.apply_updates(state.d_params, d_updates),
                      d_opt=d_opt, d_stats=d_stats)
  return new, {'g_loss': g_loss, 'd_loss': d_loss, 'g_grad_norm': optax.global_norm(g_grads),
               'd_grad_norm': optax.global_norm(d_grads)}


@pytest.mark.slow
@pytest.mark.parametrize('norm,gan_type', [('batch', 'relativistic'), ('none', 'vanilla')])
def test_fused_gan_step_matches_naive_gradients(setup, norm, gan_type):
  """One fused GAN step against the naive one from the same state. Both optimizers are SGD with
  learning rate 1, so each parameter update IS minus the gradient (Adam's first step would hide
  gradient errors behind its sign-like normalisation); every loss term has weight 1 so a missing
  path (e.g. G's gradient through D) shows."""
  config = tiny_config(*BASE, f'discriminator.norm={norm}', f'loss.gan_type={gan_type}',
                       'loss.gan.pixel=1.0', 'loss.gan.content=1.0', 'loss.gan.adversarial=1.0')
  task = dataclasses.replace(train_steps.make_task(config), g_tx_gan=optax.sgd(1.0), d_tx=optax.sgd(1.0))
  batch, vgg = setup['batch'], setup['vgg']
  if norm == 'batch':
    state = setup['state']
  else:
    key = jax.random.key(1)
    state = fast_jit(lambda rng: train_steps.init_state(task, rng, batch['lr'].shape,
                                                    batch['hr'].shape), key)(key)
    assert state.d_stats == {}
  state = train_steps.start_gan_stage(task, state)
  fused, fused_metrics = fast_jit(functools.partial(train_steps.gan_step, task), state, batch, vgg)(
      state, batch, vgg)
  naive, naive_metrics = fast_jit(functools.partial(_naive_gan_step, task), state, batch, vgg)(
      state, batch, vgg)
  for k in ('g_loss', 'd_loss', 'g_grad_norm', 'd_grad_norm'):
    assert float(fused_metrics[k]) == pytest.approx(float(naive_metrics[k]), rel=1e-5), k
  for name in ('g_params', 'd_params'):
    delta = lambda s, name=name: jax.tree.map(jnp.subtract, getattr(s, name), getattr(state, name))
    assert _max_rel_diff(delta(fused), delta(naive)) < 1e-5, name
    assert _max_rel_diff(delta(naive), getattr(state, name)) > 1e-5, name  # the step did move them
  if norm == 'batch':
    assert _max_rel_diff(fused.d_stats, naive.d_stats) < 1e-6
    assert _max_rel_diff(fused.d_stats, state.d_stats) > 1e-3
  assert int(fused.step) == int(naive.step) == int(state.step) + 1


@pytest.mark.slow
def test_bf16_keeps_fp32_state_and_learns(setup):
  config = tiny_config(*BASE, 'train.precision=bf16', 'train.ema_decay=0')
  task = train_steps.make_task(config)
  batch, vgg = setup['batch'], setup['vgg']
  abstract = jax.eval_shape(
      lambda rng: train_steps.init_state(task, rng, batch['lr'].shape, batch['hr'].shape),
      jax.random.key(0))
  assert _dtypes(abstract) == {jnp.dtype('float32')} and abstract.ema_params is None
  # The bf16 task takes the same fp32 state as the fp32 one (same parameters, only compute differs).
  state = setup['state'].replace(ema_params=None)
  step = fast_jit(functools.partial(train_steps.pretrain_step, task), state, batch)
  history = []
  for _ in range(10):
    state, metrics = step(state, batch)
    history.append(float(metrics['g_loss']))
  assert history[-1] < 0.85 * history[0], history
  assert _dtypes(state) == {jnp.dtype('float32')} and state.ema_params is None
  assert all(v.dtype == jnp.float32 for v in metrics.values()), metrics  # losses, metrics in fp32
  state = train_steps.start_gan_stage(task, state)
  gan = fast_jit(functools.partial(train_steps.gan_step, task), state, batch, vgg)
  for _ in range(3):
    state, metrics = gan(state, batch, vgg)
    assert all(np.isfinite(float(v)) for v in metrics.values())
  assert {'loss_content', 'loss_adversarial', 'd_loss'} <= set(metrics)
  assert all(v.dtype == jnp.float32 for v in metrics.values()), metrics
  assert _dtypes(state) == {jnp.dtype('float32')} and state.ema_params is None
  assert int(state.step) == 13
  # Every convolution of G, D and VGG (forward and backward) runs in bf16; only SSIM's stay fp32.
  ssim_convs = _conv_dtypes(lambda sr, hr: output_kinds.KINDS['image'].step_metrics(sr, {'hr': hr}),
                            batch['hr'], batch['hr'])
  for step, args in ((train_steps.pretrain_step, (state, batch)), (train_steps.gan_step, (state, batch, vgg))):
    dtypes = _conv_dtypes(functools.partial(step, task), *args)
    assert dtypes.count(jnp.dtype(jnp.bfloat16)) > 2 * len(ssim_convs), step.__name__
    assert len(dtypes) - dtypes.count(jnp.dtype(jnp.bfloat16)) == len(ssim_convs), step.__name__


@pytest.mark.slow
def test_degrade_on_device_gives_the_host_pipelines_lr_and_step(setup):
  """data.degrade_on_device: grain ships HR only and the jitted step makes the same LR itself."""
  from enhance_jax.data import datasets# pylint: disable=g-import-not-at-top
  from enhance_jax.data import input_pipeline# pylint: disable=g-import-not-at-top
  config = tiny_config(*BASE, 'data.degrade_on_device=true')
  photos = datasets.embedded(datasets.EMBEDDED_TRAIN[:4])
  hr_only = input_pipeline.train_dataset(photos, config)[0]
  assert set(hr_only) == {'hr'} and hr_only['hr'].shape == (8, 32, 32, 3)
  host = input_pipeline.train_dataset(photos, setup['config'])[0]
  np.testing.assert_allclose(host['hr'], hr_only['hr'])  # the same crops and flips
  task = train_steps.make_task(config)
  made = jax.jit(functools.partial(train_steps.model_batch, task))({'hr': hr_only['hr']}, jax.random.key(0))
  np.testing.assert_allclose(np.asarray(made['lr']), host['lr'], atol=2e-6)
  batch = {'hr': setup['batch']['hr']}
  on_device, m_device = fast_jit(functools.partial(train_steps.pretrain_step, task), setup['state'],
                                 batch)(setup['state'], batch)
  on_host, m_host = setup['pretrain'](setup['state'], setup['batch'])
  assert abs(float(m_device['g_loss']) - float(m_host['g_loss'])) < 1e-5 * float(m_host['g_loss'])
  assert _max_rel_diff(on_device.g_params, on_host.g_params) < 1e-4


def _device_reads_in_step_loop(monkeypatch, config, workdir):
  """Runs train_and_evaluate and returns the device->host reads made by the step loop itself:
  those whose innermost frame in train.py is the loop body or a function it calls every step
  (reads in the log window, validation and checkpointing are the loop's allowed syncs)."""
  from jax._src import array as array_lib  # pylint: disable=g-import-not-at-top
  real, reads = array_lib.ArrayImpl._value, []
  per_step = {'train_and_evaluate', 'add', 'maybe_start_gan'}

  def spy(self):
    frame = sys._getframe(1)  # pylint: disable=protected-access
    while frame is not None and frame.f_code.co_filename != train.__file__:
      frame = frame.f_back
    if frame is not None and frame.f_code.co_name in per_step:
      reads.append(f'{frame.f_code.co_name}:{frame.f_lineno}')
    return real.fget(self)

  monkeypatch.setattr(array_lib.ArrayImpl, '_value', property(spy))
  train.train_and_evaluate(config, workdir)
  monkeypatch.undo()
  return reads


@pytest.mark.slow
def test_step_loop_never_waits_for_the_device(tmp_path, monkeypatch):
  """The loop reads metrics only once per log window (on CPU, jax.transfer_guard cannot see
  device->host reads: they are zero-copy). One run with one injected per-step-style read: the spy
  must report exactly that read, so it works, and nothing else, so the loop itself never syncs."""
  real_accumulate, injected = train_steps.accumulate, []

  def syncing_once(total, metrics):  # what a `float(metrics['g_loss'])` in the loop would do
    if not injected:
      injected.append(float(metrics['g_loss']))
    return real_accumulate(total, metrics)

  monkeypatch.setattr(train_steps, 'accumulate', syncing_once)
  reads = _device_reads_in_step_loop(monkeypatch, tiny_config('train.log_every_steps=100'), tmp_path)
  assert len(injected) == 1 and len(reads) == 1 and reads[0].startswith('add:'), reads


def test_steps_make_no_implicit_host_transfers(setup):
  state, batch, vgg = setup['state'], setup['batch'], setup['vgg']
  vgg = jax.device_put(vgg)
  with jax.transfer_guard('disallow'):
    new, metrics = setup['pretrain'](state, batch)
    new, metrics = setup['pretrain'](new, batch)
    gan_state, gan_metrics = setup['gan'](setup['gan_state'], batch, vgg)
    gan_state, gan_metrics = setup['gan'](gan_state, batch, vgg)
  assert int(new.step) == 2 and int(gan_state.step) == 2
  # The guard does catch an implicit transfer: a numpy batch must be copied to the device.
  host_batch = jax.device_get(batch)
  with jax.transfer_guard('disallow'):
    with pytest.raises(Exception, match='Disallowed host-to-device transfer'):
      setup['pretrain'](state, host_batch)


def test_nan_guard_names_the_metrics_and_steps():
  with pytest.raises(FloatingPointError, match=r'g_loss, d_loss .*steps 91 and 100'):
    train._check_finite({'g_loss': float('nan'), 'psnr': 20.0, 'd_loss': float('inf')}, 100, 10)
  train._check_finite({'g_loss': 0.5, 'psnr': 20.0}, 100, 10)  # finite: no error


def test_multihost_launch_is_detected_from_the_environment():
  from enhance_jax import parallel
  assert not parallel.launched_multihost({})
  assert not parallel.launched_multihost({'SLURM_NTASKS': '1'})
  assert parallel.launched_multihost({'SLURM_NTASKS': '4'})
  assert parallel.launched_multihost({'JAX_COORDINATOR_ADDRESS': '10.0.0.1:1234'})
  assert parallel.launched_multihost({'OMPI_COMM_WORLD_SIZE': '2'})


@pytest.mark.slow
@pytest.mark.optimized  # the memory users get: XLA as it compiles for them
def test_remat_trunk_gives_the_same_outputs_and_gradients_in_half_the_memory():
  """model.remat: the same function and gradients, same parameter tree, and the backward pass keeps
  only each RRDB's input, so the compiled gradient's temporary memory falls by half or more."""
  x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
  kw = dict(num_blocks=4, num_features=32, growth_channels=16)
  plain, remat = RRDBNet(**kw), RRDBNet(**kw, remat=True)
  params = plain.init(jax.random.key(0), x)['params']
  assert jax.tree.structure(remat.init(jax.random.key(0), x)['params']) == jax.tree.structure(params)
  loss = lambda m: (lambda p: jnp.mean(m.apply({'params': p}, x) ** 2))
  (l1, g1), (l2, g2) = [jax.value_and_grad(loss(m))(params) for m in (plain, remat)]
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g1, g2)
  temp = [fast_jit(jax.grad(loss(m)), params).memory_analysis().temp_size_in_bytes
          for m in (plain, remat)]
  assert temp[1] < 0.6 * temp[0], temp
  config = tiny_config('model.remat=true')
  assert train_steps.make_task(config).generator.remat


@pytest.mark.parametrize('override, match', [
    ('loss.pixel_criterion=l3', 'loss.pixel_criterion'),
    ('loss.content_criterion=cosine', 'loss.content_criterion'),
    ('loss.gan_type=hinge', 'loss.gan_type'),
])
def test_bad_loss_settings_fail_before_any_step(override, match):
  """Without the check these surface as a trace inside the jitted step, the GAN one only after the
  whole L1 stage."""
  from enhance_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  with pytest.raises(UserError, match=match):
    tiny_config(override)  # checked once, when the config is made


def test_unknown_loss_term_is_named():
  from enhance_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  config = tiny_config().unlock()
  config.loss.gan.perceptual = 1.0
  with pytest.raises(UserError, match=r"unknown terms \['perceptual'\]"):
    config_lib.validate(config)
