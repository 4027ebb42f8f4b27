"""Train state and the pure steps `(state, batch, frozen) -> (state, metrics)`: the supervised step, the
GAN step (D and G updated in one XLA program), and prediction.

Every step assembles its loss from the registry in losses.py (`loss.pretrain` / `loss.gan` weights),
derives its keys from `fold_in(state.rng, state.step)` (dropout, VAE sampling, on-device degradation,
losses), and runs the frozen networks the loss terms need from `frozen`, a pytree never optimised.
"""

import dataclasses
import functools
import json
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from enhance_jax import models
from enhance_jax import parallel
from enhance_jax.data import degradations
from enhance_jax.data import input_pipeline
from enhance_jax.errors import UserError
from enhance_jax.training import frozen as frozen_lib
from enhance_jax.training import output_kinds
from enhance_jax.training import losses

KEY_NAMES = ('dropout', 'sample', 'degrade', 'loss')
NAN_POLICIES = ('stop', 'skip')  # train.nan_policy: a non-finite loss or gradient stops the run or skips
FIRST_NONFINITE = 'first_nonfinite_step'  # a step metric kept as a minimum (`accumulate`), not a sum
ALL_FINITE = float(2 ** 31)  # its value while every step was finite (a step number it never reaches)
TRAIN_ON = ('degraded', 'noisy', 'clean')  # model input in training: the degraded image, or the target


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
  frozen: dict                      # {name: module} of the frozen networks the loss terms run
  g_tx_pretrain: optax.GradientTransformation
  g_tx_gan: optax.GradientTransformation
  d_tx: optax.GradientTransformation
  pretrain_weights: tuple           # ((term, weight), ...) of the supervised stage
  gan_weights: tuple                # ... of the GAN stage
  options: Any                      # config.loss: criteria and settings the terms read
  ema_decay: float
  scale: int
  degrade: Any = None  # op hr -> lr run on the device (data.degrade_on_device); None: batches carry 'lr'
  train_on: str = 'degraded'
  fixed: tuple = ()    # top-level submodules frozen (lr_multipliers 0): their BatchNorm stats kept too
  sharpen: Any = None  # op hr -> the loss target, on the device (data.target_sharpen); None: hr itself
  # A multi-scale generator (MDSR): the scales it trains, batch `step` at scales[step % len(scales)]
  # (`step_scale`), one jitted step per scale; `degrades` ((scale, op), ...) each scale's on-device
  # degradation (data.scale_degradations). () for every single-scale model.
  scales: tuple = ()
  degrades: tuple = ()
  # What the model makes (models.output_key): 'image' for restoration, 'histogram' for a rating
  # model (NIMA); `kind` (output_kinds.KINDS) says how the step feeds, scores and shows it.
  output: str = 'image'
  nan_policy: str = 'stop'  # 'skip': a step with a non-finite loss or gradient changes nothing

  @property
  def kind(self):
    return output_kinds.KINDS[self.output]

  @property
  def inputs(self):
    """The batch entry the model reads ('lr'; a rating model's 'image')."""
    return self.kind.inputs


def _weights(section):
  return tuple((k, float(w)) for k, w in section.items() if w)


LR_SCHEDULES = ('step', 'exponential')


def _schedule(lr, milestones, t):
  """train.lr_schedule: 'step' = lr * lr_decay^(milestones passed) (BasicSR's MultiStepLR);
  'exponential' = lr * lr_decay^(step / lr_decay_steps), smooth (report 002's NIMA)."""
  if t.lr_schedule == 'exponential':
    return optax.exponential_decay(lr, transition_steps=int(t.lr_decay_steps), decay_rate=t.lr_decay)
  return optax.piecewise_constant_schedule(lr, {int(m): t.lr_decay for m in milestones})


def _optimizer(lr, milestones, config):
  """Adam or AdamW (train.optimizer) with the train.lr_schedule (`_schedule`); train.lr_multipliers
  {top-level param name: factor} gives a submodule (e.g. 'backbone') its own learning rate, 0
  freezing it."""
  t = config.train
  schedule = _schedule(lr, milestones, t)

  def make(factor):
    sched = schedule if factor == 1 else (lambda count: factor * schedule(count))
    if t.optimizer == 'adamw':
      return optax.adamw(sched, b1=t.b1, b2=t.b2, weight_decay=t.weight_decay)
    return optax.adam(sched, b1=t.b1, b2=t.b2)

  factors = {k: float(v) for k, v in dict(t.lr_multipliers).items() if float(v) != 1.0}
  if not factors:
    return make(1.0)
  transforms = {'': make(1.0), **{k: optax.set_to_zero() if v == 0 else make(v)
                                   for k, v in factors.items()}}
  return optax.multi_transform(transforms, lambda params: {k: (k if k in factors else '')
                                                           for k in params})


