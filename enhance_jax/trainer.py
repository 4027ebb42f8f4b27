"""Train state and the pure steps `(state, batch) -> (state, metrics)`: L1 pre-training, the GAN step
(D and G updated in one XLA program), and the evaluation step."""

import dataclasses
import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from enhance_jax import input_pipeline
from enhance_jax import losses
from enhance_jax import metrics as metrics_lib
from enhance_jax import models
from enhance_jax.errors import UserError
from enhance_jax.models.vgg import VGG19Features


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training, as one pytree (checkpointed whole)."""
  step: jax.Array
  g_params: Any
  g_stats: Any          # generator BatchNorm statistics ({} without BatchNorm, e.g. RRDBNet)
  g_opt: Any
  d_params: Any
  d_opt: Any
  d_stats: Any          # discriminator BatchNorm statistics ({} without BatchNorm)
  ema_params: Any       # exponential moving average of g_params; None when train.ema_decay == 0
  rng: jax.Array


@dataclasses.dataclass(frozen=True)
class Task:
  """The static parts of training, built once from the config: modules, optimisers, loss weights."""
  generator: nn.Module
  discriminator: nn.Module | None  # None: supervised only (discriminator.name = 'none')
  vgg: nn.Module
  g_tx_pretrain: optax.GradientTransformation
  g_tx_gan: optax.GradientTransformation
  d_tx: optax.GradientTransformation
  pretrain_weights: tuple
  gan_weights: tuple
  pixel_criterion: str
  content_criterion: str
  gan_type: str
  ema_decay: float
  scale: int
  degrade: Any = None  # hr -> lr on the device (data.degrade_on_device); None: batches carry 'lr'


def _optimizer(lr, milestones, config):
  """Adam or AdamW (train.optimizer) with the step-decay schedule lr * lr_decay^(milestones passed)."""
  t = config.train
  schedule = optax.piecewise_constant_schedule(lr, {int(m): t.lr_decay for m in milestones})
  if t.optimizer == 'adam':
    return optax.adam(schedule, b1=t.b1, b2=t.b2)
  if t.optimizer == 'adamw':
    return optax.adamw(schedule, b1=t.b1, b2=t.b2, weight_decay=t.weight_decay)
  raise UserError(f"unknown train.optimizer {t.optimizer!r}; valid: 'adam', 'adamw'.")


def _check_loss(l):
  """UserError now for a loss setting that the jitted steps would only trip over mid-run."""
  for key in ('pixel_criterion', 'content_criterion'):
    if l[key] not in losses.PIXEL_CRITERIA:
      raise UserError(f'unknown loss.{key} {l[key]!r}; valid: {", ".join(losses.PIXEL_CRITERIA)}.')
  if l.gan_type not in losses.GAN_TYPES:
    raise UserError(f'unknown loss.gan_type {l.gan_type!r}; valid: {", ".join(losses.GAN_TYPES)}.')
  for stage in ('pretrain', 'gan'):
    unknown = sorted(set(l[stage]) - set(losses.LOSS_TERMS))
    if unknown:
      raise UserError(f'loss.{stage} names unknown terms {unknown}; valid: '
                      f'{", ".join(losses.LOSS_TERMS)}.')


def make_task(config):
  """Modules, optimisers and loss weights for CONFIG (the one place config turns into objects)."""
  t, l = config.train, config.loss
  _check_loss(l)
  vgg = VGG19Features(layers=(l.content_layer,), before_activation=l.content_before_activation,
                      dtype=models.compute_dtype(config))
  return Task(
      generator=models.build_generator(config),
      discriminator=(None if config.discriminator.name == 'none'
                     else models.build_discriminator(config)),
      vgg=vgg,
      g_tx_pretrain=_optimizer(t.pretrain_lr, t.pretrain_milestones, config),
      g_tx_gan=_optimizer(t.g_lr, t.gan_milestones, config),
      d_tx=_optimizer(t.d_lr, t.gan_milestones, config),
      pretrain_weights=tuple((k, float(w)) for k, w in l.pretrain.items() if w),
      gan_weights=tuple((k, float(w)) for k, w in l.gan.items() if w),
      pixel_criterion=l.pixel_criterion,
      content_criterion=l.content_criterion,
      gan_type=l.gan_type,
      ema_decay=float(t.ema_decay),
      scale=config.model.scale,
      degrade=input_pipeline.degrade_fn(config) if config.data.degrade_on_device else None)


def uses_vgg(task):
  return any(k == 'content' for k, _ in task.pretrain_weights + task.gan_weights)


def init_state(task, rng, lr_shape, hr_shape):
  """Fresh parameters and optimiser states (G's optimiser starts in its pre-training form)."""
  g_rng, d_rng, rng = jax.random.split(rng, 3)
  g_vars = task.generator.init(g_rng, jnp.zeros(lr_shape, jnp.float32))
  g_params = g_vars['params']
  d_vars = (task.discriminator.init(d_rng, jnp.zeros(hr_shape, jnp.float32))
            if task.discriminator is not None else {'params': {}})
  return TrainState(
      step=jnp.zeros((), jnp.int32), g_params=g_params, g_stats=g_vars.get('batch_stats', {}),
      g_opt=task.g_tx_pretrain.init(g_params),
      d_params=d_vars['params'], d_opt=task.d_tx.init(d_vars['params']),
      d_stats=d_vars.get('batch_stats', {}),
      # A copy: the jitted steps donate the state, and one buffer cannot be donated twice.
      ema_params=jax.tree.map(jnp.copy, g_params) if task.ema_decay > 0 else None, rng=rng)


def start_gan_stage(task, state):
  """A fresh Adam state for G with the GAN-stage learning rate (BasicSR starts ESRGAN from ESRNet so).

  The new state is placed like the rest of the state (replicated over the mesh): optax would create
  its step counts on the default device alone, which the jitted GAN step must then copy (a recompile
  on one device, a disallowed transfer under `jax.transfer_guard` on several).
  """
  init = jax.jit(task.g_tx_gan.init, out_shardings=state.step.sharding)
  return state.replace(g_opt=init(state.g_params))


def _ema(task, ema_params, g_params):
  if ema_params is None:
    return None
  d = task.ema_decay
  return jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema_params, g_params)


