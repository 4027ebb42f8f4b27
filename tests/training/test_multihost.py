"""Multi-host training for real: two processes on 127.0.0.1, each with two fake CPU devices, joined by
jax.distributed over gloo, train the tiny ESRGAN through `python -m enhance_jax.train` exactly as one
process with four devices does; checkpoints are written once and resumed by both; a killed process
ends the other in bounded time with one sentence. Plus the unit pieces (env -> initialize, rows)."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import TINY
from enhance_jax import parallel
from enhance_jax.errors import UserError
from enhance_jax.io import checkpoints as ckpt_lib

pytestmark = pytest.mark.slow  # two-process trainings

ROOT = pathlib.Path(__file__).resolve().parents[2]
SETS = [a for t in (*TINY, 'train.num_steps=4') for a in ('--set', t)]
PEER_TIMEOUT = 10  # seconds a silent peer is waited for in these tests


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _env(devices, cache, **extra):
  env = {k: v for k, v in os.environ.items() if not k.startswith(('JAX_', 'SLURM_', 'OMPI_'))}
  # XLA's lowest CPU optimisation: these tiny runs are mostly compile time (both sides alike)
  flags = f'--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0'
  env.update(JAX_PLATFORMS='cpu', XLA_FLAGS=flags,
             JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             PYTHONPATH=str(ROOT), PYTHONUNBUFFERED='1', **extra)
  return env


def _launch(workdir, cache, nproc, extra=()):
  """`train` as NPROC processes (2 devices each) or one process with 4 devices."""
  cmd = [sys.executable, '-m', 'enhance_jax.train', '--exp', 'esrgan_cpu', '--workdir', str(workdir),
         *SETS, *extra]
  run = lambda env: subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
  if nproc == 1:
    return [run(_env(4, cache))]
  port = _free_port()
  return [run(_env(2, cache, JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}', JAX_NUM_PROCESSES='2',
                   JAX_PROCESS_ID=str(i), ENHANCE_JAX_PEER_TIMEOUT=str(PEER_TIMEOUT),
                   ENHANCE_JAX_HEARTBEAT_TIMEOUT='60', ENHANCE_JAX_SHUTDOWN_TIMEOUT='120'))
          for i in range(nproc)]


def _wait(procs, timeout=600):
  outs = [p.communicate(timeout=timeout)[0] for p in procs]
  for i, (p, out) in enumerate(zip(procs, outs)):
    assert p.returncode == 0, f'process {i} exited {p.returncode}:\n' + '\n'.join(
        f'--- process {j}:\n{o[-3000:]}' for j, o in enumerate(outs))
  return outs


def _losses(workdir):
  rows = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]
  return [((r['step'], r['split'], k), v) for r in rows for k, v in sorted(r.items())
          if k.startswith(('g_loss', 'd_loss', 'loss', 'psnr', 'ssim')) and isinstance(v, float)]


def _params(workdir, step):
  """The generator's and discriminator's parameters of checkpoint STEP, as numpy."""
  path = workdir / 'checkpoints' / str(step) / 'state'
  ck = ocp.PyTreeCheckpointer()
  tree = ck.metadata(path).item_metadata.tree
  args = jax.tree.map(lambda m: ocp.RestoreArgs(restore_type=np.ndarray), tree,
                      is_leaf=lambda m: hasattr(m, 'shape'))
  state = ck.restore(path, restore_args=args)
  return {k: state[k] for k in ('g_params', 'd_params')}


@pytest.fixture(scope='module', name='cache')
def cache_fixture(tmp_path_factory):
  """One XLA compilation cache for this module's launches (the same programs, compiled once)."""
  return tmp_path_factory.mktemp('xla_cache')


def _stop_one(procs, signum, ready):
  """Once READY() holds (a run mid-way), sends SIGNUM to process 1 and waits for process 0:
  (process 0's exit code, its output, seconds from the signal to its exit, process 1's output)."""
  deadline = time.time() + 300
  while not ready() and time.time() < deadline:
    time.sleep(0.5)
  assert ready(), 'the run did not get there within 300 s'
  procs[1].send_signal(signum)
  t0 = time.time()
  try:
    out = procs[0].communicate(timeout=PEER_TIMEOUT + 60)[0]
  except subprocess.TimeoutExpired:
    procs[0].kill()
    pytest.fail(f'process 0 still running {PEER_TIMEOUT + 60} s after process 1 got {signum.name}')
  finally:
    procs[1].kill()
    out1 = procs[1].communicate()[0]
  print(f'process 0 stopped {time.time() - t0:.1f} s after process 1 got {signum.name}')
  return procs[0].returncode, out, time.time() - t0, out1


def _check_one_sentence(code, out):
  assert code == parallel.PEER_EXIT_CODE, out[-3000:]
  said = [l for l in out.splitlines() if l.startswith('error: ')]
  assert len(said) == 1 and 'process 0 stops too' in said[0] and 'Rerun the same launch' in said[0], out[-3000:]
  assert 'Traceback' not in out, out[-3000:]
  return said[0]


