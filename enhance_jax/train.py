"""Train an experiment: `python -m enhance_jax.train --exp esrgan --workdir runs/esrgan [--set k=v]`.

`train_and_evaluate(config, workdir)` runs the experiment's stages (supervised, then GAN when it has
a discriminator) to train.num_steps, validating every train.eval_every_steps, keeping the latest and
best (train.best_metric) checkpoints, stopping early by patience, and resuming from the workdir's
latest checkpoint when there is one.
"""

import argparse
import contextlib
import os
import pathlib
import sys
import time

from absl import logging as absl_logging
import jax
import numpy as np

from enhance_jax import parallel
from enhance_jax import stops
from enhance_jax.data import datasets
from enhance_jax.data import input_pipeline
from enhance_jax.errors import UserError
from enhance_jax.eval import evaluators
from enhance_jax.eval import quality
from enhance_jax.infer import restoring
from enhance_jax.io import checkpoints as ckpt_lib
from enhance_jax.io import reporting
from enhance_jax.io import weights
from enhance_jax.training import config as config_lib
from enhance_jax.training import frozen as frozen_lib
from enhance_jax.training import schema
from enhance_jax.training import train_steps


def _fresh_meta(config):
  return {'format': ckpt_lib.META_FORMAT, 'signature': ckpt_lib.model_signature(config),
          'config': config.to_dict(), 'epoch': 0, 'stage': first_stage(config), 'gan_start': None,
          'best': None, 'best_metric': quality.best_metric(config), 'bad_evals': 0,
          'pretrain_stopped': False, 'finished': False}


def has_gan_stage(config):
  return config.discriminator.name != 'none'


def first_stage(config):
  return 'pretrain' if config.train.pretrain_steps > 0 or not has_gan_stage(config) else 'gan'


def _stage_end(config, meta):
  """The step at which the current stage ends: the run's end (train.num_steps) at the latest."""
  t = config.train
  if meta['stage'] == 'pretrain':
    return min(t.pretrain_steps, t.num_steps) if has_gan_stage(config) else t.num_steps
  return t.num_steps


def _every(step, n):
  return n > 0 and step % n == 0


