"""Train an experiment: `python -m enhance_jax.train --exp esrgan --workdir runs/esrgan [--set k=v]`.

`train_and_evaluate(config, workdir)` runs the L1 pre-training stage then the GAN stage, validating
each epoch, keeping the latest and best checkpoints, stopping early by patience, and resuming from
the workdir's latest checkpoint when there is one.
"""

import argparse
import pathlib
import sys
import time

from absl import logging as absl_logging
import jax
import numpy as np

from enhance_jax import checkpoints as ckpt_lib
from enhance_jax import datasets
from enhance_jax import input_pipeline
from enhance_jax import parallel
from enhance_jax import reporting
from enhance_jax import trainer
from enhance_jax import weights
from enhance_jax.errors import UserError


def _pad_to(x, n):
  return np.concatenate([x, np.repeat(x[-1:], n - len(x), 0)]) if len(x) < n else x


def validate(steps, g_vars, val, chunk, sharding):
  """Mean SR-protocol metrics over the validation images, in chunks that split over the devices."""
  n = len(val['hr'])
  per_image = []
  for i in range(0, n, chunk):
    part = {k: _pad_to(v[i:i + chunk], chunk) for k, v in val.items()}
    out = jax.device_get(steps['eval'](g_vars, input_pipeline.to_global(part, sharding)))
    per_image.append({k: v[:min(chunk, n - i)] for k, v in out.items()})
  return {k: float(np.mean(np.concatenate([p[k] for p in per_image]))) for k in per_image[0]}


def _fresh_meta(config):
  return {'signature': ckpt_lib.model_signature(config), 'config': config.to_dict(), 'epoch': 0,
          'stage': 'pretrain' if config.train.pretrain_steps > 0 else 'gan', 'gan_start': None,
          'best_psnr': None, 'bad_epochs': 0, 'pretrain_stopped': False, 'finished': False}


