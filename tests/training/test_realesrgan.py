"""Real-ESRGAN (realesrnet_x4plus, realesrgan_x4plus): the U-Net discriminator with spectral norm, the
multi-layer perceptual loss, D's real images when the target is sharpened, both experiments' settings,
realesrnet_x4plus's own steps and realesrgan_x4plus through train_and_evaluate at test size (the
on-device realesrgan chain and USM target included)."""

import dataclasses
import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import fast_jit, tiny_config
from enhance_jax import models
from enhance_jax import train
from enhance_jax.errors import UserError
from enhance_jax.io import checkpoints as ckpt_lib
from enhance_jax.models.unet_discriminator import UNetDiscriminatorSN
from enhance_jax.training import config as config_lib
from enhance_jax.training import frozen as frozen_lib
from enhance_jax.training import losses
from enhance_jax.training import schema
from enhance_jax.training import train_steps

SN_CONVS = tuple(f'conv{i}' for i in range(1, 9))


@pytest.fixture(scope='module', name='d8')
def d8_fixture():
  """A width-8 UNetDiscriminatorSN, its initial variables, an input, and its batch_stats after 1000
  training calls (1000 power iterations of every SN conv), all compiled at -O0 (fast_jit)."""
  d = UNetDiscriminatorSN(num_features=8)
  x = jnp.asarray(np.random.default_rng(0).random((2, 32, 48, 3)), jnp.float32)
  key = jax.random.key(0)
  v = fast_jit(d.init, key, x)(key, x)

  def call(_, stats):
    return d.apply({'params': v['params'], 'batch_stats': stats}, x, train=True,
                   mutable=['batch_stats'])[1]['batch_stats']

  converge = lambda stats: jax.lax.fori_loop(0, 1000, call, stats)
  return d, v, x, fast_jit(converge, v['batch_stats'])(v['batch_stats'])


@pytest.mark.slow
def test_unet_discriminator_gives_one_logit_per_pixel(d8):
  d, v, x, _ = d8
  logits = fast_jit(d.apply, v, x)(v, x)
  assert logits.shape == (2, 32, 48, 1) and logits.dtype == jnp.float32
  p = v['params']
  assert sorted(p) == sorted(('conv0', *SN_CONVS, 'conv9'))
  assert 'bias' in p['conv0'] and 'bias' in p['conv9']  # the first and last: plain convs
  assert all(set(p[k]) == {'kernel'} for k in SN_CONVS)  # spectrally normalised, no bias
  assert p['conv1']['kernel'].shape == (4, 4, 8, 16) and p['conv3']['kernel'].shape == (4, 4, 32, 64)
  assert p['conv4']['kernel'].shape == (3, 3, 64, 32) and p['conv9']['kernel'].shape == (3, 3, 8, 1)
  assert sorted(v['batch_stats']) == sorted(f'{k}_sn' for k in SN_CONVS)
  no_skip = UNetDiscriminatorSN(num_features=8, skip_connection=False)
  assert jax.eval_shape(no_skip.apply, v, x).shape == logits.shape
  with pytest.raises(ValueError, match='multiples of 8'):
    d.init(jax.random.key(0), jnp.zeros((1, 36, 32, 3)))
  assert models.DISCRIMINATORS['unet_sn'] is UNetDiscriminatorSN


def _sigma_max(kernel):
  """The largest singular value of a conv kernel [kh, kw, cin, cout] as the matrix SN normalises."""
  return np.linalg.svd(np.asarray(kernel).reshape(-1, kernel.shape[-1]), compute_uv=False)[0]


def test_spectral_norm_normalises_and_updates_only_in_training(d8):
  d, v, x, converged = d8
  call = lambda v, train: d.apply(v, x, train=train, mutable=['batch_stats'])[1]['batch_stats']
  same = fast_jit(functools.partial(call, train=False), v)(v)  # evaluation leaves u alone
  jax.tree.map(np.testing.assert_array_equal, same, v['batch_stats'])
  once = fast_jit(functools.partial(call, train=True), v)(v)
  u0, u1 = (s['conv2_sn']['conv2/kernel/u'] for s in (v['batch_stats'], once))
  assert u1.shape == (1, 32) and not np.allclose(u0, u1)  # one power iteration a training call
  for k in SN_CONVS:
    kernel = v['params'][k]['kernel']
    sigma = float(converged[f'{k}_sn'][f'{k}/kernel/sigma'])
    np.testing.assert_allclose(sigma, _sigma_max(kernel), rtol=1e-3, err_msg=k)
    assert abs(_sigma_max(kernel / sigma) - 1.0) < 1e-3  # the kernel the conv runs: unit norm