def _finished_steps(root):
  """Step folders orbax finished (its temporary folders, left by a stop mid-save, are not steps)."""
  return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit())


@pytest.fixture(scope='module', name='runs')
def runs_fixture(tmp_path_factory, cache):
  """The same 4-step run as one process x 4 devices and as two processes x 2 devices; then the
  two-process run relaunched: it resumes, and once it has checkpointed step 6 process 1 is frozen
  (SIGSTOP: its sockets stay open, so a collective would wait forever)."""
  tmp = tmp_path_factory.mktemp('multihost')
  one, two = tmp / 'one', tmp / 'two'
  t0 = time.time()
  _wait(_launch(one, cache, 1))
  t1 = time.time()
  _wait(_launch(two, cache, 2))
  t2 = time.time()
  steps_before = _finished_steps(two / 'checkpoints')
  procs = _launch(two, cache, 2, ['--set', 'train.num_steps=100000'])
  frozen = _stop_one(procs, signal.SIGSTOP, lambda: (two / 'checkpoints' / '6' / ckpt_lib.SUMS).exists())
  print(f'one process {t1 - t0:.0f} s, two processes {t2 - t1:.0f} s, resumed {time.time() - t2:.0f} s')
  return {'one': one, 'two': two, 'steps_before': steps_before, 'frozen': frozen}


def test_two_processes_train_as_one_process_with_four_devices(runs):
  a, b = _losses(runs['one']), dict(_losses(runs['two']))
  assert a and [k for k, _ in a] == [k for k in b if k[0] <= 4], (a, b)
  np.testing.assert_allclose([b[k] for k, _ in a], [v for _, v in a], rtol=1e-4, atol=1e-6)
  # The parameters after 2 L1 steps and 2 GAN steps agree to float32 sum-order noise (1e-5). Adam's
  # normalised step (lr times m / sqrt(v)) can turn that noise on a near-zero gradient into a step of
  # up to lr either way, so a few elements may differ by at most lr per Adam step: counted, bounded.
  lr, adam_steps = 1e-4, 2  # the tiny run's GAN-stage g_lr = d_lr and its GAN steps
  x = np.concatenate([l.ravel() for l in jax.tree.leaves(_params(runs['one'], 4))])
  y = np.concatenate([l.ravel() for l in jax.tree.leaves(_params(runs['two'], 4))])
  assert x.shape == y.shape and x.size > 10_000
  off = ~np.isclose(y, x, rtol=1e-4, atol=1e-5)
  print(f'{off.sum()} of {x.size} parameters beyond 1e-5; max difference {np.abs(y - x).max():.2e}')
  assert off.mean() < 1e-3, f'{off.sum()} of {x.size} parameters differ'
  assert np.abs(y - x).max() <= 2 * lr * adam_steps, np.abs(y - x).max()


def test_checkpoints_written_once_whole_and_resumed_by_both(runs):
  two = runs['two']
  assert runs['steps_before'] == [2, 4]  # the first launch: its checkpoints, finished
  for out in runs['frozen'][1::2]:  # both processes restored step 4
    assert 'resuming from step 4' in out, out[-2000:]
  for root in ('checkpoints', 'best'):
    steps = _finished_steps(two / root)
    assert steps and (root == 'best' or 6 in steps), steps
    for step in steps:  # each finished step whole, with its sums (process 0 writes them, once),
      step_dir = two / root / str(step)  # but the last: the freeze may land before its sums
      assert ckpt_lib.find_damage(step_dir) is None
      assert step == steps[-1] or (step_dir / ckpt_lib.SUMS).is_file(), step_dir
  # one writer of the run's files: each val record once, one samples image per evaluation
  rows = [json.loads(l) for l in (two / 'metrics.jsonl').read_text().splitlines()]
  val_steps = [r['step'] for r in rows if r['split'] == 'val']
  assert val_steps == list(range(2, val_steps[-1] + 1, 2)) and val_steps[-1] >= 6, val_steps
  assert sorted(p.name for p in (two / 'samples').iterdir()) == [
      f'step_{s:07d}.png' for s in val_steps]
  assert [r['step'] for r in rows if r['split'] == 'train'][:2] == [2, 4]


def test_a_frozen_process_ends_the_other_in_bounded_time(runs):
  """SIGSTOP of process 1 mid-run: the peer watch notices its silence and ends process 0 in one
  sentence (exit 5) instead of a wait in a collective that would never return."""
  code, out, waited, _ = runs['frozen']
  said = _check_one_sentence(code, out)
  assert f'process 1 of this 2-process run has not answered for {PEER_TIMEOUT} s' in said
  assert waited < PEER_TIMEOUT + 60


