"""orbax checkpoints: the latest N and the best (by validation PSNR), each holding the whole train
state, the data-iterator state and a JSON `meta` (config, model signature, epoch, early-stopping).

Writes are atomic (orbax renames a finished temporary directory), so a run that dies mid-save leaves
the earlier checkpoints readable. Orbax keeps no checksums, so a finished step gets `SHA256SUMS`
(sha256 of each of its files), checked before it is read; damage is refused, never repaired.
`lock_workdir` and `check_writable` guard a workdir before a run starts.
"""

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import pathlib
import time

import jax
import orbax.checkpoint as ocp

from enhance_jax import stops
from enhance_jax.errors import UserError

SELECTORS = ('latest', 'best')
META_FORMAT = 2  # 1: before the open training core (cadence by epochs, best by PSNR only)
SUMS = 'SHA256SUMS'  # in each finished step folder; a step without it (older, cut off) is unchecked
# what orbax/tensorstore say when a checkpoint's files are missing, cut short or garbled
_DAMAGE = ('DATA_LOSS', 'OUT_OF_RANGE', 'NOT_FOUND', 'FAILED_PRECONDITION', 'Error reading',
           'Error opening', 'Encountered error while reading')


class CheckpointWriteError(UserError):
  """A checkpoint could not be written (disk full, folder unwritable); the earlier ones are kept."""


def check_writable(workdir):
  """Creates WORKDIR if missing and writes (then removes) a probe file, or raises UserError."""
  workdir = pathlib.Path(workdir).absolute()
  probe = workdir / f'.write_probe.{os.getpid()}'
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe.write_bytes(b'ok')
    probe.unlink()
  except OSError as e:
    raise UserError(f'cannot write to {workdir} ({e.strerror or e}); make it writable or use '
                    'another --workdir.') from None


class WorkdirLock:
  """An exclusive flock on WORKDIR/.lock holding 'pid start-time'; the kernel drops it when the
  process dies. `release()` or `with` ends it."""

  def __init__(self, workdir):
    self.path = pathlib.Path(workdir).absolute() / '.lock'
    self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = os.pread(self.fd, 256, 0).decode(errors='replace').split()
      os.close(self.fd)
      if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        raise UserError(f'cannot lock {self.path} ({e.strerror}); use another --workdir.') from None
      pid, started = (holder + ['?', '?'])[:2]
      raise UserError(f'another run (pid {pid}, started at {started}) is training in '
                      f'{self.path.parent}; wait for it to finish or use another --workdir.'
                      ) from None
    os.ftruncate(self.fd, 0)
    os.pwrite(self.fd, f'{os.getpid()} {time.strftime("%Y-%m-%dT%H:%M:%S")}\n'.encode(), 0)

  def release(self):
    if self.fd is not None:
      fcntl.flock(self.fd, fcntl.LOCK_UN)
      os.close(self.fd)
      self.fd = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.release()


def lock_workdir(workdir):
  """Checks WORKDIR is writable and locks it for this process (a WorkdirLock); else UserError."""
  check_writable(workdir)
  return WorkdirLock(workdir)


def _files(step_dir):
  return sorted(p for p in step_dir.rglob('*') if p.is_file() and p.name != SUMS)


def file_sha256(path):
  """Hex SHA-256 of a file, read in 4 MiB blocks (checkpoint sums, converted weights' provenance)."""
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 22), b''):
      h.update(block)
  return h.hexdigest()


def write_sums(step_dir):
  """Records the sha256 of every file of the finished step directory STEP_DIR in its SUMS."""
  lines = [f'{file_sha256(p)}  {p.relative_to(step_dir)}\n' for p in _files(step_dir)]
  tmp = step_dir / f'.{SUMS}.tmp'
  tmp.write_text(''.join(lines))
  tmp.rename(step_dir / SUMS)