def generate(task, g_params, g_stats, lr, train=False):
  """(SR, new G BatchNorm statistics): batch statistics when training a G with BatchNorm."""
  if not g_stats:
    return task.generator.apply({'params': g_params}, lr, train=train), g_stats
  variables = {'params': g_params, 'batch_stats': g_stats}
  if not train:
    return task.generator.apply(variables, lr, train=False), g_stats
  sr, updates = task.generator.apply(variables, lr, train=True, mutable=['batch_stats'])
  return sr, updates['batch_stats']


def _image_metrics(sr, hr):
  sr = jnp.clip(sr, 0.0, 1.0)
  return {'psnr': jnp.mean(metrics_lib.psnr(sr, hr)), 'ssim': jnp.mean(metrics_lib.ssim(sr, hr))}


def lr_hr(task, batch):
  """The batch's (LR, HR); the LR computed here from HR when the pipeline left it to the device."""
  hr = batch['hr']
  return (batch['lr'] if task.degrade is None else task.degrade(hr).astype(jnp.float32)), hr


def pretrain_step(task, state, batch, vgg_params=None):
  """One supervised step of G on the pre-training loss terms (L1 pixel for ESRGAN, MSE for SRResNet)."""
  lr, hr = lr_hr(task, batch)

  def loss_fn(g_params):
    sr, g_stats = generate(task, g_params, state.g_stats, lr, train=True)
    terms = {'pixel': losses.PIXEL_CRITERIA[task.pixel_criterion](sr, hr)}
    if vgg_params is not None and 'content' in dict(task.pretrain_weights):
      terms['content'] = losses.content(task.vgg.apply({'params': vgg_params}, sr),
                                        task.vgg.apply({'params': vgg_params}, hr),
                                        task.content_criterion)
    return sum(w * terms[k] for k, w in task.pretrain_weights), (sr, g_stats, terms)

  (g_loss, (sr, g_stats, terms)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g_params)
  updates, g_opt = task.g_tx_pretrain.update(grads, state.g_opt, state.g_params)
  g_params = optax.apply_updates(state.g_params, updates)
  state = state.replace(step=state.step + 1, g_params=g_params, g_stats=g_stats, g_opt=g_opt,
                        ema_params=_ema(task, state.ema_params, g_params))
  out = {'g_loss': g_loss, **{f'loss_{k}': v for k, v in terms.items()}, **_image_metrics(sr, hr),
         'g_grad_norm': optax.tree.norm(grads), 'g_param_norm': optax.tree.norm(g_params)}
  return state, out