def check_config(config):
  """UserError for a train section that cannot run (optimiser, batch, EMA, best metric, stages)."""
  t = config.train
  if t.optimizer not in ('adam', 'adamw'):
    raise UserError(f"unknown train.optimizer {t.optimizer!r}; valid: 'adam', 'adamw'.")
  if t.batch_size < 1:
    raise UserError('train.batch_size must be at least 1.')
  for k in ('pretrain_lr', 'g_lr', 'd_lr'):
    v = t.get(k)
    if v is not None and not 0 <= float(v) < float('inf'):
      raise UserError(f'train.{k}={v} must be a finite number >= 0.')
  if t.nan_policy not in NAN_POLICIES:
    raise UserError(f'train.nan_policy={t.nan_policy!r}; valid: {", ".join(NAN_POLICIES)}.')
  if t.lr_schedule not in LR_SCHEDULES:
    raise UserError(f'unknown train.lr_schedule {t.lr_schedule!r}; valid: {", ".join(LR_SCHEDULES)}.')
  if t.lr_schedule == 'exponential' and not (
      t.lr_decay_steps >= 1 and 0 < t.lr_decay <= 1):
    raise UserError(f'train.lr_schedule=exponential needs train.lr_decay_steps >= 1 (got '
                    f'{t.lr_decay_steps}) and train.lr_decay in (0, 1] (got {t.lr_decay}).')
  if t.num_steps < 1:
    raise UserError(f'train.num_steps={t.num_steps} must be at least 1.')
  if not 0 <= t.ema_decay < 1:
    raise UserError(f'train.ema_decay={t.ema_decay} must be in [0, 1); 0 turns the EMA off.')
  if config.data.train_on not in TRAIN_ON:
    raise UserError(f'data.train_on={config.data.train_on!r}; valid: {", ".join(TRAIN_ON)}.')
  for k in ('eval_every_steps', 'checkpoint_every_steps', 'log_every_steps'):
    if t[k] < 1:
      raise UserError(f'train.{k}={t[k]} must be at least 1.')
  if any(float(v) < 0 for v in dict(t.lr_multipliers).values()):
    raise UserError('train.lr_multipliers must be >= 0 (0 freezes that submodule).')
  if config.data.train_on == 'clean' and config.model.scale != 1:
    raise UserError(f'data.train_on=clean feeds the target itself to the model, which only works at '
                    f'model.scale=1 (got {config.model.scale}); use train_on=degraded.')
  _check_device_ops(config)


def _check_device_ops(config):
  """UserError for the on-device data ops: the degradation with its config options (data.realesrgan),
  jnp-only ops without data.degrade_on_device, and a data.target_sharpen that is no same-size op."""
  data = config.data
  degrade = degradations.parse(data.degradation, degradations.config_options(data))
  if degradations.device_only(degrade) and not data.degrade_on_device:
    raise UserError(f'data.degradation={data.degradation!r} runs on the device only (jnp, inside the '
                    'train step); set data.degrade_on_device=True.')
  if data.target_sharpen:
    hw = input_pipeline.patch_hw(config)
    got = degradations.output_hw(degradations.parse(data.target_sharpen), hw)
    if got != hw:
      raise UserError(f'data.target_sharpen={data.target_sharpen!r} turns a {hw[0]}x{hw[1]} patch into '
                      f'{got[0]}x{got[1]}; it must keep the size (e.g. usm, Real-ESRGAN\'s USM).')


def check_shapes(config):
  """Builds G and D abstractly (jax.eval_shape: no compute) on the training shapes: a field a module
  rejects when it first runs, or an output that is not the target's size, is a UserError now.
  Memoised on what the answer depends on (the model sections, patch, precision, module classes)."""
  m, d = config.model.to_dict(), config.discriminator.to_dict()
  parts = json.dumps({'model': m, 'discriminator': d, 'patch': input_pipeline.patch_hw(config),
                      'precision': config.train.precision}, sort_keys=True, default=str)
  _check_shapes(parts, models.GENERATORS.get(m['name']), models.DISCRIMINATORS.get(d['name']))


