"""The PyTorch twins (benchmarks/torch_reference) compute what enhance_jax computes from shared
weights: RRDBNet, D and VGG19 forwards, losses, optimisers, and one pretrain and one GAN step."""

import functools
import pathlib
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # `benchmarks` for bare pytest

# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks.torch_reference import models as tm
from benchmarks.torch_reference import train_step as ts
from conftest import fast_jit
from enhance_jax.io import weights
from enhance_jax.models import vgg as jax_vgg
from enhance_jax.models.discriminator import VGGStyleDiscriminator
from enhance_jax.models.rrdbnet import RRDBNet
from enhance_jax.training import config as config_lib
from enhance_jax.training import losses
from enhance_jax.training import train_steps

# 50 (2% of lr) * Adam's eps (1e-8) * 2e-5 (float32 gradient noise relative to a tensor's largest).
NOISE_BOUND = 50 * 1e-8 * 2e-5
TINY_G = dict(num_feat=8, num_block=2, num_grow_ch=4)
TINY = ('model.num_blocks=2', 'model.num_features=8', 'model.growth_channels=4',
        'discriminator.num_features=8', 'discriminator.dense_features=16', 'data.patch_size=32',
        'train.batch_size=4', 'loss.content_layer=conv2_2')


def _nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def _sd(module):
  return {k: v.numpy() for k, v in module.state_dict().items()}


def _flat(tree):
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): np.asarray(v)
          for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _assert_trees_close(actual, desired, rtol, atol):
  actual, desired = _flat(actual), _flat(desired)
  assert sorted(actual) == sorted(desired)
  for k in desired:
    np.testing.assert_allclose(actual[k], desired[k], rtol=rtol, atol=atol, err_msg=k)


@pytest.mark.slow
@pytest.mark.parametrize('scale', [4, 2])
def test_rrdbnet_matches_jax(scale):
  torch.manual_seed(scale)
  net = tm.RRDBNet(scale=scale, **TINY_G)
  x = torch.rand(2, 3, 12, 16)
  with torch.no_grad():
    want = _nhwc(net(x))
  assert want.shape == (2, 12 * scale, 16 * scale, 3) and want.std() > 1e-3
  jax_net = RRDBNet(num_blocks=2, num_features=8, growth_channels=4, scale=scale)
  params = ts.export_params(net)  # rrdbnet_params_from_state_dict, fitted to the module's tree
  got = jax_net.apply({'params': params}, _nhwc(x))
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  # The other direction: Flax params (of another random twin) -> this twin.
  torch.manual_seed(scale + 10)
  params = ts.export_params(tm.RRDBNet(scale=scale, **TINY_G))
  ts.load_jax_params(net, params)
  with torch.no_grad():
    np.testing.assert_allclose(_nhwc(net(x)), jax_net.apply({'params': params}, _nhwc(x)),
                               atol=1e-5, rtol=1e-5)


def test_rrdbnet_importer_fits_jax_module():
  sd = _sd(tm.RRDBNet(**TINY_G))
  imported = weights.rrdbnet_params_from_state_dict(sd, 2)
  init = jax.eval_shape(RRDBNet(num_blocks=2, num_features=8, growth_channels=4).init,
                        jax.random.PRNGKey(0), np.zeros((1, 8, 8, 3), np.float32))['params']
  assert sorted(_flat(imported)) == sorted(_flat(init))
  x = np.random.default_rng(0).random((1, 8, 8, 3), np.float32)
  out = RRDBNet(num_blocks=2, num_features=8, growth_channels=4).apply({'params': imported}, x)
  assert out.shape == (1, 32, 32, 3)


def test_rrdbnet_report_size_parameter_count():
  assert sum(p.numel() for p in tm.RRDBNet().parameters()) == 16_697_987


def _random_discriminator(seed):
  """A tiny twin D with non-trivial BatchNorm affine params and running statistics."""
  torch.manual_seed(seed)
  d = tm.VGGStyleDiscriminator(num_feat=8, dense_features=16)
  for name, m in d.named_modules():
    if name.startswith('bn'):
      m.weight.data.uniform_(0.5, 1.5)
      m.bias.data.normal_(0.0, 0.2)
      m.running_mean.normal_(0.0, 0.1)
      m.running_var.uniform_(0.5, 2.0)
  return d