def test_unet_discriminator_matches_a_torch_forward(d8):
  """Same weights (each SN kernel divided by its largest singular value, which the power iteration
  converged to) through torch's conv2d / bilinear interpolate: padding, strides, upsampling, skips."""
  torch = pytest.importorskip('torch')
  f = torch.nn.functional
  d, v, x, converged = d8
  variables = {'params': v['params'], 'batch_stats': converged}
  got = np.asarray(fast_jit(d.apply, variables, x)(variables, x))
  t = lambda a: torch.from_numpy(np.array(a))

  def conv(k, y, stride=1):
    kernel = np.asarray(v['params'][k]['kernel'])
    if k in SN_CONVS:
      kernel = kernel / _sigma_max(kernel)
    b = v['params'][k].get('bias')
    return f.conv2d(y, t(kernel.transpose(3, 2, 0, 1)), None if b is None else t(b), stride, 1)

  act = lambda y: f.leaky_relu(y, 0.2)
  up = lambda y: f.interpolate(y, scale_factor=2, mode='bilinear', align_corners=False)
  with torch.no_grad():
    x0 = act(conv('conv0', t(np.asarray(x).transpose(0, 3, 1, 2))))
    x1 = act(conv('conv1', x0, 2))
    x2 = act(conv('conv2', x1, 2))
    x3 = act(conv('conv3', x2, 2))
    x4 = act(conv('conv4', up(x3))) + x2
    x5 = act(conv('conv5', up(x4))) + x1
    x6 = act(conv('conv6', up(x5))) + x0
    want = conv('conv9', act(conv('conv8', act(conv('conv7', x6))))).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def _loss_config(**loss):
  """The schema's defaults (ESRGAN's perceptual loss: conv5_4 before activation, L1) with LOSS set."""
  return schema.complete({'loss': {'content_layer': 'conv5_4', **loss}})


def test_multi_layer_perceptual_loss_is_the_weighted_sum_of_single_layer_losses():
  layers = {'conv1_2': 0.1, 'conv2_2': 0.1, 'conv3_4': 1.0, 'conv4_4': 1.0, 'conv5_4': 1.0}
  multi = _loss_config(content_layers=layers)
  assert frozen_lib.vgg19_module(multi).layers == tuple(layers)
  two = _loss_config(content_layers={**layers, 'conv3_4': 0.0, 'conv4_4': 0.0, 'conv5_4': 0.0})
  single = _loss_config()  # without content_layers: loss.content_layer alone at weight 1, as before
  assert losses.content_layers(single.loss) == {'conv5_4': 1.0}
  assert frozen_lib.vgg19_module(single).layers == ('conv5_4',)
  assert frozen_lib.vgg19_module(two).layers == ('conv1_2', 'conv2_2')  # a zero weight drops a layer
  configs = {'multi': multi, 'single': single, 'two': two,
             **{k: _loss_config(content_layer=k) for k in layers}}
  vgg = frozen_lib.load(('vgg19',), multi)  # random weights up to conv5_4, shared by every layer
  rng = np.random.default_rng(3)
  sr, hr = (jnp.asarray(rng.random((2, 32, 32, 3)), jnp.float32) for _ in range(2))

  def all_losses(vgg, sr, hr):
    out = {}
    for name, config in configs.items():
      nets = frozen_lib.bind(frozen_lib.modules(('vgg19',), config), vgg)
      out[name] = losses.content_loss(losses.LossInputs({'image': sr}, {'hr': hr}, config.loss, nets))
    return out

  got = jax.device_get(fast_jit(all_losses, vgg, sr, hr)(vgg, sr, hr))
  np.testing.assert_allclose(got['multi'], sum(w * got[k] for k, w in layers.items()), rtol=1e-5)
  assert got['conv1_2'] != got['conv5_4']
  np.testing.assert_allclose(got['single'], got['conv5_4'], rtol=1e-6)
  np.testing.assert_allclose(got['two'], 0.1 * got['conv1_2'] + 0.1 * got['conv2_2'], rtol=1e-5)


def test_vanilla_gan_losses_average_per_pixel_logits():
  logits = jnp.asarray(np.random.default_rng(4).normal(size=(2, 8, 8, 1)), jnp.float32)
  flat = logits.reshape(-1)
  for fn in (losses.generator_adversarial, losses.discriminator_adversarial):
    np.testing.assert_allclose(fn(logits, -logits, 'vanilla'), fn(flat, -flat, 'vanilla'), rtol=1e-6)
  want = np.mean(np.log1p(np.exp(-np.asarray(flat))))  # BCE against 1, averaged over every pixel
  np.testing.assert_allclose(losses.generator_adversarial(None, logits, 'vanilla'), want, rtol=1e-5)