@functools.lru_cache(maxsize=512)
def _check_shapes(parts, *classes):
  del classes  # (in the key: a test may swap a registry entry)
  parts = json.loads(parts)
  config = ml_collections.ConfigDict({'model': parts['model'], 'discriminator': parts['discriminator'],
                                      'train': {'precision': parts['precision']}})
  (ph, pw), s = parts['patch'], config.model.scale
  rates = models.output_key(models.build_generator(config)) != 'image'
  lr = jax.ShapeDtypeStruct((1, ph // s, pw // s, 3), jnp.float32)
  hr = jax.ShapeDtypeStruct((1, ph, pw, 3), jnp.float32)
  rngs = {k: jax.random.key(0) for k in ('params', 'dropout', 'sample')}
  try:
    out, _ = jax.eval_shape(lambda x: models.build_generator(config).init_with_output(rngs, x), lr)
    if config.discriminator.name != 'none':
      jax.eval_shape(lambda x: models.build_discriminator(config).init(rngs, x), hr)
  except (ValueError, TypeError) as e:
    raise UserError(f'the model or discriminator config does not build: {e}') from None
  if rates:  # a rating model (NIMA) makes a histogram of any input size
    return
  got = models.as_outputs(out)['image'].shape[1:3]
  if tuple(got) != (ph, pw):
    raise UserError(f'model {config.model.name} at x{s} makes {got[0]}x{got[1]} of a '
                    f'{ph // s}x{pw // s} input, not the {ph}x{pw} target; check model.scale.')


def make_task(config):
  """Modules, optimisers and loss weights for CONFIG (the one place config turns into objects)."""
  t, l = config.train, config.loss
  pretrain, gan = _weights(l.pretrain), _weights(l.gan)
  with_d = config.discriminator.name != 'none'
  needed = losses.frozen_needed([pretrain, gan] if with_d else [pretrain])
  generator = models.build_generator(config)
  scales = models.train_scales(generator)
  return Task(
      generator=generator, scales=scales,
      output=models.output_key(generator),
      degrades=tuple((s, input_pipeline.degrade_fn(config, s)) for s in scales
                     if config.data.degrade_on_device),
      discriminator=models.build_discriminator(config) if with_d else None,
      frozen=frozen_lib.modules(needed, config),
      g_tx_pretrain=_optimizer(t.pretrain_lr, t.pretrain_milestones, config),
      g_tx_gan=_optimizer(t.g_lr, t.gan_milestones, config),
      d_tx=_optimizer(t.d_lr, t.gan_milestones, config),
      pretrain_weights=pretrain, gan_weights=gan, options=l,
      fixed=tuple(k for k, v in dict(t.lr_multipliers).items() if float(v) == 0),
      ema_decay=float(t.ema_decay), scale=config.model.scale, nan_policy=t.nan_policy,
      degrade=(degradations.parse(config.data.degradation, degradations.config_options(config.data))
               if config.data.degrade_on_device else None),
      sharpen=degradations.parse(config.data.target_sharpen) if config.data.target_sharpen else None,
      train_on=config.data.train_on)


def init_state(task, rng, lr_shape, hr_shape):
  """Fresh parameters and optimiser states (G's optimiser starts in its pre-training form)."""
  g_rng, d_rng, rng = jax.random.split(rng, 3)
  g_vars = task.generator.init({'params': g_rng, 'dropout': g_rng, 'sample': g_rng},
                               jnp.zeros(lr_shape, jnp.float32))
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


def ema_decay_at(decay, step):
  """The EMA decay after STEP updates, warmed up as TensorFlow's moving averages do:
  min(decay, (1 + step) / (10 + step)), so a short run is not scored on its random initialisation."""
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def _ema(task, ema_params, g_params, step):
  if ema_params is None:
    return None
  d = ema_decay_at(task.ema_decay, step)
  return jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema_params, g_params)


def step_keys(state):
  """This step's keys {'dropout', 'sample', 'degrade', 'loss'}: fold_in(state.rng, step), split."""
  key = jax.random.fold_in(state.rng, state.step)
  return dict(zip(KEY_NAMES, jax.random.split(key, len(KEY_NAMES))))


def step_scale(task, step):
  """The scale batch STEP trains: a multi-scale model cycles its scales (scales[step % len(scales)]),
  so each batch is one scale and a resumed run continues the cycle; None for single-scale models."""
  return task.scales[int(step) % len(task.scales)] if task.scales else None


def _scale_kw(scale):
  """apply() keywords for a multi-scale generator's static SCALE (none for single-scale models)."""
  return {} if scale is None else {'scale': scale}


def generate(task, g_params, g_stats, x, train=False, keys=None, scale=None):
  """(outputs dict with 'image', new G BatchNorm statistics); rngs for dropout and sampling in training.
  SCALE: the static scale of a multi-scale generator (None: single-scale, or its default scale)."""
  variables = {'params': g_params, **({'batch_stats': g_stats} if g_stats else {})}
  rngs = {'dropout': keys['dropout'], 'sample': keys['sample']} if (train and keys) else None
  if train and g_stats:
    out, updates = task.generator.apply(variables, x, train=True, rngs=rngs, mutable=['batch_stats'],
                                        **_scale_kw(scale))
    return models.as_outputs(out, task.output), updates['batch_stats']
  return models.as_outputs(task.generator.apply(variables, x, train=train, rngs=rngs,
                                                **_scale_kw(scale)), task.output), g_stats


def ema_outputs(task, state, batch, weights, scale=None):
  """The EMA generator's outputs on BATCH, held constant, when a term of WEIGHTS compares with them
  (losses.EMA_TERMS: LDL); else None, and nothing more runs."""
  if not losses.needs_ema(weights) or state.ema_params is None:
    return None
  out, _ = generate(task, state.ema_params, state.g_stats, batch[task.inputs], scale=scale)
  return jax.lax.stop_gradient(out)


def model_batch(task, batch, key, scale=None):
  """The batch with 'lr' set to what the model sees in training: the pipeline's LR, the target itself
  (data.train_on=clean), or the target degraded here on the device (data.degrade_on_device).
  With data.target_sharpen, 'hr' (the pixel and perceptual losses' target) is the sharpened target
  and 'hr_orig' the original (the discriminator's real images); as in Real-ESRGAN, the on-device
  degradation starts from the sharpened one. A rating model's batch ({'image', 'histogram'}) is
  used as it comes (its kind is not `degraded`)."""
  if not task.kind.degraded:
    return batch
  if task.sharpen is not None:
    sharp = degradations.apply_batch(task.sharpen, batch['hr'], jax.random.fold_in(key, 1))
    batch = {**batch, 'hr': sharp, 'hr_orig': batch['hr']}
  hr = batch['hr']
  if task.train_on == 'clean':
    return {**batch, 'lr': hr}
  degrade = dict(task.degrades).get(scale, task.degrade)  # SCALE's degradation (multi-scale)
  if degrade is None:
    return batch
  return {**batch, 'lr': degradations.apply_batch(degrade, hr, key)}


def _keep_fixed(task, new_stats, old_stats):
  """BatchNorm statistics with those of frozen submodules (lr_multipliers 0) left as they were."""
  if not task.fixed or not new_stats:
    return new_stats
  return {**new_stats, **{k: old_stats[k] for k in task.fixed if k in old_stats}}


def _g_update(task, state, tx, grads, **changes):
  """Applies G's gradients with TX; the EMA follows."""
  updates, g_opt = tx.update(grads, state.g_opt, state.g_params)
  g_params = optax.apply_updates(state.g_params, updates)
  return state.replace(step=state.step + 1, g_params=g_params, g_opt=g_opt,
                       ema_params=_ema(task, state.ema_params, g_params, state.step + 1), **changes)


def _guard(task, old, new, metrics, finite):
  """The step's outcome under train.nan_policy. FINITE: whether its losses and gradients are. 'stop':
  NEW as computed, the metrics saying at which step values first became non-finite (the loop stops
  there); 'skip': OLD with only its step advanced when not finite (the batch is dropped), the
  non-finite metrics zeroed and `skipped` counting the steps dropped."""
  metrics = {**metrics, FIRST_NONFINITE: jnp.where(finite, ALL_FINITE, old.step.astype(jnp.float32))}
  if task.nan_policy != 'skip':
    return new, metrics
  keep = lambda a, b: a if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key) else jnp.where(finite, a, b)
  kept = jax.tree.map(keep, new, old.replace(step=new.step))
  metrics = {k: jnp.where(finite, v, 0.0) for k, v in metrics.items()}
  return kept, {**metrics, FIRST_NONFINITE: jnp.float32(ALL_FINITE),
                'skipped': 1.0 - finite.astype(jnp.float32)}