class _Loop:
  """Host-side bookkeeping of one run: where it is, what it logs, when it stops."""

  def __init__(self, config, workdir):
    self.config, self.workdir = config, pathlib.Path(workdir)
    t = config.train
    self.mesh = parallel.make_mesh()
    parallel.check_batch(t.batch_size, self.mesh)
    self.ckpts = ckpt_lib.Checkpoints(workdir, keep=t.keep_checkpoints)
    self.ckpts.check_compatible(config)
    train_src, val_src = datasets.train_val_sources(config.data)
    if not config.data.hr_resize:  # else every image is resized to hr_resize first
      datasets.check_sizes(train_src, min(input_pipeline.patch_hw(config)), 'data.patch_size')
    self.val = input_pipeline.validation_batch(val_src, config)
    self.steps_per_epoch = t.steps_per_epoch or max(1, len(train_src) // t.batch_size)
    self.task = train_steps.make_task(config)
    self.frozen = jax.device_put(frozen_lib.load(tuple(self.task.frozen), config),
                                 parallel.replicated(self.mesh))
    self.jitted = train_steps.jit_steps(self.task, self.mesh)
    self.data_sharding = parallel.batch_sharding(self.mesh)
    n = self.mesh.devices.size
    chunk = -(-min(len(self.val[self.task.inputs]), t.batch_size) // n) * n
    place = lambda x: parallel.put_global(x, self.data_sharding)  # every process holds the chunk
    self.evaluator = self.task.kind.evaluator(self.task, config, self.jitted, self.val, self.frozen,
                                              chunk, place)
    ds = input_pipeline.train_dataset(train_src, config, process_index=jax.process_index(),
                                      process_count=jax.process_count())
    self.iterator = input_pipeline.train_iterator(ds, config.data.num_workers)
    self.report = reporting.Reporter(workdir)
    self.state, self.meta = self._init_or_restore()
    self.start_step = int(jax.device_get(self.state.step))  # the loop counts steps on the host

  def _init_or_restore(self):
    c = self.config
    ph, pw = input_pipeline.patch_hw(c)
    shapes = ((c.train.batch_size, ph // c.model.scale, pw // c.model.scale, 3),
              (c.train.batch_size, ph, pw, 3))
    init = jax.jit(lambda rng: train_steps.init_state(self.task, rng, *shapes),
                   out_shardings=parallel.replicated(self.mesh))
    try:  # the modules check their fields when first run; a bad value is the config's fault
      abstract = jax.eval_shape(init, jax.random.key(c.seed))  # both stages' G optimisers share a form
    except ValueError as e:
      raise UserError(f'the model or discriminator config does not build: {e}') from None
    if not self.ckpts.has_checkpoint() or self.ckpts.latest.latest_step() is None:
      start = restoring.initial_weights(c, abstract.g_params)  # a misfit fails before any compile
      state = weights.with_backbone_weights(init(jax.random.key(c.seed)), c)
      return restoring.with_initial_weights(state, c, start), _fresh_meta(c)
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=parallel.replicated(self.mesh)),
        abstract)
    state, data_state, meta = self.ckpts.restore(abstract, 'latest')
    if data_state:
      self.iterator.set_state(data_state)
    print(f'resuming from step {int(state.step)} (stage {meta["stage"]}) in {self.workdir}', flush=True)
    return state, meta

  def save(self, data_state, best=False):
    self.ckpts.save(self.state, data_state, self.meta, best=best)

  def evaluate(self, step):
    """Validation at STEP: metrics, the best checkpoint's bookkeeping, samples, curves, patience."""
    c, meta = self.config, self.meta
    g_vars = train_steps.eval_variables(self.state)
    k = min(4, len(self.val[self.task.inputs]))
    val = self.evaluator.run(g_vars, samples=k)
    metric = quality.best_metric(c)
    improved = evaluators.better(metric, val[metric], meta['best'])
    if improved:
      meta['best'], meta['bad_evals'] = val[metric], 0
    else:
      meta['bad_evals'] += 1
    self.report.write(step, 'val', val, epoch=meta['epoch'], stage=meta['stage'])
    self._samples(step, k)
    self.report.plot_curves()
    patience = c.train.early_stopping_patience
    stop = patience > 0 and meta['bad_evals'] >= patience
    if stop and meta['stage'] == 'pretrain' and has_gan_stage(c):
      meta['pretrain_stopped'] = True
    elif stop:
      meta['finished'] = True
    if stop:
      print(f'early stopping the {meta["stage"]} stage at step {step}: val {metric} has not improved '
            f'for {patience} evaluations (best {meta["best"]:.4g})', flush=True)
    return val, improved

  def _samples(self, step, k):
    """samples.png (and samples/step_N.png): what the model's kind shows of the held-out data (LR |
    output | HR of K images; a rating model's predicted against true mean scores)."""
    image = self.task.kind.samples(self.evaluator, self.val, k, step)
    if parallel.is_main_process():
      reporting.save_png(self.workdir / 'samples' / f'step_{step:07d}.png', image)
      reporting.save_png(self.workdir / 'samples.png', image)

  def maybe_start_gan(self, step):
    meta = self.meta
    if (meta['stage'] == 'pretrain' and has_gan_stage(self.config)
        and (step >= _stage_end(self.config, meta) or meta['pretrain_stopped'])
        and step < self.config.train.num_steps):
      self.state = train_steps.start_gan_stage(self.task, self.state)
      meta.update(stage='gan', gan_start=step, best=None, bad_evals=0)
      print(f'step {step}: supervised stage done; GAN stage until step '
            f'{_stage_end(self.config, meta)}', flush=True)


def _check_finite(sums, step, n):
  """FloatingPointError naming the metrics that became NaN/Inf in the N steps up to STEP and the
  first step that made them (SUMS: the window's sums, with train_steps.FIRST_NONFINITE when known)."""
  first = sums.get(train_steps.FIRST_NONFINITE, train_steps.ALL_FINITE)
  bad = [k for k, v in sums.items() if k != train_steps.FIRST_NONFINITE and not np.isfinite(v)]
  if bad or first < train_steps.ALL_FINITE:
    at = (f'at step {int(first) + 1}' if first < train_steps.ALL_FINITE
          else f'between steps {step - n + 1} and {step}')
    raise FloatingPointError(f'{", ".join(bad) or "a loss or gradient"} became NaN/Inf {at}; the run '
                             'stopped and kept its last checkpoint; lower the learning rates '
                             '(train.g_lr, train.pretrain_lr), or set train.nan_policy=skip to drop '
                             'such steps.')


class _Meter:
  """Step metrics summed on device; fetched once per log window."""

  def __init__(self, batch_size):
    self.batch_size = batch_size
    self.sums, self.n, self.start = None, 0, time.perf_counter()
    self.untimed = 0  # steps of this window whose time is not in the clock (the compiling one)

  def add(self, metrics):
    self.sums = metrics if self.sums is None else train_steps.accumulate(self.sums, metrics)
    self.n += 1

  def _rates(self, steps, seconds):
    if steps <= 0 or seconds <= 0:
      return {}
    return {'step_time': seconds / steps, 'images_per_sec': steps * self.batch_size / seconds}

  def exclude_compilation(self, metrics):
    """Called after the process's first step: waits for it, so the clock starts after compiling."""
    jax.block_until_ready(metrics)
    self.untimed = self.n
    self.restart_clock()

  def check(self, step):
    """Raises FloatingPointError when the window so far holds a NaN/Inf (before a checkpoint is
    written: a poisoned state is never saved)."""
    if self.sums is not None:
      _check_finite({k: float(v) for k, v in jax.device_get(self.sums).items()}, step, self.n)

  def window(self, step):
    """Means over the steps since the last call (one host transfer); NaN/Inf raises. Steps dropped
    by train.nan_policy=skip are counted, not averaged, as `skipped_steps`."""
    host = {k: float(v) for k, v in jax.device_get(self.sums).items()}
    _check_finite(host, step, self.n)
    host.pop(train_steps.FIRST_NONFINITE, None)
    skipped = host.pop('skipped', None)
    elapsed = time.perf_counter() - self.start
    means = {**{k: v / self.n for k, v in host.items()},
             **({'skipped_steps': skipped} if skipped is not None else {}),
             **self._rates(self.n - self.untimed, elapsed)}
    self.sums, self.n, self.untimed = None, 0, 0
    self.restart_clock()
    return means

  def restart_clock(self):
    self.start = time.perf_counter()


def _progress_bar(config, step):
  if not config.train.progress or jax.process_index() != 0:
    return None
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=config.train.num_steps, initial=step, unit='step', dynamic_ncols=True,
              file=sys.stdout)