def gan_step(task, state, batch, vgg_params=None):
  """One GAN step: G's and D's updates in one program, sharing D's forward passes.

  As in BasicSR, G is updated against the current D, and D against the same (detached) SR batch.
  D runs forward once on HR and once on SR; the pullback of D(SR) gives G its gradient through D,
  and both pullbacks give D the gradient of its own loss, so no forward pass is repeated.
  """
  lr, hr = lr_hr(task, batch)
  weights = dict(task.gan_weights)
  sr, g_pullback, g_stats = jax.vjp(
      lambda p: generate(task, p, state.g_stats, lr, train=True), state.g_params, has_aux=True)

  def d_on_real(d_params):
    return task.discriminator.apply({'params': d_params, 'batch_stats': state.d_stats}, hr,
                                    train=True, mutable=['batch_stats'])

  real, real_pullback, upd = jax.vjp(d_on_real, state.d_params, has_aux=True)

  def d_on_fake(d_params, fake):
    return task.discriminator.apply({'params': d_params, **upd}, fake, train=True,
                                    mutable=['batch_stats'])

  fake, fake_pullback, upd = jax.vjp(d_on_fake, state.d_params, sr, has_aux=True)
  hr_features = (jax.lax.stop_gradient(task.vgg.apply({'params': vgg_params}, hr))
                 if 'content' in weights else None)

  def g_objective(sr, fake):
    terms = {'adversarial': losses.generator_adversarial(jax.lax.stop_gradient(real), fake,
                                                         task.gan_type)}
    if 'pixel' in weights:
      terms['pixel'] = losses.PIXEL_CRITERIA[task.pixel_criterion](sr, hr)
    if 'content' in weights:
      terms['content'] = losses.content(task.vgg.apply({'params': vgg_params}, sr), hr_features,
                                        task.content_criterion)
    return sum(w * terms[k] for k, w in weights.items()), terms

  (g_loss, terms), (dsr, dfake) = jax.value_and_grad(g_objective, (0, 1), has_aux=True)(sr, fake)
  _, dsr_through_d = fake_pullback(dfake)  # (XLA drops the unused weight gradients)
  (g_grads,) = g_pullback(dsr + dsr_through_d)
  d_loss, (dreal, dfake_d) = jax.value_and_grad(
      lambda r, f: losses.discriminator_adversarial(r, f, task.gan_type), (0, 1))(real, fake)
  d_grads = jax.tree.map(jnp.add, real_pullback(dreal)[0], fake_pullback(dfake_d)[0])

  g_updates, g_opt = task.g_tx_gan.update(g_grads, state.g_opt, state.g_params)
  d_updates, d_opt = task.d_tx.update(d_grads, state.d_opt, state.d_params)
  g_params = optax.apply_updates(state.g_params, g_updates)
  state = state.replace(step=state.step + 1, g_params=g_params, g_stats=g_stats, g_opt=g_opt,
                        d_params=optax.apply_updates(state.d_params, d_updates), d_opt=d_opt,
                        d_stats=upd.get('batch_stats', {}),
                        ema_params=_ema(task, state.ema_params, g_params))
  out = {'g_loss': g_loss, 'd_loss': d_loss, **{f'loss_{k}': v for k, v in terms.items()},
         **_image_metrics(sr, hr), 'd_real': jnp.mean(jax.nn.sigmoid(real)),
         'd_fake': jnp.mean(jax.nn.sigmoid(fake)), 'g_grad_norm': optax.tree.norm(g_grads),
         'd_grad_norm': optax.tree.norm(d_grads), 'g_param_norm': optax.tree.norm(g_params)}
  return state, out


def eval_params(state):
  """The generator weights to evaluate: the EMA copy when there is one."""
  return state.ema_params if state.ema_params is not None else state.g_params


def eval_variables(state):
  """The generator's variables for inference: eval_params and its BatchNorm running statistics."""
  return {'params': eval_params(state), **({'batch_stats': state.g_stats} if state.g_stats else {})}


def predict(task, g_vars, lr):
  """SR of LR in [0, 1] with G's variables (`eval_variables`), BatchNorm on its running averages."""
  return jnp.clip(task.generator.apply(g_vars, lr, train=False), 0.0, 1.0)


def eval_step(task, g_vars, batch):
  """Per-image SR-protocol metrics (RGB and Y with a border crop of `scale`) for a validation batch."""
  sr = predict(task, g_vars, batch['lr'])
  return metrics_lib.sr_metrics(sr, batch['hr'], task.scale)


def jit_steps(task, mesh):
  """The jitted steps with explicit shardings: state replicated and donated, batch split on 'data'."""
  from enhance_jax import parallel  # pylint: disable=g-import-not-at-top
  rep, split = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  step_kw = dict(in_shardings=(rep, split, rep), out_shardings=(rep, rep), donate_argnums=0)
  return {
      'pretrain': jax.jit(functools.partial(pretrain_step, task), **step_kw),
      'gan': jax.jit(functools.partial(gan_step, task), **step_kw),
      'eval': jax.jit(functools.partial(eval_step, task), in_shardings=(rep, split),
                      out_shardings=split),
      'predict': jax.jit(functools.partial(predict, task), in_shardings=(rep, split),
                         out_shardings=split),
  }


@jax.jit
def accumulate(total, metrics):
  """Adds a step's metrics to the running sums on device (fetched only when logged)."""
  return jax.tree.map(jnp.add, total, metrics)
