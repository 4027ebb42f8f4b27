"""Faults around checkpoints, injected: damaged (bytes flipped, cut short, removed) checkpoint files
are refused in one sentence naming the folder and the complete steps, and never touched; a workdir
that another run holds or that cannot be written is refused before any step; a save that fails (disk
full) says which earlier checkpoint is kept, and that one still restores.

One 4-step run (checkpoints at 2 and 4, best at 4) is shared; each test damages a copy of it.
"""

import errno
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from conftest import quick_compile, tiny_config
from enhance_jax import evaluate
from enhance_jax import train
from enhance_jax.data import input_pipeline
from enhance_jax.errors import UserError
from enhance_jax.io import checkpoints as ckpt_lib
from enhance_jax.training import train_steps

pytestmark = pytest.mark.slow  # real checkpoints damaged on disk

RUN = ('train.num_steps=4', 'train.pretrain_steps=4', 'train.checkpoint_every_steps=2',
       'train.eval_every_steps=2')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('trained') / 'run'
  with quick_compile():
    train.train_and_evaluate(tiny_config(*RUN), workdir)
  return workdir


@pytest.fixture(name='workdir')
def workdir_fixture(trained, tmp_path):
  """A private copy of the trained workdir."""
  shutil.copytree(trained, tmp_path / 'run')
  return tmp_path / 'run'