class _Nearest(nn.Module):
  """A generator that is nearest-neighbour x4 upsampling plus one learned offset."""
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, x, train=False):
    return jnp.repeat(jnp.repeat(x, 4, 1), 4, 2) + self.param('b', nn.initializers.zeros, ())


class _MeanD(nn.Module):
  """A discriminator whose logit is 10 (mean(x) - 0.5) + a: it tells which images it was shown."""
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, x, train=False):
    a = self.param('a', nn.initializers.zeros, ())
    return 10.0 * (jnp.mean(x, axis=(1, 2, 3)) - 0.5) + a


@pytest.mark.parametrize('gan_type', ['vanilla', 'relativistic'])
def test_d_sees_the_unsharpened_target_when_the_batch_has_one(gan_type):
  """gan_gt_usm False: D's real images (and the relativistic G loss's) are batch['hr_orig'] when the
  batch has it (the target sharpened for the losses in 'hr'), else batch['hr']."""
  config = tiny_config(f'loss.gan_type={gan_type}', 'train.batch_size=2')
  task = dataclasses.replace(train_steps.make_task(config), generator=_Nearest(), discriminator=_MeanD(),
                             frozen={},
                             gan_weights=(('pixel', 1.0), ('adversarial', 1.0)))
  lr = np.full((2, 8, 8, 3), 0.5, np.float32)
  dark, bright = np.zeros((2, 32, 32, 3), np.float32), np.ones((2, 32, 32, 3), np.float32)
  state = train_steps.init_state(task, jax.random.key(0), lr.shape, dark.shape)
  with_orig = {'lr': lr, 'hr': dark, 'hr_orig': bright}
  step = fast_jit(lambda s, b: train_steps.gan_step(task, s, b), state, with_orig)
  _, m = step(state, with_orig)
  assert float(m['d_real']) > 0.99  # shown the bright hr_orig: logit +5
  plain = {'lr': lr, 'hr': dark}
  _, m_plain = fast_jit(lambda s, b: train_steps.gan_step(task, s, b), state, plain)(state, plain)
  assert float(m_plain['d_real']) < 0.01  # no hr_orig: the dark hr, logit -5
  np.testing.assert_allclose(m['loss_pixel'], m_plain['loss_pixel'])  # L1 still against 'hr'
  same_g_loss = np.isclose(m['loss_adversarial'], m_plain['loss_adversarial'])
  assert same_g_loss == (gan_type == 'vanilla')  # the relativistic G loss reads D(real) too


def test_experiments_hold_real_esrgan_settings():
  net, gan = (config_lib.get_config(n) for n in ('realesrnet_x4plus', 'realesrgan_x4plus'))
  for c in (net, gan):
    m = c.model
    assert (m.name, m.num_blocks, m.num_features, m.growth_channels, m.scale) == ('rrdbnet', 23, 64, 32, 4)
    assert (c.data.patch_size, c.data.degradation, c.data.degrade_on_device) == (256, 'realesrgan(4)', True)
    assert c.data.target_sharpen == 'usm(0.5, radius=50, threshold=10)' and c.data.realesrgan
    assert (c.data.augment, c.data.affine.hflip, c.data.affine.rotation) == (False, True, 0.0)  # hflip only
    assert (c.train.batch_size, c.train.b1, c.train.b2, c.train.ema_decay) == (48, 0.9, 0.99, 0.999)
    assert c.model.init_from == '' and 'init_from' not in ckpt_lib.model_signature(c)['model']
  assert net.discriminator.name == 'none' and dict(net.loss.pretrain) == {'pixel': 1.0}
  assert (net.train.num_steps, net.train.pretrain_lr, net.train.pretrain_milestones) == (
      1_000_000, 2e-4, (1_000_000,))
  assert train.first_stage(gan) == 'gan' and gan.train.pretrain_steps == 0
  assert dict(gan.discriminator) == {'name': 'unet_sn', 'num_features': 64, 'skip_connection': True}
  assert dict(gan.loss.gan) == {'pixel': 1.0, 'content': 1.0, 'adversarial': 0.1}
  assert losses.content_layers(gan.loss) == {'conv1_2': 0.1, 'conv2_2': 0.1, 'conv3_4': 1.0,
                                             'conv4_4': 1.0, 'conv5_4': 1.0}
  assert (gan.loss.gan_type, gan.loss.content_before_activation, gan.loss.content_criterion) == (
      'vanilla', True, 'l1')
  assert (gan.train.num_steps, gan.train.g_lr, gan.train.d_lr, gan.train.gan_milestones) == (
      400_000, 1e-4, 1e-4, (400_000,))
  d = models.build_discriminator(gan)  # per-pixel logits at the full 256 patch
  hr = jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32)
  assert jax.eval_shape(d.init_with_output, jax.random.key(0), hr)[0].shape == (2, 256, 256, 1)
  with pytest.raises(UserError, match='weight >= 0'):
    config_lib.get_config('realesrgan_x4plus', ['loss.content_layers.conv1_2=-1'])
  zero = [f'loss.content_layers.{k}=0' for k in ('conv1_2', 'conv2_2', 'conv3_4', 'conv4_4', 'conv5_4')]
  with pytest.raises(UserError, match='weights no layer'):
    config_lib.get_config('realesrgan_x4plus', zero)


