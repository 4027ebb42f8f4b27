"""Faults injected into training (issue 15): SIGKILL at seeded moments (mid-checkpoint included) then
the same command again, SIGTERM, NaN/Inf in a step (stop, or skip with train.nan_policy=skip), and a
data pipeline that hangs. Each run ends with its checkpoints readable and resumes to the numbers of
an uninterrupted run."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import TINY
from conftest import tiny_config
from enhance_jax import train
from enhance_jax.data import input_pipeline
from enhance_jax.io import checkpoints as ckpt_lib

pytestmark = pytest.mark.slow  # real CLI runs killed and resumed

REPO = pathlib.Path(__file__).resolve().parents[2]
KILL_RUN = (*TINY, 'train.num_steps=14', 'train.checkpoint_every_steps=1', 'train.eval_every_steps=7',
            'train.log_every_steps=1')


def _command(workdir, overrides):
  return [sys.executable, '-m', 'enhance_jax.train', '--exp', 'esrgan_cpu', '--workdir', str(workdir),
          *[a for o in overrides for a in ('--set', o)]]


def _env():
  """The subprocesses share the session's compilation cache (conftest): same programs, one compile."""
  return {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONFAULTHANDLER': '1',
          'JAX_COMPILATION_CACHE_DIR': jax.config.jax_compilation_cache_dir,
          'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0.2'}


def _losses(workdir):
  """{step: g_loss} of the training records (a step logged twice, before a kill and after the
  resume, keeps its last value)."""
  out = {}
  for line in (pathlib.Path(workdir) / 'metrics.jsonl').read_text().splitlines():
    if line.strip():
      r = json.loads(line)
      if r['split'] == 'train':
        out[r['step']] = r['g_loss']
  return out


def _latest(workdir):
  """The latest complete checkpoint step (None before the first), read as a resume would."""
  if not (pathlib.Path(workdir) / 'checkpoints').is_dir():
    return None
  ckpts = ckpt_lib.Checkpoints(workdir, read_only=True)
  try:
    step = ckpts.latest.latest_step()
    if step is not None:
      ckpts.read_meta('latest')  # readable, not half-written
    return step
  finally:
    ckpts.close()