def _abstract(config):
  task = train_steps.make_task(config)
  ph, pw = input_pipeline.patch_hw(config)
  s = config.model.scale
  return jax.eval_shape(
      lambda rng: train_steps.init_state(task, rng, (1, ph // s, pw // s, 3), (1, ph, pw, 3)),
      jax.random.key(0))


def _saved_abstract(workdir):
  meta = ckpt_lib.Checkpoints(workdir, read_only=True).read_meta('latest')
  return _abstract(ml_collections.ConfigDict(meta['config']))


def _snapshot(root):
  """{relative path: sha256 or 'dir'} of everything under ROOT, with mtimes."""
  out = {}
  for path in sorted(pathlib.Path(root).rglob('*')):
    st = path.stat()
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else 'dir'
    out[str(path.relative_to(root))] = (digest, st.st_mtime_ns)
  return out


def _damage(path, how):
  data = bytearray(path.read_bytes())
  if how == 'flip':
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
  elif how == 'truncate':
    path.write_bytes(bytes(data[:len(data) // 2]))
  else:
    path.unlink()


def _file(step_dir, which):
  """The file WHICH names in STEP_DIR: a path, or 'array data' (the largest ocdbt data file)."""
  if which == 'array data':
    return max((step_dir / 'state/ocdbt.process_0/d').iterdir(), key=lambda p: p.stat().st_size)
  return step_dir / which


FILES = ('meta/metadata', 'data/metadata', 'state/_METADATA', 'state/manifest.ocdbt',
         '_CHECKPOINT_METADATA', 'array data')


@pytest.mark.slow
def test_finished_checkpoints_carry_matching_sums(trained):
  for step_dir in (trained / 'checkpoints/2', trained / 'checkpoints/4', trained / 'best/4'):
    assert (step_dir / ckpt_lib.SUMS).is_file()
    assert ckpt_lib.find_damage(step_dir) is None
  state, data, meta = ckpt_lib.Checkpoints(trained, read_only=True).restore(
      _saved_abstract(trained), 'latest')
  assert int(state.step) == 4 and meta['format'] == ckpt_lib.META_FORMAT and data is not None


@pytest.mark.parametrize('how', ['flip', 'truncate', 'remove'])
@pytest.mark.parametrize('which', FILES)
def test_damaged_checkpoint_is_refused_and_left_alone(workdir, which, how):
  abstract = _saved_abstract(workdir)
  _damage(_file(workdir / 'checkpoints/4', which), how)
  before = _snapshot(workdir)
  for read in (lambda c: c.read_meta('latest'), lambda c: c.restore(abstract, 'latest')):
    with pytest.raises(UserError, match=r'damaged') as e:
      read(ckpt_lib.Checkpoints(workdir, read_only=True))
    msg = str(e.value)
    assert f'{workdir / "checkpoints/4"} is damaged' in msg and '[2, 4]' in msg, msg
    assert '--checkpoint STEP' in msg and 'delete that folder' in msg and '\n' not in msg
  assert _snapshot(workdir) == before


@pytest.mark.parametrize('which,how', [('meta/metadata', 'truncate'), ('meta/metadata', 'flip'),
                                       ('data/metadata', 'remove'), ('state/_METADATA', 'flip'),
                                       ('state/manifest.ocdbt', 'truncate'),
                                       ('state/_sharding', 'flip')])
def test_damage_without_sums_is_mapped_from_orbax_errors(workdir, which, how):
  """A checkpoint from before SUMS: what orbax/tensorstore raise is still said in one sentence."""
  abstract = _saved_abstract(workdir)
  step_dir = workdir / 'checkpoints/4'
  (step_dir / ckpt_lib.SUMS).unlink()
  _damage(step_dir / which, how)
  with pytest.raises(UserError, match=r'checkpoints/4 is damaged \(.+\); use --checkpoint STEP'):
    ckpt_lib.Checkpoints(workdir, read_only=True).restore(abstract, 'latest')


def test_step_number_picks_the_intact_copy(workdir):
  abstract = _saved_abstract(workdir)
  _damage(workdir / 'checkpoints/4/meta/metadata', 'flip')
  state, _, _ = ckpt_lib.Checkpoints(workdir, read_only=True).restore(abstract, 4)  # from best/
  assert int(state.step) == 4
  state, _, _ = ckpt_lib.Checkpoints(workdir, read_only=True).restore(abstract, 2)
  assert int(state.step) == 2


def test_evaluate_refuses_a_damaged_best(workdir):
  _damage(_file(workdir / 'best/4', 'array data'), 'flip')
  with pytest.raises(UserError, match=r'best/4 is damaged .*\[2, 4\]'):
    evaluate.restore_generator(workdir, 'best')
  assert evaluate.restore_generator(workdir, 'latest')[3] == 4


def test_resume_refuses_a_damaged_latest_and_writes_nothing(workdir):
  _damage(workdir / 'checkpoints/4/state/_METADATA', 'truncate')
  before = {d: _snapshot(workdir / d) for d in ('checkpoints', 'best')}
  with pytest.raises(UserError, match=r'checkpoints/4 is damaged .*\[2, 4\]'):
    train.train_and_evaluate(tiny_config(*RUN, 'train.num_steps=6'), workdir)
  assert {d: _snapshot(workdir / d) for d in ('checkpoints', 'best')} == before


def test_another_model_still_does_not_fit(workdir):
  other = _abstract(tiny_config(*RUN, 'model.num_features=16'))
  with pytest.raises(UserError, match='does not fit this model'):
    ckpt_lib.Checkpoints(workdir, read_only=True).restore(other, 'latest')


_HOLD = textwrap.dedent('''
    import sys, time
    from enhance_jax.io import checkpoints
    lock = checkpoints.lock_workdir(sys.argv[1])
    print('locked', flush=True)
    time.sleep(60)
''')


def test_a_second_run_cannot_lock_the_workdir_until_the_first_dies(tmp_path):
  holder = subprocess.Popen([sys.executable, '-c', _HOLD, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
  try:
    assert holder.stdout.readline().strip() == 'locked'
    with pytest.raises(UserError, match=rf'another run \(pid {holder.pid}, started at \S+\) is '
                       rf'training in {tmp_path}; wait for it to finish or use another --workdir'):
      ckpt_lib.lock_workdir(tmp_path)
  finally:
    holder.kill()
    holder.wait()
  with ckpt_lib.lock_workdir(tmp_path) as lock:  # the kernel dropped the dead holder's lock
    assert (tmp_path / '.lock').read_text().split()[0] == str(os.getpid())
    with pytest.raises(UserError, match=f'pid {os.getpid()}'):
      ckpt_lib.lock_workdir(tmp_path)  # a second open file in the same process conflicts too
  assert lock.fd is None
  ckpt_lib.lock_workdir(tmp_path).release()


def test_check_writable_creates_a_missing_folder(tmp_path):
  ckpt_lib.check_writable(tmp_path / 'a' / 'b')
  assert (tmp_path / 'a' / 'b').is_dir() and not list((tmp_path / 'a' / 'b').iterdir())


@pytest.mark.parametrize('where', ['proc', 'under a file', 'a file'])
def test_check_writable_refuses_unwritable_places(tmp_path, where):
  (tmp_path / 'f').write_text('x')
  path = {'proc': pathlib.Path('/proc/enhance_jax_run'), 'under a file': tmp_path / 'f' / 'run',
          'a file': tmp_path / 'f'}[where]
  with pytest.raises(UserError, match=r'^cannot write to .*; make it writable or use another '
                     r'--workdir\.$'):
    ckpt_lib.check_writable(path)
  with pytest.raises(UserError, match='cannot write to'):
    ckpt_lib.lock_workdir(path)


def test_check_writable_refuses_a_read_only_folder(tmp_path, monkeypatch):
  """A read-only folder (chmod 0o555): root writes there anyway, so the refusal a user gets is
  replayed by making the probe write fail as it does for them (EACCES)."""
  tmp_path.chmod(0o555)
  real = pathlib.Path.write_bytes

  def denied(self, data):
    if self.parent == tmp_path:  # what a non-root user's write into a 0o555 folder does
      raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
    return real(self, data)

  monkeypatch.setattr(pathlib.Path, 'write_bytes', denied)
  try:
    with pytest.raises(UserError, match=r'cannot write to .* \(Permission denied\)'):
      ckpt_lib.check_writable(tmp_path)
  finally:
    tmp_path.chmod(0o755)


def _disk_full(*_):
  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize('where', ['json item', 'finalize'])
def test_a_save_on_a_full_disk_keeps_the_earlier_checkpoint(workdir, monkeypatch, where):
  abstract = _saved_abstract(workdir)
  ckpts = ckpt_lib.Checkpoints(workdir)
  state, data, meta = ckpts.restore(abstract, 'latest')
  async def full(*_):
    _disk_full()
  if where == 'json item':
    from orbax.checkpoint._src.handlers import json_checkpoint_handler  # pylint: disable=g-import-not-at-top
    monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, '_save_fn', full)
  else:
    from orbax.checkpoint._src.path import async_path  # pylint: disable=g-import-not-at-top
    monkeypatch.setattr(async_path, 'rename', full)
  with pytest.raises(ckpt_lib.CheckpointWriteError,
                     match=r'writing the checkpoint of step 6 in .* failed \(OSError: .*No space left'
                     r'.*\); the checkpoint of step 4 is kept and readable: free disk space'):
    ckpts.save(state.replace(step=jnp.asarray(6, state.step.dtype)), data, meta, best=True)
    ckpts.wait()
  monkeypatch.undo()
  again = ckpt_lib.Checkpoints(workdir, read_only=True)
  assert again.latest.all_steps() == [2, 4] and again.best.all_steps() == [4]
  assert not (workdir / 'checkpoints/6').exists()
  assert int(again.restore(abstract, 'latest')[0].step) == 4
  assert isinstance(ckpt_lib.CheckpointWriteError('x'), UserError)