def _stage_end(config, meta):
  if meta['stage'] == 'pretrain':
    return config.train.pretrain_steps
  start = meta['gan_start'] if meta['gan_start'] is not None else config.train.pretrain_steps
  return start + config.train.num_steps - config.train.pretrain_steps


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
      datasets.check_sizes(train_src, config.data.patch_size, 'data.patch_size')
    self.val = input_pipeline.validation_batch(val_src, config)
    self.steps_per_epoch = t.steps_per_epoch or max(1, len(train_src) // t.batch_size)
    self.task = trainer.make_task(config)
    self.vgg_params = (weights.load_vgg19(config.loss.vgg_weights or None, (config.loss.content_layer,))
                       if trainer.uses_vgg(self.task) else None)
    self.vgg_params = jax.device_put(self.vgg_params, parallel.replicated(self.mesh))
    self.jitted = trainer.jit_steps(self.task, self.mesh)
    self.data_sharding = parallel.batch_sharding(self.mesh)
    n = self.mesh.devices.size
    self.val_chunk = -(-min(len(self.val['hr']), t.batch_size) // n) * n
    ds = input_pipeline.train_dataset(train_src, config, process_index=jax.process_index(),
                                      process_count=jax.process_count())
    self.iterator = input_pipeline.train_iterator(ds, config.data.num_workers)
    self.report = reporting.Reporter(workdir)
    self.state, self.meta = self._init_or_restore()
    self.start_step = int(jax.device_get(self.state.step))  # the loop counts steps on the host

  def _init_or_restore(self):
    c = self.config
    lr_side = c.data.patch_size // c.model.scale
    shapes = ((c.train.batch_size, lr_side, lr_side, 3),
              (c.train.batch_size, c.data.patch_size, c.data.patch_size, 3))
    init = jax.jit(lambda rng: trainer.init_state(self.task, rng, *shapes),
                   out_shardings=parallel.replicated(self.mesh))
    try:  # the modules check their fields when first run; a bad value is the config's fault
      abstract = jax.eval_shape(init, jax.random.key(c.seed))  # both stages' G optimisers share a form
    except ValueError as e:
      raise UserError(f'the model or discriminator config does not build: {e}') from None
    if not self.ckpts.has_checkpoint() or self.ckpts.latest.latest_step() is None:
      return init(jax.random.key(c.seed)), _fresh_meta(c)
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=parallel.replicated(self.mesh)),
        abstract)
    state, data_state, meta = self.ckpts.restore(abstract, 'latest')
    if data_state:
      self.iterator.set_state(data_state)
    print(f'resuming from step {int(state.step)} (epoch {meta["epoch"]}, stage {meta["stage"]}) '
          f'in {self.workdir}', flush=True)
    return state, meta

  def save(self, data_state, best=False):
    self.ckpts.save(self.state, data_state, self.meta, best=best)

  def end_epoch(self, step, epoch_means):
    """Validation, samples, curves, checkpoints and early stopping at the end of an epoch."""
    c, meta = self.config, self.meta
    meta['epoch'] += 1
    g_vars = trainer.eval_variables(self.state)
    val = validate(self.jitted, g_vars, self.val, self.val_chunk, self.data_sharding)
    improved = meta['best_psnr'] is None or val['psnr'] > meta['best_psnr']
    if improved:
      meta['best_psnr'], meta['bad_epochs'] = val['psnr'], 0
    else:
      meta['bad_epochs'] += 1
    tag = {'epoch': meta['epoch'], 'stage': meta['stage']}
    self.report.write(step, 'epoch', epoch_means, **tag)
    self.report.write(step, 'val', val, **tag)
    if meta['epoch'] % c.train.sample_every_epochs == 0:
      k = min(4, len(self.val['lr']))
      lr = input_pipeline.to_global(_pad_to(self.val['lr'][:k], self.val_chunk), self.data_sharding)
      sr = jax.device_get(self.jitted['predict'](g_vars, lr))[:k]
      reporting.save_png(self.workdir / 'samples' / f'step_{step:07d}.png',
                         reporting.sample_grid(self.val['lr'][:k], sr, self.val['hr'][:k]))
      reporting.save_png(self.workdir / 'samples.png',
                         reporting.sample_grid(self.val['lr'][:k], sr, self.val['hr'][:k]))
    self.report.plot_curves()
    patience = c.train.early_stopping_patience
    stop = patience > 0 and meta['bad_epochs'] >= patience
    if stop and meta['stage'] == 'pretrain':
      meta['pretrain_stopped'] = True
    elif stop:
      meta['finished'] = True
    if stop:
      print(f'early stopping the {meta["stage"]} stage at step {step}: val PSNR has not improved '
            f'for {patience} epochs (best {meta["best_psnr"]:.3f} dB)', flush=True)
    return val, improved

  def maybe_start_gan(self, step):
    meta = self.meta
    if meta['stage'] == 'pretrain' and (step >= self.config.train.pretrain_steps
                                        or meta['pretrain_stopped']):
      self.state = trainer.start_gan_stage(self.task, self.state)
      meta.update(stage='gan', gan_start=step, best_psnr=None, bad_epochs=0)
      print(f'step {step}: L1 pre-training done; GAN stage until step '
            f'{_stage_end(self.config, meta)}', flush=True)


def _check_finite(sums, step, n):
  bad = [k for k, v in sums.items() if not np.isfinite(v)]
  if bad:
    raise FloatingPointError(f'{", ".join(bad)} became NaN/Inf between steps {step - n + 1} and '
                             f'{step}; lower the learning rates (train.g_lr, train.pretrain_lr) or '
                             'resume from the last checkpoint.')


class _Meter:
  """Step metrics summed on device; fetched once per log window and folded into epoch means."""

  def __init__(self, batch_size):
    self.batch_size = batch_size
    self.sums, self.n, self.start = None, 0, time.perf_counter()
    self.epoch_sums, self.epoch_n, self.epoch_time = {}, 0, 0.0

  def add(self, metrics):
    self.sums = metrics if self.sums is None else trainer.accumulate(self.sums, metrics)
    self.n += 1

  def _rates(self, steps, seconds):
    return {'step_time': seconds / steps, 'images_per_sec': steps * self.batch_size / seconds}

  def window(self, step):
    """Means over the steps since the last call (one host transfer); NaN/Inf raises."""
    host = {k: float(v) for k, v in jax.device_get(self.sums).items()}
    _check_finite(host, step, self.n)
    elapsed = time.perf_counter() - self.start
    for k, v in host.items():
      self.epoch_sums[k] = self.epoch_sums.get(k, 0.0) + v
    self.epoch_n, self.epoch_time = self.epoch_n + self.n, self.epoch_time + elapsed
    means = {**{k: v / self.n for k, v in host.items()}, **self._rates(self.n, elapsed)}
    self.sums, self.n = None, 0
    self.restart_clock()
    return means

  def epoch(self):
    means = {**{k: v / self.epoch_n for k, v in self.epoch_sums.items()},
             **self._rates(self.epoch_n, self.epoch_time)}
    self.epoch_sums, self.epoch_n, self.epoch_time = {}, 0, 0.0
    return means

  def restart_clock(self):
    self.start = time.perf_counter()