def train_and_evaluate(config, workdir):
  """Trains CONFIG in WORKDIR (resuming there if it holds a checkpoint); returns the final state.

  The run goes through the experiment's stages (supervised, then GAN when there is a discriminator)
  until train.num_steps; validation and samples every train.eval_every_steps, checkpoints every
  train.checkpoint_every_steps and at every evaluation that improves train.best_metric.
  """
  config_lib.validate(config)  # also configs made in Python, not through get_config
  parallel.initialize()
  # One run per workdir (and a writable one), refused before any step; process 0 holds the lock,
  # as hosts of one run share the folder.
  lock = ckpt_lib.lock_workdir(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
  watch = parallel.PeerWatch()  # a dead peer ends this process in one sentence, not a hang
  with lock:
    state = _train(config, workdir)
  watch.stop(done=True)
  return state


def _train(config, workdir):
  """train_and_evaluate's run, in a workdir it holds."""
  loop = _Loop(config, workdir)
  t, meta, step = config.train, loop.meta, loop.start_step
  if meta['finished']:
    print(f'{workdir}: training already stopped early at step {step}; nothing to do.', flush=True)
    return loop.state
  if t.best_metric == 'auto' and jax.process_index() == 0:
    chosen = quality.best_metric(config)
    print(f'best checkpoint by validation {chosen} (train.best_metric=auto: '
          + ('loss.lpips_weights is given)' if chosen == 'lpips' else
             'PSNR, as LPIPS needs loss.lpips_weights, a torchvision backbone file)'), flush=True)
  stall = config.data.stall_timeout_s or None
  data_state = loop.iterator.get_state()
  batches = input_pipeline.prefetch_to_device(loop.iterator, loop.data_sharding, config.data.prefetch,
                                              stall_timeout=stall)
  meter, bar = _Meter(t.batch_size), _progress_bar(config, step)
  loop.position = (step, data_state, data_state)  # where a stop before the first step finds the run
  try:
    with stops.deferred():  # a signal stops the loop where the state is whole (`_run_steps`)
      step, data_state = _run_steps(config, loop, batches, meter, bar, step, data_state)
  except (KeyboardInterrupt, input_pipeline.DataStallError) as e:
    with stops.held('the checkpoint of the stop is saved', stop_after=False):
      _save_on_stop(loop, e)
    raise
  finally:
    batches.close()  # stops the reader thread
    if bar is not None:
      bar.close()
    loop.ckpts.wait()
    loop.report.close()
  if step not in loop.ckpts.latest.all_steps():
    loop.save(data_state)
    loop.ckpts.wait()
  loop.ckpts.close()
  return loop.state


def _save_on_stop(loop, error):
  """The checkpoint of the step the run stopped at (a signal, Ctrl-C, a data stall), unless the
  stop landed as a step returned, taking its donated input with it: then the last one holds.
  `loop.position` is (step, data state) as the loop last had them. The sentence names the step whose
  checkpoint was found whole on disk, or says that none is."""
  step, data_state, next_data_state = loop.position
  lost = loop.state.step.is_deleted()
  if not lost and int(jax.device_get(loop.state.step)) != step:  # between step and bookkeeping
    data_state, step = next_data_state, step + 1
  loop.ckpts.wait()
  if not lost and step not in loop.ckpts.latest.all_steps():
    loop.save(data_state)
    loop.ckpts.wait()
  kept = ckpt_lib.verified_latest(loop.workdir)
  held = (f'the checkpoint of step {kept} holds the run, rerun the same command to resume'
          if kept is not None else 'no checkpoint was written yet, so a rerun starts from step 0')
  if isinstance(error, stops.Stopped):
    print(f'\n{stops.stop_sentence(error, held)}', flush=True)
    error.reported = True
  else:
    why = 'interrupted' if isinstance(error, KeyboardInterrupt) else 'stopped: the data stalled'
    print(f'\n{why}; {held}.', flush=True)


def _run_steps(config, loop, batches, meter, bar, step, data_state):
  """The step loop: steps, logs, validation and checkpoints until the run ends; (step, data state).
  `loop.position` follows (step, data state, the next batch's data state) for `_save_on_stop`."""
  t, meta = config.train, loop.meta
  loop.position = (step, data_state, data_state)
  while not meta['finished'] and step < t.num_steps:
    stops.check()  # a signal kept while the last step ran stops here, where the state is whole
    loop.maybe_start_gan(step)
    batch, next_data_state = next(batches)
    loop.position = (step, data_state, next_data_state)
    with jax.transfer_guard('disallow'):  # the step loop moves nothing between host and device
      step_fn = loop.jitted[meta['stage']]
      if isinstance(step_fn, dict):  # multi-scale: one compiled step per scale, cycling by step
        step_fn = step_fn[train_steps.step_scale(loop.task, step)]
      loop.state, metrics = step_fn(loop.state, batch, loop.frozen)
      meter.add(metrics)
    if step < loop.start_step + max(1, len(loop.task.scales)):  # the compiling step(s)
      meter.exclude_compilation(metrics)
    data_state, step = next_data_state, step + 1
    loop.position = (step, data_state, data_state)
    if bar is not None:
      bar.update(1)
    stage_done = step >= _stage_end(config, meta)
    meta['epoch'] = step // loop.steps_per_epoch
    evaluate = _every(step, t.eval_every_steps) or stage_done
    if _every(step, t.log_every_steps) or evaluate:
      _log(loop, meter, bar, step)
    improved = False
    if evaluate:
      val, improved = loop.evaluate(step)
      (bar.write if bar is not None else print)(
          f'step {step} [{meta["stage"]}] val '
          + ' '.join(f'{k} {val[k]:.4f}' for k in loop.task.kind.summary)
          + (f' ({quality.best_metric(config)}: best)' if improved else ''))
    if improved or _every(step, t.checkpoint_every_steps) or stage_done:
      meter.check(step)  # a state made by a NaN step is never saved
      with stops.held(f'the checkpoint of step {step} is saved'):
        loop.save(data_state, best=improved)
    if evaluate:
      meter.restart_clock()  # validation and checkpointing are not step time
  return step, data_state


def _log(loop, meter, bar, step):
  """One log window: means to metrics.jsonl/TensorBoard, the bar's numbers, skipped steps said."""
  meta = loop.meta
  means = meter.window(step)
  if 'step_time' in means:
    means['epoch_seconds'] = means['step_time'] * loop.steps_per_epoch
  loop.report.write(step, 'train', means, epoch=meta['epoch'], stage=meta['stage'])
  if means.get('skipped_steps'):
    (bar.write if bar is not None else print)(
        f'step {step}: {int(means["skipped_steps"])} step(s) of this window skipped for a NaN/Inf '
        '(train.nan_policy=skip)')
  if bar is not None:
    bar.set_postfix({k: f'{means[k]:.4g}' for k in ('g_loss', 'psnr', 'd_loss', 'score_mae')
                     if k in means})


def main(argv=None):
  stops.begin()
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--exp', default='esrgan', help='experiment name (experiments/NAME.py)')
  parser.add_argument('--workdir', default=None, help='run directory (default runs/EXP)')
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                      help='override a config field, e.g. --set train.batch_size=32')
  parser.add_argument('--list', action='store_true', help='print the experiments and exit')
  parser.add_argument('--help-config', nargs='?', const='', default=None, metavar='SECTION',
                      help='print the config schema (every key, its default and meaning; SECTION: '
                           'e.g. train or data.affine) and exit')
  args = parser.parse_args(argv)
  workdir = args.workdir or f'runs/{args.exp}'
  absl_logging.set_verbosity(absl_logging.ERROR)  # orbax's notes are not for users
  if args.list:
    print('\n'.join(config_lib.describe_experiments()))
    return 0
  if args.help_config is not None:
    lines = schema.describe(args.help_config)
    if not lines:
      print(f'error: --help-config {args.help_config}: no such section or key; the sections are '
            f'{", ".join(schema.SCHEMA)}.', file=sys.stderr)
      return 2
    try:
      print('\n'.join(lines), flush=True)
    except BrokenPipeError:  # `--help-config | head`: the reader has what it wanted
      sys.stdout = open(os.devnull, 'w', encoding='utf-8')  # pylint: disable=consider-using-with
    return 0
  try:
    from absl import flags  # grain's multiprocessing reads absl flags  # pylint: disable=g-import-not-at-top
    flags.FLAGS(sys.argv[:1], known_only=True)
    parallel.initialize()  # before any JAX computation (validating the config runs some)
    config = config_lib.get_config(args.exp, args.set, check=False)  # train_and_evaluate validates
    train_and_evaluate(config, workdir)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except FloatingPointError as e:
    print(f'error: {e}', file=sys.stderr)
    return 3
  except input_pipeline.DataStallError as e:
    print(f'error: {e}', file=sys.stderr)
    return 4
  except stops.Stopped as stop:
    if not getattr(stop, 'reported', False):  # stopped before the step loop
      kept = ckpt_lib.verified_latest(workdir)
      print(stops.stop_sentence(stop, 'before any step of this run; ' + (
          f'the checkpoint of step {kept} holds the run' if kept is not None
          else 'nothing was trained yet')), flush=True)
    return stop.exit_code  # 130 / 143, as a shell reports a process the signal ended
  except KeyboardInterrupt:
    return 130
  except jax.errors.JaxRuntimeError as e:
    parallel.peer_failed(e)  # a dead peer of a multi-host run: one sentence, exit 5
    raise
  return 0


if __name__ == '__main__':
  stops.finish(main())