def _all_finite(*trees):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for t in trees for x in jax.tree.leaves(t)]))


def pretrain_step(task, state, batch, frozen=None, scale=None):
  """One supervised step of G on the loss.pretrain terms (L1 for ESRGAN, MSE + KL for a VAE, ...).
  SCALE (static): the scale this batch trains for a multi-scale generator (`jit_steps`)."""
  keys = step_keys(state)
  batch = model_batch(task, batch, keys['degrade'], scale)
  nets = frozen_lib.bind(task.frozen, frozen or {})
  ema = ema_outputs(task, state, batch, task.pretrain_weights, scale)

  def loss_fn(g_params):
    out, g_stats = generate(task, g_params, state.g_stats, batch[task.inputs], True, keys, scale)
    loss, terms = losses.total(task.pretrain_weights,
                               losses.LossInputs(out, batch, task.options, nets, keys['loss'],
                                                 ema_outputs=ema))
    return loss, (out, g_stats, terms)

  (g_loss, (out, g_stats, terms)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g_params)
  new = _g_update(task, state, task.g_tx_pretrain, grads,
                  g_stats=_keep_fixed(task, g_stats, state.g_stats))
  metrics = {'g_loss': g_loss, **{f'loss_{k}': v for k, v in terms.items()},
             **task.kind.step_metrics(out[task.output], batch), 'g_grad_norm': optax.tree.norm(grads),
             'g_param_norm': optax.tree.norm(new.g_params)}
  return _guard(task, state, new, metrics, _all_finite(g_loss, terms, grads))