def _bn_sizes(n, hw):
  """Elements per channel each bn{i} averages over: N * H_i * W_i (stride 2 at odd convs)."""
  return {f'bn{i}': n * (hw >> ((i + 1) // 2)) ** 2 for i in range(1, 8)}


@pytest.mark.slow
def test_discriminator_matches_jax_eval_and_train():
  d = _random_discriminator(0)
  params, stats = ts.export_params(d)
  jax_d = VGGStyleDiscriminator(num_features=8, dense_features=16)
  x = torch.rand(4, 3, 32, 32)
  with torch.no_grad():
    want_eval = d.eval()(x).numpy()
    want_train = d.train()(x).numpy()
  got_eval = jax_d.apply({'params': params, 'batch_stats': stats}, _nhwc(x), train=False)
  got_train, upd = jax_d.apply({'params': params, 'batch_stats': stats}, _nhwc(x), train=True,
                               mutable=['batch_stats'])
  assert want_eval.shape == (4,) and np.abs(want_eval - want_train).max() > 1e-3
  np.testing.assert_allclose(got_eval, want_eval, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(got_train, want_train, atol=1e-5, rtol=1e-5)
  _assert_running_stats_match(d, stats, upd['batch_stats'], _bn_sizes(4, 32), updates=1)


def _assert_running_stats_match(d, old, new, sizes, updates):
  """Means agree; variances agree once torch's unbiased n/(n-1) batch variance is undone."""
  _, torch_new = ts.export_params(d)
  for bn, n in sizes.items():
    np.testing.assert_allclose(torch_new[bn]['mean'], new[bn]['mean'], atol=1e-5, err_msg=bn)
    decay = 0.9 ** updates
    flax_add = np.asarray(new[bn]['var']) - decay * np.asarray(old[bn]['var'])
    torch_add = torch_new[bn]['var'] - decay * np.asarray(old[bn]['var'])
    np.testing.assert_allclose(torch_add * (n - 1) / n, flax_add, rtol=1e-4, atol=1e-6, err_msg=bn)


def test_discriminator_param_count_matches_jax_at_report_size():
  shapes = jax.eval_shape(VGGStyleDiscriminator().init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct((1, 128, 128, 3), np.float32))
  n_jax = sum(x.size for x in jax.tree.leaves(shapes['params']))
  assert sum(p.numel() for p in tm.VGGStyleDiscriminator().parameters()) == n_jax


def test_vgg19_layer_indices_match_torchvision_layout():
  for name, index in jax_vgg.VGG19_TORCH_INDEX.items():
    assert tm.vgg19_layer_index(name) == index
    assert tm.vgg19_layer_index('relu' + name[4:]) == index + 1
  assert len(tm.VGG19Features('conv5_4').features) == 35  # torchvision: 37 with relu5_4 and pool


@pytest.mark.parametrize('layer,before', [('conv5_4', True), ('conv3_4', False), ('relu2_2', True)])
def test_vgg19_matches_jax(layer, before):
  torch.manual_seed(1)
  net = tm.VGG19Features(layer, before_activation=before)
  x = torch.rand(2, 3, 32, 32)
  with torch.no_grad():
    want = _nhwc(net(x))
  sd = _sd(net)  # keys `features.{i}.weight/bias`, as torchvision's vgg19 state_dict
  params = weights.vgg19_params_from_state_dict(sd, jax_vgg.convs_needed(layer))
  got = jax_vgg.VGG19Features(layers=(layer,), before_activation=before).apply(
      {'params': params}, _nhwc(x))[layer]
  scale = np.abs(want).max()
  assert scale > 0 and (before or want.min() >= 0)
  np.testing.assert_allclose(got / scale, want / scale, atol=1e-5)
  _assert_trees_close(ts.export_params(net), params, 0, 0)


@pytest.mark.parametrize('gan_type', ['relativistic', 'vanilla'])
def test_gan_losses_and_gradients_match_jax(gan_type):
  rng = np.random.default_rng(0)
  real, fake = rng.normal(size=(2, 6)).astype(np.float32)
  for torch_fn, jax_fn in ((tm.generator_adversarial, losses.generator_adversarial),
                           (tm.discriminator_adversarial, losses.discriminator_adversarial)):
    r, f = torch.tensor(real, requires_grad=True), torch.tensor(fake, requires_grad=True)
    value = torch_fn(r, f, gan_type)
    value.backward()
    want, grads = jax.value_and_grad(jax_fn, (0, 1))(real, fake, gan_type)
    np.testing.assert_allclose(value.item(), want, rtol=1e-6)
    for x, g in ((r, grads[0]), (f, grads[1])):  # vanilla G's loss ignores the real logits
      np.testing.assert_allclose(np.zeros(6) if x.grad is None else x.grad.numpy(), g, atol=1e-7)


@pytest.mark.parametrize('criterion', sorted(losses.PIXEL_CRITERIA))
def test_pixel_losses_match_jax(criterion):
  a, b = np.random.default_rng(1).uniform(size=(2, 2, 5, 5, 3)).astype(np.float32)
  got = tm.PIXEL_CRITERIA[criterion](torch.from_numpy(a), torch.from_numpy(b)).item()
  np.testing.assert_allclose(got, losses.PIXEL_CRITERIA[criterion](a, b), rtol=1e-6)


def test_trainer_reads_vgg19_weights_file(tmp_path):
  torch.manual_seed(4)
  saved = tm.VGG19Features('conv5_4')
  path = tmp_path / 'vgg19.pth'
  torch.save(saved.state_dict(), path)  # torchvision's `features.{i}` keys
  config = config_lib.get_config('esrgan', [*TINY, f'loss.vgg_weights={path}'])
  loaded = ts.make_trainer(config, 'cpu', 'fp32').perceptual.vgg
  assert len(loaded.features) == 8  # features.0 .. features.7 (conv2_2)
  for k, v in loaded.state_dict().items():
    np.testing.assert_array_equal(v.numpy(), saved.state_dict()[k].numpy(), err_msg=k)


# ---------------------------------------------------------------- one training step


def _jax_state(task, g_params, d_params, d_stats):
  """train_steps.init_state's TrainState holding the given weights (Flax's own init compiles slowly)."""
  init = functools.partial(train_steps.init_state, task, lr_shape=(4, 8, 8, 3), hr_shape=(4, 32, 32, 3))
  shapes = jax.eval_shape(init, jax.random.PRNGKey(0))
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  g_params, d_params, d_stats = jax.tree.map(jnp.asarray, (g_params, d_params, d_stats))
  return zeros.replace(g_params=g_params, g_opt=task.g_tx_pretrain.init(g_params),
                       d_params=d_params, d_opt=task.d_tx.init(d_params), d_stats=d_stats,
                       ema_params=g_params)


@pytest.fixture(name='setup', scope='module')
def setup_fixture():
  """Tiny ESRGAN config, its Task, a JAX state from random twins, a random VGG19 and one batch."""
  config = config_lib.get_config('esrgan', list(TINY))
  task = train_steps.make_task(config)
  torch.manual_seed(2)
  g_params = ts.export_params(tm.RRDBNet(**TINY_G))
  vgg_params = ts.export_params(tm.VGG19Features('conv2_2'))
  state = _jax_state(task, g_params, *ts.export_params(_random_discriminator(3)))
  rng = np.random.default_rng(0)
  hr = rng.uniform(size=(4, 32, 32, 3)).astype(np.float32)
  lr = hr.reshape(4, 8, 4, 8, 4, 3).mean((2, 4))  # a box-downscaled LR of the same HR
  return config, task, state, vgg_params, {'lr': lr, 'hr': hr}


def _torch_trainer(config, state, vgg_params):
  t = ts.make_trainer(config, 'cpu', 'fp32', channels_last=True)
  t.load_jax_state(state, vgg_params)
  return t


def _grads(module):
  return ts.export_params(module, {k: p.grad for k, p in module.named_parameters()})


def _assert_update_matches(old, torch_new, jax_new, torch_grads, lr, noise_only=()):
  """Each Adam step agrees to 2% of lr where the gradient is clear of float noise; new params
  agree to 1e-4 in norm."""
  # A first Adam step is lr * g / (|g| + eps): float noise dg moves it by lr * eps * dg / g^2,
  # under 2% of lr for |g| > sqrt(NOISE_BOUND * max|g|) if dg < 2e-5 max|g|. Smaller gradients take
  # noise-driven steps, as do `noise_only` tensors (D's last bias: its gradient is exactly zero in
  # theory under the shift-invariant relativistic loss). A wrong sign, lr or term moves up to 2 lr.
  old, torch_new, jax_new, grads = (_flat(t) for t in (old, torch_new, jax_new, torch_grads))
  assert sorted(torch_new) == sorted(jax_new) == sorted(old) == sorted(grads)
  clear = {k: (np.abs(g) > np.sqrt(NOISE_BOUND * np.abs(g).max())) & (k not in noise_only)
           for k, g in grads.items()}
  assert sum(m.sum() for m in clear.values()) > 0.9 * sum(m.size for m in clear.values())
  for k, want in jax_new.items():
    steps = (torch_new[k] - old[k])[clear[k]], (want - old[k])[clear[k]]
    np.testing.assert_allclose(*steps, rtol=0, atol=0.02 * lr, err_msg=k)
    assert np.abs(steps[1]).max(initial=lr) >= 0.5 * lr
  diff = np.sqrt(sum(np.sum(np.square(torch_new[k] - v)) for k, v in jax_new.items()))
  assert diff <= 1e-4 * np.sqrt(sum(np.sum(np.square(v)) for v in jax_new.values()))


@pytest.mark.parametrize('name,tx', [('g_pretrain', 'g_tx_pretrain'), ('g', 'g_tx_gan'),
                                     ('d', 'd_tx')])
def test_optimisers_and_schedules_match_optax(name, tx):
  """Each torch Adam + MultiStepLR follows the Task's optax chain over 6 steps past 2 milestones."""
  config = config_lib.get_config('esrgan', [*TINY, 'train.pretrain_milestones=(2, 4)',
                                            'train.gan_milestones=(1, 3)', 'train.lr_decay=0.3'])
  tx = getattr(train_steps.make_task(config), tx)
  t = ts.make_trainer(config, 'cpu', 'fp32')
  optimizer, scheduler = getattr(t, f'opt_{name}'), getattr(t, f'sched_{name}')
  params = optimizer.param_groups[0]['params']
  assert optimizer.param_groups[0]['betas'] == (config.train.b1, config.train.b2)
  x0 = params[0].detach().flatten()[0].item()
  x, opt_state = jnp.float32(x0), tx.init(jnp.float32(x0))
  for k in range(6):
    g = 1e-8 * (-4.0) ** k  # growing, alternating, from eps up: the step depends on lr, b1, b2, eps
    for p in params:
      p.grad = torch.full_like(p, g)
    optimizer.step()
    scheduler.step()
    update, opt_state = tx.update(jnp.float32(g), opt_state, x)
    x = x + update
    np.testing.assert_allclose(params[0].detach().flatten()[0].item() - x0, float(x) - x0,
                               rtol=1e-4, atol=1e-9, err_msg=f'step {k}')


def _assert_metrics_match(torch_out, jax_out, keys):
  for k in keys:
    np.testing.assert_allclose(float(torch_out[k]), float(jax_out[k]), rtol=2e-4, atol=1e-6,
                               err_msg=k)


def _both_steps(setup, stage):
  """One STAGE step from the same state and batch in JAX and in the torch twin."""
  config, task, state, vgg_params, batch = setup
  if stage == 'gan':
    state = train_steps.start_gan_stage(task, state)
  t = _torch_trainer(config, state, vgg_params)
  jax_step = getattr(train_steps, f'{stage}_step')
  frozen = {'vgg19': {'params': vgg_params}}
  step = fast_jit(functools.partial(jax_step, task), state, batch, frozen)
  new_state, jax_out = step(state, batch, frozen)
  torch_out = getattr(t, f'{stage}_step')(*(ts.to_nchw(batch[k], 'cpu') for k in ('lr', 'hr')))
  return config, t, state, new_state, jax_out, torch_out


@pytest.mark.slow
def test_pretrain_step_matches_jax(setup):
  config, t, state, new_state, jax_out, torch_out = _both_steps(setup, 'pretrain')
  _assert_update_matches(state.g_params, ts.export_params(t.generator), new_state.g_params,
                         _grads(t.generator), config.train.pretrain_lr)
  _assert_ema_matches(t, state, config)
  _assert_metrics_match(torch_out, jax_out, ['g_loss', 'loss_pixel', 'psnr', 'ssim', 'g_grad_norm',
                                             'g_param_norm'])


def _assert_ema_matches(t, state, config):
  """The twin's EMA follows enhance_jax's rule (warmed-up decay, train_steps.ema_decay_at) from the same
  old average to its own new weights. (Compared with JAX's EMA directly, it would inherit the two
  frameworks' float differences in Adam's first update, which the update checks bound separately.)"""
  names = [k for k, _ in t.generator.named_parameters()]
  torch_ema = ts.export_params(t.generator, dict(zip(names, t.ema)))
  d = float(train_steps.ema_decay_at(config.train.ema_decay, int(state.step) + 1))
  want = jax.tree.map(lambda e, p: d * np.asarray(e) + (1 - d) * np.asarray(p), state.ema_params,
                      ts.export_params(t.generator))
  _assert_trees_close(torch_ema, want, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_gan_step_matches_jax(setup):
  config, t, state, new_state, jax_out, torch_out = _both_steps(setup, 'gan')
  _assert_update_matches(state.g_params, ts.export_params(t.generator), new_state.g_params,
                         _grads(t.generator), config.train.g_lr)
  _assert_update_matches(state.d_params, ts.export_params(t.discriminator)[0], new_state.d_params,
                         _grads(t.discriminator)[0], config.train.d_lr, noise_only=['dense2/bias'])
  _assert_ema_matches(t, state, config)
  # D ran on HR then SR in train mode: two running-stat updates, in the same order on both sides.
  _assert_running_stats_match(t.discriminator, state.d_stats, new_state.d_stats, _bn_sizes(4, 32),
                              updates=2)
  _assert_metrics_match(torch_out, jax_out, [
      'g_loss', 'd_loss', 'loss_pixel', 'loss_content', 'loss_adversarial', 'psnr', 'ssim',
      'd_real', 'd_fake', 'g_grad_norm', 'd_grad_norm', 'g_param_norm'])


def test_bf16_step_autocasts_on_cpu_and_lowers_the_loss(setup):
  """precision='bf16' runs G, D and VGG19 under CPU autocast (bf16 convolutions, fp32 weights)."""
  config, _, _, _, batch = setup
  torch.manual_seed(5)
  t = ts.make_trainer(config, 'cpu', 'bf16', metrics=False)
  lr, hr = (ts.to_nchw(batch[k], 'cpu') for k in ('lr', 'hr'))
  with t._autocast():  # pylint: disable=protected-access
    assert t.generator(lr).dtype == torch.bfloat16
  assert all(p.dtype == torch.float32 for p in t.generator.parameters())
  losses = [float(t.pretrain_step(lr, hr)['g_loss']) for _ in range(4)]
  assert losses[-1] < losses[0], losses
  out = t.gan_step(lr, hr)
  assert all(np.isfinite(float(out[k])) for k in ('g_loss', 'd_loss', 'loss_content'))


def _basicsr_module(monkeypatch, cls):
  for name in ('basicsr', 'basicsr.archs'):
    monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
  arch = types.ModuleType('basicsr.archs.rrdbnet_arch')
  arch.RRDBNet = cls
  monkeypatch.setitem(sys.modules, arch.__name__, arch)


class _BasicSRSignature(tm.RRDBNet):
  """The twin behind BasicSR's constructor, as a stand-in for basicsr's RRDBNet."""

  def __init__(self, num_in_ch, num_out_ch, scale=4, num_feat=64, num_block=23, num_grow_ch=32):
    super().__init__(num_in_ch, num_out_ch, num_feat, num_block, num_grow_ch, scale)


def test_basicsr_generator_holds_the_twin_weights_or_says_why_not(monkeypatch):
  config = config_lib.get_config('esrgan', list(TINY))
  twin = ts.build_generator(config)
  monkeypatch.setitem(sys.modules, 'basicsr', None)  # import basicsr raises ImportError
  net, reason = ts.basicsr_generator(config, twin)
  assert net is None and 'not importable' in reason
  _basicsr_module(monkeypatch, _BasicSRSignature)
  net, reason = ts.basicsr_generator(config, twin)
  assert reason is None and isinstance(net, _BasicSRSignature)
  x = torch.rand(1, 3, 8, 8)
  with torch.no_grad():
    np.testing.assert_array_equal(net(x).numpy(), twin(x).numpy())
  other = config_lib.get_config('esrgan', [*TINY, 'model.residual_scale=0.1'])
  assert ts.basicsr_generator(other, ts.build_generator(other))[0] is None