def _progress_bar(config, meta, step):
  if not config.train.progress or jax.process_index() != 0:
    return None
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=_stage_end(config, {**meta, 'stage': 'gan'}), initial=step, unit='step',
              dynamic_ncols=True, file=sys.stdout)


def train_and_evaluate(config, workdir):
  """Trains CONFIG in WORKDIR (resuming there if it holds a checkpoint); returns the final state."""
  parallel.initialize()
  loop = _Loop(config, workdir)
  meta, step = loop.meta, loop.start_step
  if meta['finished']:
    print(f'{workdir}: training already stopped early at step {step}; nothing to do.', flush=True)
    return loop.state
  batches = input_pipeline.prefetch_to_device(loop.iterator, loop.data_sharding, config.data.prefetch)
  data_state = loop.iterator.get_state()
  meter, bar = _Meter(config.train.batch_size), _progress_bar(config, meta, step)
  try:
    while not meta['finished']:
      loop.maybe_start_gan(step)
      if meta['stage'] == 'gan' and step >= _stage_end(config, meta):
        break
      batch, next_data_state = next(batches)
      with jax.transfer_guard('disallow'):  # the step loop moves nothing between host and device
        loop.state, metrics = loop.jitted[meta['stage']](loop.state, batch, loop.vgg_params)
        meter.add(metrics)
      data_state, step = next_data_state, step + 1
      if bar is not None:
        bar.update(1)
      epoch_done = step % loop.steps_per_epoch == 0 or step == _stage_end(config, meta)
      if step % config.train.log_every_steps == 0 or epoch_done:
        means = meter.window(step)
        loop.report.write(step, 'train', means, epoch=meta['epoch'], stage=meta['stage'])
        if bar is not None:
          bar.set_postfix({k: f'{means[k]:.4g}' for k in ('g_loss', 'psnr', 'd_loss') if k in means})
      if epoch_done:
        val, improved = loop.end_epoch(step, meter.epoch())
        loop.save(data_state, best=improved)
        (bar.write if bar is not None else print)(
            f'epoch {meta["epoch"]} step {step} [{meta["stage"]}] val psnr {val["psnr"]:.3f} '
            f'ssim {val["ssim"]:.4f}' + (' (best)' if improved else ''))
        meter.restart_clock()  # validation and checkpointing are not step time
  except KeyboardInterrupt:
    lost = loop.state.step.is_deleted()  # interrupted as a step returned: its donated input is gone
    if not lost and int(jax.device_get(loop.state.step)) != step:  # between step and bookkeeping
      data_state, step = next_data_state, step + 1
    loop.ckpts.wait()
    if not lost and step not in loop.ckpts.latest.all_steps():
      loop.save(data_state)
    print(f'\ninterrupted; the checkpoint of step {loop.ckpts.latest.latest_step()} holds the run, '
          'rerun the same command to resume.')
    raise
  finally:
    if bar is not None:
      bar.close()
    loop.ckpts.wait()
    loop.report.close()
  if step not in loop.ckpts.latest.all_steps():
    loop.save(data_state)
    loop.ckpts.wait()
  loop.ckpts.close()
  return loop.state


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--exp', default='esrgan', help='experiment name (experiments/NAME.py)')
  parser.add_argument('--workdir', default=None, help='run directory (default runs/EXP)')
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                      help='override a config field, e.g. --set train.batch_size=32')
  parser.add_argument('--list', action='store_true', help='print the experiments and exit')
  args = parser.parse_args(argv)
  absl_logging.set_verbosity(absl_logging.ERROR)  # orbax's notes are not for users
  from enhance_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  if args.list:
    print('\n'.join(config_lib.list_experiments()))
    return 0
  try:
    from absl import flags  # grain's multiprocessing reads absl flags  # pylint: disable=g-import-not-at-top
    flags.FLAGS(sys.argv[:1], known_only=True)
    config = config_lib.get_config(args.exp, args.set)
    train_and_evaluate(config, args.workdir or f'runs/{args.exp}')
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except FloatingPointError as e:
    print(f'error: {e}', file=sys.stderr)
    return 3
  except KeyboardInterrupt:
    return 130
  return 0


if __name__ == '__main__':
  sys.exit(main())