def gan_step(task, state, batch, frozen=None, scale=None):
  """One GAN step: G's and D's updates in one program, sharing D's forward passes.

  As in BasicSR, G is updated against the current D, and D against the same (detached) SR batch.
  D runs forward once on HR and once on SR; the pullback of D(SR) gives G its gradient through D,
  and both pullbacks give D the gradient of its own loss, so no forward pass is repeated.
  """
  keys = step_keys(state)
  batch = model_batch(task, batch, keys['degrade'], scale)
  nets = frozen_lib.bind(task.frozen, frozen or {})
  ema = ema_outputs(task, state, batch, task.gan_weights, scale)
  hr = batch['hr']
  outputs, g_pullback, g_stats = jax.vjp(
      lambda p: generate(task, p, state.g_stats, batch['lr'], True, keys, scale), state.g_params,
      has_aux=True)

  def d_on_real(d_params):  # D's real images: the unsharpened target when the loss's is sharpened
    return task.discriminator.apply({'params': d_params, 'batch_stats': state.d_stats},
                                    batch.get('hr_orig', hr), train=True, mutable=['batch_stats'])

  real, real_pullback, upd = jax.vjp(d_on_real, state.d_params, has_aux=True)

  def d_on_fake(d_params, fake):
    return task.discriminator.apply({'params': d_params, **upd}, fake, train=True,
                                    mutable=['batch_stats'])

  fake, fake_pullback, upd = jax.vjp(d_on_fake, state.d_params, outputs['image'], has_aux=True)

  def g_objective(outputs, fake):
    return losses.total(task.gan_weights, losses.LossInputs(outputs, batch, task.options, nets,
                                                            keys['loss'], real, fake, ema))

  (g_loss, terms), (douts, dfake) = jax.value_and_grad(g_objective, (0, 1), has_aux=True)(outputs, fake)
  _, dsr_through_d = fake_pullback(dfake)  # (XLA drops the unused weight gradients)
  (g_grads,) = g_pullback({**douts, 'image': douts['image'] + dsr_through_d})
  d_loss, (dreal, dfake_d) = jax.value_and_grad(
      lambda r, f: losses.discriminator_adversarial(r, f, task.options.gan_type), (0, 1))(real, fake)
  d_grads = jax.tree.map(jnp.add, real_pullback(dreal)[0], fake_pullback(dfake_d)[0])
  d_updates, d_opt = task.d_tx.update(d_grads, state.d_opt, state.d_params)
  new = _g_update(task, state, task.g_tx_gan, g_grads, g_stats=_keep_fixed(task, g_stats, state.g_stats),
                  d_opt=d_opt, d_params=optax.apply_updates(state.d_params, d_updates),
                  d_stats=_keep_fixed(task, upd.get('batch_stats', {}), state.d_stats))
  metrics = {'g_loss': g_loss, 'd_loss': d_loss, **{f'loss_{k}': v for k, v in terms.items()},
             **task.kind.step_metrics(outputs[task.output], batch), 'd_real': jnp.mean(jax.nn.sigmoid(real)),
             'd_fake': jnp.mean(jax.nn.sigmoid(fake)), 'g_grad_norm': optax.tree.norm(g_grads),
             'd_grad_norm': optax.tree.norm(d_grads), 'g_param_norm': optax.tree.norm(new.g_params)}
  return _guard(task, state, new, metrics, _all_finite(g_loss, d_loss, terms, g_grads, d_grads))