def find_damage(step_dir):
  """What is wrong with STEP_DIR's files against its SUMS (None when they match or it has none)."""
  sums = step_dir / SUMS
  if not step_dir.is_dir():
    return 'its folder is missing'
  if not sums.is_file():
    return None
  for line in sums.read_text().splitlines():
    digest, _, rel = line.partition('  ')
    path = step_dir / rel
    if not path.is_file():
      return f'{rel} is missing'
    if len(digest) != 64 or file_sha256(path) != digest:
      return f'{rel} has changed since it was written'
  return None


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
    self._verified, self._unsummed = set(), []  # (dir, step) checked; [(mngr, step)] saved, no SUMS

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
    held = [m for m in (self.latest, self.best) if step in m.all_steps()]
    if held:  # an intact copy first, when one of the two is damaged
      return next((m for m in held if self._intact(m, step)), held[0]), step
    raise UserError(f'no checkpoint at step {step} in {self.workdir}; available: '
                    f'{sorted(set(self.latest.all_steps()) | set(self.best.all_steps()))}.')

  def _damaged(self, mngr, step, what):
    """The UserError for a damaged step, offering the complete others."""
    path = mngr.directory / str(step)
    others = sorted({s for m in (self.latest, self.best) for s in m.all_steps()
                     if (m, s) != (mngr, step) and self._intact(m, s)})
    return UserError(f'the checkpoint {path} is damaged ({what}); use --checkpoint STEP with one '
                     f'of {others}, or delete that folder (training then resumes from the latest '
                     'complete one).')

  def _intact(self, mngr, step):
    """Whether the step's files match its SUMS (checked once per step)."""
    if (mngr.directory, step) not in self._verified:
      if find_damage(pathlib.Path(mngr.directory) / str(step)):
        return False
      self._verified.add((mngr.directory, step))
    return True

  def _verify(self, mngr, step):
    """Raises UserError when the step's files do not match its SUMS."""
    if not self._intact(mngr, step):
      raise self._damaged(mngr, step, find_damage(pathlib.Path(mngr.directory) / str(step)))

  def _read(self, mngr, step, args, misfit=False):
    """mngr.restore(step, args); damage (and, when MISFIT, a model misfit) said in one sentence."""
    self._verify(mngr, step)
    try:
      # A signal waits for the read: raised inside orbax's TensorStore reads, it came back as a
      # generic error this would have called damage.
      with stops.held(f'the checkpoint of step {step} is read'):
        return mngr.restore(step, args=args)
    except Exception as e:  # pylint: disable=broad-except
      text = f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}'[:200]
      damage = (isinstance(e, (OSError, UnicodeDecodeError, json.JSONDecodeError))
                or any(k in str(e) for k in _DAMAGE)
                or type(e) is Exception)  # pylint: disable=unidiomatic-typecheck
      if misfit and not damage and isinstance(e, (ValueError, KeyError, TypeError)):
        raise UserError(f'checkpoint step {step} in {self.workdir} does not fit this model ({e}); '
                        'use another --workdir or the settings it was trained with.') from None
      raise self._damaged(mngr, step, text) from None

  def has_checkpoint(self):
    return self.latest.latest_step() is not None or self.best.latest_step() is not None

  def save(self, state, data_state, meta, best=False):
    """Saves under `checkpoints/` and, when BEST, also under `best/` (asynchronously)."""
    step = int(jax.device_get(state.step))
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              data=ocp.args.JsonSave(data_state or {}),
                              meta=ocp.args.JsonSave(json.loads(json.dumps(meta))))
    self.wait()  # the previous save finishes (and gets its SUMS) first
    with self._writing(step):
      self.latest.save(step, args=args, force=True)
      self._unsummed.append((self.latest, step))
      if best:
        if jax.process_count() > 1:  # orbax's cross-process barriers of two managers' saves collide
          self.latest.wait_until_finished()
        self.best.save(step, args=args, force=True)
        self._unsummed.append((self.best, step))

  @contextlib.contextmanager
  def _writing(self, step):
    """Turns a failed write of STEP into CheckpointWriteError naming the step that is kept."""
    try:
      yield
    except UserError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      self._unsummed = []
      kept = [s for s in _finished_steps(self.latest.directory) if s != step]
      keep = (f'the checkpoint of step {max(kept)} is kept and readable' if kept
              else 'no earlier checkpoint exists')
      raise CheckpointWriteError(
          f'writing the checkpoint of step {step} in {self.workdir} failed ({type(e).__name__}: '
          f'{e}); {keep}: free disk space or make the folder writable, then rerun to resume.'
      ) from None

  def read_meta(self, which='latest'):
    """The checkpoint's meta; one written before the current format is refused in one sentence."""
    mngr, step = self._step(which)
    meta = self._read(mngr, step, ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    if not isinstance(meta, dict):
      raise self._damaged(mngr, step, 'its meta is not a JSON object')
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
    out = self._read(mngr, step, ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                    data=ocp.args.JsonRestore(),
                                                    meta=ocp.args.JsonRestore()), misfit=True)
    if not isinstance(out.meta, dict):
      raise self._damaged(mngr, step, 'its meta is not a JSON object')
    self._check_format(out.meta, step)
    return out.state, out.data, out.meta

  def generator_variables(self, which='best'):
    """(meta, generator variables, step) of checkpoint WHICH ('best' falls back to 'latest'),
    read without the train state's structure: the EMA weights when kept, else G's, with G's
    BatchNorm statistics. What inference and frozen networks need, without the trainer."""
    if which == 'best' and self.best.latest_step() is None:
      which = 'latest'
    mngr, step = self._step(which)
    out = self._read(mngr, step, ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                    meta=ocp.args.JsonRestore()))
    if not isinstance(out.meta, dict) or not isinstance(out.state, dict):
      raise self._damaged(mngr, step, 'its state or meta is not what enhance_jax writes')
    self._check_format(out.meta, step)
    state = out.state
    params = state.get('ema_params') if state.get('ema_params') is not None else state.get('g_params')
    if params is None:
      raise self._damaged(mngr, step, 'it holds no generator parameters')
    stats = state.get('g_stats') or {}
    return out.meta, {'params': params, **({'batch_stats': stats} if stats else {})}, \
        int(state.get('step', step))

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
    """Waits for pending saves and records their SUMS; a failed write is a CheckpointWriteError."""
    with self._writing(self._unsummed[-1][1] if self._unsummed else self.latest.latest_step()):
      self.latest.wait_until_finished()
      self.best.wait_until_finished()
      for mngr, s in self._unsummed:
        step_dir = pathlib.Path(mngr.directory) / str(s)
        if step_dir.is_dir() and jax.process_index() == 0:  # else pruned by max_to_keep; one writer
          write_sums(step_dir)
      self._unsummed = []

  def close(self):
    self.wait()
    self.latest.close()
    self.best.close()


def verified_latest(workdir):
  """The newest step under WORKDIR/checkpoints that orbax finished and whose files match their SUMS
  (None when there is none): the one a stop may say holds the run."""
  root = pathlib.Path(workdir) / 'checkpoints'
  for step in reversed(_finished_steps(root)):
    if find_damage(root / str(step)) is None:
      return step
  return None


def _finished_steps(root):
  """The steps orbax finished (renamed from its temporary folder) under ROOT."""
  root = pathlib.Path(root)
  return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit()) \
      if root.is_dir() else []