def test_a_killed_process_ends_the_other_in_bounded_time(tmp_path, cache):
  """SIGKILL of process 1 mid-run: its sockets close, the next collective fails, process 0 ends in
  one sentence (exit 5); what it checkpointed before is whole."""
  workdir = tmp_path / 'w'
  procs = _launch(workdir, cache, 2, ['--set', 'train.num_steps=100000'])
  code, out, waited, _ = _stop_one(procs, signal.SIGKILL, (workdir / 'metrics.jsonl').exists)
  _check_one_sentence(code, out)
  assert waited < PEER_TIMEOUT + 60
  for step in _finished_steps(workdir / 'checkpoints'):
    assert ckpt_lib.find_damage(workdir / 'checkpoints' / str(step)) is None


def test_peer_timeout_from_env():
  assert parallel.peer_timeout({}) == 50  # half of JAX's 100 s heartbeat: said before JAX aborts
  assert parallel.peer_timeout({'ENHANCE_JAX_HEARTBEAT_TIMEOUT': '30'}) == 15
  assert parallel.peer_timeout({'ENHANCE_JAX_PEER_TIMEOUT': '7'}) == 7


@pytest.mark.parametrize('value', ['ten', '-5', '0', '1.5'])
def test_a_bad_timeout_in_the_env_is_one_sentence(value):
  with pytest.raises(UserError, match=f'ENHANCE_JAX_PEER_TIMEOUT={value!r} is not a positive whole'):
    parallel.peer_timeout({'ENHANCE_JAX_PEER_TIMEOUT': value})
  with pytest.raises(UserError, match='ENHANCE_JAX_HEARTBEAT_TIMEOUT'):
    parallel.initialize_kwargs({'ENHANCE_JAX_HEARTBEAT_TIMEOUT': value})


def test_a_bad_timeout_through_the_cli_is_one_line_and_exit_2(tmp_path):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'ENHANCE_JAX_PEER_TIMEOUT': 'soon'}
  proc = subprocess.run([sys.executable, '-m', 'enhance_jax.train', '--exp', 'esrgan_cpu',
                         '--workdir', str(tmp_path / 'w'), *SETS], env=env, cwd=ROOT,
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 2, proc.stderr[-2000:]
  said = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert len(said) == 1 and 'ENHANCE_JAX_PEER_TIMEOUT' in said[0] and 'Traceback' not in proc.stderr


def test_initialize_kwargs_from_env():
  env = {'JAX_COORDINATOR_ADDRESS': '127.0.0.1:1234', 'JAX_NUM_PROCESSES': '2', 'JAX_PROCESS_ID': '1',
         'ENHANCE_JAX_HEARTBEAT_TIMEOUT': '20'}
  assert parallel.initialize_kwargs(env) == {'coordinator_address': '127.0.0.1:1234',
                                             'num_processes': 2, 'process_id': 1,
                                             'heartbeat_timeout_seconds': 20}
  env['JAX_PROCESS_ID'] = '0'  # the first process is 0: a valid id, not a bad number
  assert parallel.initialize_kwargs(env)['process_id'] == 0
  for name, bad in (('JAX_PROCESS_ID', '-1'), ('JAX_NUM_PROCESSES', '0'), ('JAX_PROCESS_ID', 'one')):
    with pytest.raises(UserError, match=name):
      parallel.initialize_kwargs({**env, name: bad})
  assert parallel.initialize_kwargs({'SLURM_NTASKS': '4'}) == {}  # JAX's SLURM detection
  assert parallel.launched_multihost({'SLURM_NTASKS': '4'})


class _Recording:
  """A data source that records which of its records were read."""

  def __init__(self, source):
    self.source, self.read = source, []

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    self.read.append(int(i))
    return self.source[i]


def test_each_process_reads_its_rows_of_the_one_process_batch():
  """Two processes' first batches, stacked in process order, are the one-process batch: the same
  images, crops and augmentations (so losses match across process counts); each process reads only
  the records of its own rows, and the two read all the one process reads, once."""
  from conftest import tiny_config  # pylint: disable=g-import-not-at-top
  from enhance_jax.data import datasets# pylint: disable=g-import-not-at-top
  from enhance_jax.data import input_pipeline# pylint: disable=g-import-not-at-top
  config = tiny_config('train.batch_size=4')
  source, _ = datasets.train_val_sources(config.data)
  first = lambda ds: [ds[i] for i in range(2)]
  whole = _Recording(source)
  one = first(input_pipeline.train_dataset(whole, config))
  shares = [_Recording(source) for _ in range(2)]
  parts = [first(input_pipeline.train_dataset(shares[p], config, process_index=p, process_count=2))
           for p in range(2)]
  for step in range(2):
    for key in ('lr', 'hr'):
      stacked = np.concatenate([parts[0][step][key], parts[1][step][key]])
      np.testing.assert_array_equal(stacked, one[step][key])
  assert len(shares[0].read) == len(shares[1].read) == len(whole.read) // 2 == 4
  assert sorted(shares[0].read + shares[1].read) == sorted(whole.read)
