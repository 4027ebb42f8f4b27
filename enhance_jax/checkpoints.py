"""orbax checkpoints: the latest N and the best (by validation PSNR), each holding the whole train
state, the data-iterator state and a JSON `meta` (config, model signature, epoch, early-stopping).

Writes are atomic (orbax renames a finished temporary directory), so a run that dies mid-save leaves
the earlier checkpoints readable.
"""

import json
import pathlib

import jax
import orbax.checkpoint as ocp

from enhance_jax.errors import UserError

SELECTORS = ('latest', 'best')
META_FORMAT = 2  # 1: before the open training core (cadence by epochs, best by PSNR only)


def model_signature(config):
  """What must match for a checkpoint to load into this config: the G and D architectures."""
  # remat gives the same weights; *_weights and init_from name where initial weights came from
  same = lambda k: k in ('remat', 'init_from') or k.endswith('_weights')
  model = {k: v for k, v in config.model.to_dict().items() if not same(k)}
  disc = {k: v for k, v in config.discriminator.to_dict().items() if not same(k)}
  return json.loads(json.dumps({'model': model, 'discriminator': disc}))


class Checkpoints:
  """Two orbax managers under WORKDIR: `checkpoints/` (latest N) and `best/` (one)."""

  def __init__(self, workdir, keep=3, read_only=False):
    self.workdir = pathlib.Path(workdir).absolute()
    opts = dict(create=not read_only, read_only=read_only)
    self.latest = ocp.CheckpointManager(self.workdir / 'checkpoints',
                                        options=ocp.CheckpointManagerOptions(max_to_keep=keep, **opts))
    self.best = ocp.CheckpointManager(self.workdir / 'best',
                                      options=ocp.CheckpointManagerOptions(max_to_keep=1, **opts))

  def _manager(self, which):
    return self.best if which == 'best' else self.latest

  def _step(self, which):
    """Resolves 'latest' | 'best' | a step number to (manager, step), or raises UserError."""
    if which in SELECTORS:
      mngr = self._manager(which)
      step = mngr.latest_step()
      if step is None:
        raise UserError(f'no {which} checkpoint in {self.workdir}; train there first '
                        f'(python -m enhance_jax.train --workdir {self.workdir}).')
      return mngr, step
    try:
      step = int(which)
    except ValueError:
      raise UserError(f'--checkpoint {which!r} is not best, latest or a step number.') from None
    for mngr in (self.latest, self.best):
      if step in mngr.all_steps():
        return mngr, step
    raise UserError(f'no checkpoint at step {step} in {self.workdir}; available: '
                    f'{sorted(set(self.latest.all_steps()) | set(self.best.all_steps()))}.')

  def has_checkpoint(self):
    return self.latest.latest_step() is not None or self.best.latest_step() is not None

  def save(self, state, data_state, meta, best=False):
    """Saves under `checkpoints/` and, when BEST, also under `best/` (asynchronously)."""
    step = int(jax.device_get(state.step))
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              data=ocp.args.JsonSave(data_state or {}),
                              meta=ocp.args.JsonSave(json.loads(json.dumps(meta))))
    self.latest.save(step, args=args, force=True)
    if best:
      self.best.save(step, args=args, force=True)

  def read_meta(self, which='latest'):
    """The checkpoint's meta; one written before the current format is refused in one sentence."""
    mngr, step = self._step(which)
    meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    self._check_format(meta, step)
    return meta

  def _check_format(self, meta, step):
    if meta.get('format') != META_FORMAT:
      raise UserError(f'the checkpoint of step {step} in {self.workdir} was written by an older '
                      f'enhance_jax (meta format {meta.get("format", 1)}, this one reads '
                      f'{META_FORMAT}); train it again in a new --workdir.')

  def restore(self, abstract_state, which='latest'):
    """(state, data_state, meta) restored onto ABSTRACT_STATE's shapes and shardings."""
    mngr, step = self._step(which)
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    try:
      out = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                       data=ocp.args.JsonRestore(),
                                                       meta=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError) as e:
      raise UserError(f'checkpoint step {step} in {self.workdir} does not fit this model ({e}); '
                      'use another --workdir or the settings it was trained with.') from None
    self._check_format(out.meta, step)
    return out.state, out.data, out.meta

  def check_compatible(self, config):
    """Raises UserError (and writes nothing) when the workdir's checkpoint is another model's."""
    if not self.has_checkpoint():
      return
    saved = self.read_meta('latest' if self.latest.latest_step() is not None else 'best')
    want = model_signature(config)
    if saved.get('signature') != want:
      diffs = [f'{sec}.{k}: checkpoint {v!r}, asked {want[sec].get(k)!r}'
               for sec in want for k, v in saved.get('signature', {}).get(sec, {}).items()
               if want[sec].get(k) != v]
      raise UserError(f'{self.workdir} holds a checkpoint of another model ({"; ".join(diffs[:4])}); '
                      'use a new --workdir, or the same model settings to resume.')

  def wait(self):
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self):
    self.latest.close()
    self.best.close()