# Test size: one RRDB of width 8, D of width 8, 32-pixel patches, the perceptual loss on conv1_2 and
# conv2_2 only; 2 steps, validated and checkpointed at 2. The realesrgan chain and USM run as they are.
_TINY = ('model.num_blocks=1', 'model.num_features=8', 'model.growth_channels=4', 'data.patch_size=32',
         'data.val_patch_size=64', 'train.batch_size=2', 'train.num_steps=2', 'train.eval_every_steps=2',
         'train.checkpoint_every_steps=2', 'train.log_every_steps=1', 'train.progress=False')
_TINY_GAN = ('discriminator.num_features=8', 'loss.content_layers.conv3_4=0',
             'loss.content_layers.conv4_4=0', 'loss.content_layers.conv5_4=0')


@pytest.mark.slow
def test_realesrnet_trains_on_device_degraded_batches():
  """Two of realesrnet_x4plus's own steps (at -O0) on HR-only batches: USM-sharpened target and the
  realesrgan chain inside the step. (Its loop, checkpoints and evaluation are the GAN run's below.)"""
  import skimage.data  # pylint: disable=g-import-not-at-top
  config = config_lib.get_config('realesrnet_x4plus', _TINY)
  task = train_steps.make_task(config)
  assert task.discriminator is None and task.degrade is not None and task.sharpen is not None
  batch = {'hr': np.stack([p[100:132, 200:232] for p in (skimage.data.astronaut(), skimage.data.coffee())]
                          ).astype(np.float32) / 255.0}
  key = jax.random.key(0)
  state = fast_jit(lambda k: train_steps.init_state(task, k, (2, 8, 8, 3), batch['hr'].shape), key)(key)
  step = fast_jit(lambda s, b: train_steps.pretrain_step(task, s, b), state, batch)
  losses_ = []
  for _ in range(2):
    state, m = step(state, batch)
    losses_.append(float(m['loss_pixel']))
  assert int(state.step) == 2 and all(np.isfinite(losses_)) and losses_[0] != losses_[1]


@pytest.mark.slow
def test_realesrgan_trains_end_to_end_at_test_size(tmp_path):
  """realesrgan_x4plus through train_and_evaluate: its GAN stage from step 0 with the U-Net D, the
  five-layer perceptual loss (two at test size), D shown the unsharpened target; the checkpoint
  (spectral-norm statistics included) restores for evaluation."""
  name = 'realesrgan_x4plus'
  config = config_lib.get_config(name, [*_TINY, *_TINY_GAN])
  train.train_and_evaluate(config, tmp_path)
  records = [json.loads(l) for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  steps = [r for r in records if r['split'] == 'train']
  assert [(r['step'], r['stage']) for r in steps] == [(1, 'gan'), (2, 'gan')]
  assert [r['step'] for r in records if r['split'] == 'val'] == [2]
  for r in steps:
    assert {'loss_pixel', 'loss_content', 'loss_adversarial', 'd_loss'} <= set(r)
    assert all(np.isfinite(r[k]) for k in ('g_loss', 'd_loss')) and 0 < r['d_real'] < 1
  ckpts = ckpt_lib.Checkpoints(tmp_path, read_only=True)
  meta = ckpts.read_meta('latest')
  assert meta['signature']['discriminator']['name'] == 'unet_sn'
  assert 'init_from' not in meta['signature']['model']
  task = train_steps.make_task(config)
  abstract = jax.eval_shape(lambda k: train_steps.init_state(task, k, (2, 8, 8, 3), (2, 32, 32, 3)),
                            jax.random.key(0))
  state, _, _ = ckpts.restore(abstract, 'latest')
  ckpts.close()
  assert sorted(state.d_stats) == sorted(f'{k}_sn' for k in SN_CONVS)
  sigma = float(state.d_stats['conv1_sn']['conv1/kernel/sigma'])  # 1 at init; trained: estimated
  assert sigma != 1.0 and sigma > 0