def eval_params(state):
  """The generator weights to evaluate: the EMA copy when there is one."""
  return state.ema_params if state.ema_params is not None else state.g_params


def eval_variables(state):
  """The generator's variables for inference: eval_params and its BatchNorm running statistics."""
  return {'params': eval_params(state), **({'batch_stats': state.g_stats} if state.g_stats else {})}


def predict(task, g_vars, lr, scale=None):
  """The image G makes of LR in [0, 1] with `eval_variables`: BatchNorm on running averages, no
  dropout, a VAE's mean. SCALE (static): a multi-scale generator's scale. A rating model's output
  is its histogram."""
  out = models.as_outputs(task.generator.apply(g_vars, lr, train=False, **_scale_kw(scale)),
                          task.output)
  return task.kind.finish(out[task.output])


def jit_steps(task, mesh):
  """The jitted steps with explicit shardings: state replicated and donated, batch split on 'data'.

  For a multi-scale generator (task.scales) each entry is {scale: jitted function}, the scale bound
  statically: one compiled program per scale, each with the same signature as a single-scale one
  (`(state, batch, frozen) -> (state, metrics)` for the steps); the loop picks `step_scale`'s."""
  rep, split = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  step_kw = dict(in_shardings=(rep, split, rep), out_shardings=(rep, rep), donate_argnums=0)

  def jit(fn, **kw):
    if not task.scales:
      return jax.jit(functools.partial(fn, task), **kw)
    return {s: jax.jit(functools.partial(fn, task, scale=s), **kw) for s in task.scales}

  return {
      'pretrain': jit(pretrain_step, **step_kw),
      'gan': jit(gan_step, **step_kw),
      'predict': jit(predict, in_shardings=(rep, split), out_shardings=split),
      'losses': jit(eval_losses, in_shardings=(rep, rep, split, split), out_shardings=rep),
  }


@jax.jit
def accumulate(total, metrics):
  """Adds a step's metrics to the running sums on device (fetched only when logged); the first
  non-finite step is kept as a minimum."""
  return {k: (jnp.minimum if k == FIRST_NONFINITE else jnp.add)(total[k], metrics[k]) for k in total}


def eval_losses(task, g_vars, frozen, lr, hr, scale=None):
  """Held-out loss terms of a chunk: every term of either stage as `loss_NAME` but the adversarial ones
  and those against the EMA generator (LDL: the evaluated model is that EMA), and `loss`, the
  supervised stage's weighted total of those (train.best_metric=loss)."""
  out = models.as_outputs(task.generator.apply(g_vars, lr, train=False, **_scale_kw(scale)))
  inputs = losses.LossInputs(out, {'lr': lr, 'hr': hr}, task.options,
                             frozen_lib.bind(task.frozen, frozen or {}))
  names = dict.fromkeys(k for k, _ in task.pretrain_weights + task.gan_weights
                        if k not in (*losses.ADVERSARIAL, *losses.EMA_TERMS) and set(losses.NEEDS.get(k, ())) <= set(task.frozen))
  terms = {k: losses.LOSSES[k](inputs) for k in names}
  total = sum(w * terms[k] for k, w in task.pretrain_weights if k in terms)
  return {'loss': jnp.asarray(total, jnp.float32), **{f'loss_{k}': v for k, v in terms.items()}}