def test_sigkill_at_seeded_moments_then_rerun_finishes_as_an_uninterrupted_run(tmp_path):
  straight = tmp_path / 'straight'
  subprocess.run(_command(straight, KILL_RUN), env=_env(), check=True, capture_output=True,
                 timeout=600)
  want = _losses(straight)
  assert sorted(want) == list(range(1, 15))

  workdir, rng, survived = tmp_path / 'killed', np.random.default_rng(15), []
  for target in (2, 6, 10):  # kill once the run has checkpointed step TARGET, after a seeded delay
    proc = subprocess.Popen(_command(workdir, KILL_RUN), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
      steps = [int(p.name) for p in (workdir / 'checkpoints').glob('*') if p.name.isdigit()]
      if steps and max(steps) >= target:
        break
      time.sleep(0.05)
    time.sleep(float(rng.uniform(0.0, 0.6)))  # lands in a step, a log write or a checkpoint write
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    survived.append(_latest(workdir))
    assert survived[-1] is not None and survived[-1] >= target - 1, survived
  done = subprocess.run(_command(workdir, KILL_RUN), env=_env(), capture_output=True, text=True,
                        timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  assert f'resuming from step {survived[-1]}' in done.stdout
  got = _losses(workdir)
  assert sorted(got) == sorted(want)
  for step in want:  # the same losses as the run nobody killed
    assert got[step] == pytest.approx(want[step], rel=1e-5, abs=1e-7), (step, got[step], want[step])
  assert _latest(workdir) == 14


def test_sigterm_checkpoints_the_current_step_and_exits_143(tmp_path):
  workdir = tmp_path / 'run'
  overrides = (*TINY, 'train.num_steps=100000', 'train.checkpoint_every_steps=100000',
               'train.eval_every_steps=100000', 'train.log_every_steps=1')
  proc = subprocess.Popen(_command(workdir, overrides), env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if (workdir / 'metrics.jsonl').exists() and len(_losses(workdir)) >= 4:
      break
    time.sleep(0.1)
  sent = time.time()
  proc.send_signal(signal.SIGTERM)
  try:
    out, _ = proc.communicate(timeout=120)
  except subprocess.TimeoutExpired:  # where it hangs: faulthandler's dump of every thread on SIGABRT
    proc.send_signal(signal.SIGABRT)
    pytest.fail('no exit 120 s after SIGTERM:\n' + proc.communicate()[0][-6000:])
  stop_seconds = time.time() - sent
  assert proc.returncode == 143, out[-2000:]
  step = _latest(workdir)
  assert step is not None and step >= 4  # the step it was at: no periodic checkpoint was due
  assert f'stopped by SIGTERM; the checkpoint of step {step} holds the run' in out
  assert stop_seconds < 60, stop_seconds
  again = subprocess.run(_command(workdir, (*overrides[:-4], f'train.num_steps={step + 2}',
                                            'train.checkpoint_every_steps=100000',
                                            'train.eval_every_steps=100000')),
                         env=_env(), capture_output=True, text=True, timeout=600)
  assert again.returncode == 0 and f'resuming from step {step}' in again.stdout, again.stderr[-2000:]


def _poison_batch(monkeypatch, index):
  """The step loop's batch INDEX (0-based) has NaN inputs."""
  real = input_pipeline.prefetch_to_device

  def stream(*args, **kwargs):
    for i, (batch, state) in enumerate(real(*args, **kwargs)):
      yield (jax.tree.map(lambda x: x * jnp.nan, batch) if i == index else batch), state

  monkeypatch.setattr(input_pipeline, 'prefetch_to_device', stream)


def test_a_nan_step_stops_the_run_naming_the_step_and_terms(tmp_path, monkeypatch, capsys):
  _poison_batch(monkeypatch, 2)  # the third step (step 3) sees NaN images
  code = train.main(['--exp', 'esrgan_cpu', '--workdir', str(tmp_path),
                     *[a for o in (*TINY, 'train.log_every_steps=2') for a in ('--set', o)]])
  assert code == 3
  err = capsys.readouterr().err
  assert 'became NaN/Inf at step 3' in err and 'g_loss' in err and 'loss_pixel' in err, err
  assert 'train.nan_policy=skip' in err and 'Traceback' not in err
  ckpts = ckpt_lib.Checkpoints(tmp_path, read_only=True)
  assert ckpts.latest.all_steps() == [2]  # the good one: nothing made after the NaN was saved
  assert ckpts.best.all_steps() == [2]


def test_nan_policy_skip_drops_the_step_and_counts_it(tmp_path, monkeypatch, capsys):
  _poison_batch(monkeypatch, 2)
  config = tiny_config('train.nan_policy=skip', 'train.log_every_steps=2')
  state = train.train_and_evaluate(config, tmp_path)
  assert int(state.step) == 6
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(state.g_params))
  records = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  skipped = {r['step']: r['skipped_steps'] for r in records if r['split'] == 'train'}
  assert skipped == {2: 0.0, 4: 1.0, 6: 0.0}
  assert '1 step(s) of this window skipped' in capsys.readouterr().out


class _Hanging:
  """The training iterator, stalling forever (a hung worker) after N batches."""

  def __init__(self, inner, n):
    self.inner, self.n, self.release = inner, n, threading.Event()
    self.hung_at = None

  def __iter__(self):
    return self

  def __next__(self):
    if self.n == 0:
      self.hung_at = time.monotonic()
      self.release.wait()
    self.n -= 1
    return next(self.inner)

  def get_state(self):
    return self.inner.get_state()

  def set_state(self, state):
    self.inner.set_state(state)


def test_a_stalled_data_pipeline_stops_with_a_checkpoint(tmp_path, monkeypatch):
  real, hanging = input_pipeline.train_iterator, []

  def stalls(ds, num_workers=0):
    hanging.append(_Hanging(real(ds, num_workers), 5))  # batches 1-5 (2 staged ahead), then none
    return hanging[-1]

  monkeypatch.setattr(input_pipeline, 'train_iterator', stalls)
  config = tiny_config('train.num_steps=20', 'train.checkpoint_every_steps=100',
                       'train.eval_every_steps=100', 'data.stall_timeout_s=2.0')
  with pytest.raises(input_pipeline.DataStallError, match='waiting for batch 6 of this run') as e:
    train.train_and_evaluate(config, tmp_path)
  stopped = time.monotonic() - hanging[0].hung_at
  hanging[0].release.set()
  assert 'raise data.stall_timeout_s' in str(e.value)
  assert 2.0 <= stopped < 30, stopped
  assert ckpt_lib.Checkpoints(tmp_path, read_only=True).latest.all_steps() == [2, 5]  # stage end, stop


def test_a_second_run_on_the_same_workdir_is_refused(tmp_path, capsys):
  """While a run holds the workdir (its lock), another `train` there stops before doing anything."""
  (tmp_path / 'keep.txt').write_text('the first run\'s file')
  with ckpt_lib.lock_workdir(tmp_path):  # the first run
    code = train.main(['--exp', 'esrgan_cpu', '--workdir', str(tmp_path),
                       *[a for o in TINY for a in ('--set', o)]])
  assert code == 2
  err = capsys.readouterr().err
  assert f'another run (pid {os.getpid()}' in err and 'use another --workdir' in err, err
  assert sorted(p.name for p in tmp_path.iterdir()) == ['.lock', 'keep.txt']  # nothing written


def test_an_unwritable_workdir_is_one_sentence_before_any_step(tmp_path, capsys):
  (tmp_path / 'file').write_text('x')
  for workdir in ('/proc/enhance_jax_run', tmp_path / 'file' / 'run'):
    assert train.main(['--exp', 'esrgan_cpu', '--workdir', str(workdir),
                       *[a for o in TINY for a in ('--set', o)]]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: cannot write to') and err.count('\n') == 0, err
