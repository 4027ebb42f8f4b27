"""Data parallelism through jax.sharding: one 'data' mesh axis, batch split, params replicated."""

import os
import sys
import threading
import time

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from enhance_jax.errors import UserError

def launched_multihost(env=None):
  """True when this process is one of several: a JAX coordinator, SLURM or Open MPI with >1 tasks."""
  env = os.environ if env is None else env
  return (bool(env.get('JAX_COORDINATOR_ADDRESS')) or int(env.get('SLURM_NTASKS', '1')) > 1
          or int(env.get('OMPI_COMM_WORLD_SIZE', '1')) > 1)


def _env_int(env, name, minimum=1):
  """The whole number >= minimum in env NAME (None when unset), or a UserError naming the variable."""
  value = env.get(name)
  if value in (None, ''):
    return None
  try:
    number = int(value)
  except ValueError:
    number = minimum - 1
  if number < minimum:
    kind, example = ('a positive whole number', 60) if minimum == 1 else ('a whole number >= 0', 0)
    raise UserError(f'{name}={value!r} is not {kind}; set it to one (e.g. {name}={example}) or '
                    'unset it.')
  return number


def initialize_kwargs(env=None):
  """jax.distributed.initialize's arguments for this launch. JAX reads JAX_COORDINATOR_ADDRESS itself
  but not JAX_NUM_PROCESSES/JAX_PROCESS_ID, so with a coordinator address in the env those come from
  it too (None where unset: then JAX's cluster detection, SLURM/Open MPI, fills them in).
  ENHANCE_JAX_HEARTBEAT_TIMEOUT (seconds) bounds how long the others wait on a dead process."""
  env = os.environ if env is None else env
  kwargs = {}
  if env.get('JAX_COORDINATOR_ADDRESS'):
    kwargs['coordinator_address'] = env['JAX_COORDINATOR_ADDRESS']
    for key, name, minimum in (('num_processes', 'JAX_NUM_PROCESSES', 1),
                               ('process_id', 'JAX_PROCESS_ID', 0)):
      if (value := _env_int(env, name, minimum)) is not None:
        kwargs[key] = value
  for key, name in (('heartbeat_timeout_seconds', 'ENHANCE_JAX_HEARTBEAT_TIMEOUT'),
                    ('initialization_timeout', 'ENHANCE_JAX_INIT_TIMEOUT'),
                    ('shutdown_timeout_seconds', 'ENHANCE_JAX_SHUTDOWN_TIMEOUT')):
    if (value := _env_int(env, name)) is not None:
      kwargs[key] = value
  return kwargs


def initialize():
  """Joins the multi-host job when launched as one: the cluster from the env (JAX_COORDINATOR_ADDRESS
  with JAX_NUM_PROCESSES/JAX_PROCESS_ID, or SLURM/Open MPI detection), CPU collectives over gloo
  (without them a CPU computation across processes fails)."""
  if launched_multihost() and not jax.distributed.is_initialized():
    if (os.environ.get('JAX_PLATFORMS', '') or 'cpu').split(',')[0] == 'cpu':
      jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(**initialize_kwargs())


def make_mesh(num_devices=None):
  """A 1-D mesh over NUM_DEVICES (default: all) devices, axis name 'data'."""
  devices = jax.devices()[:num_devices] if num_devices else jax.devices()
  return jax.sharding.Mesh(devices, ('data',))


def batch_sharding(mesh):
  return NamedSharding(mesh, P('data'))


def replicated(mesh):
  return NamedSharding(mesh, P())


def check_batch(batch_size, mesh):
  """Raises a clear error when the global batch cannot be split evenly over the devices."""
  n = mesh.devices.size
  if batch_size % n:
    raise UserError(f'train.batch_size={batch_size} is not divisible by the {n} devices; '
                    f'use a multiple of {n}.')


def is_main_process():
  """Whether this process writes the run's files (samples, curves, metrics, checksums): process 0."""
  return jax.process_index() == 0


def put_global(x, sharding):
  """A jax.Array of numpy X, which every process holds whole (a validation chunk), laid out by
  SHARDING: each process places only its devices' slices."""
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def fetch(x):
  """A jax.Array (or pytree of them) as numpy on every process: device_get when this process holds
  all of it, else an all-gather across processes (a data-split output of a multi-host run)."""
  leaves = jax.tree.leaves(x)
  if all(getattr(a, 'is_fully_addressable', True) or getattr(a, 'is_fully_replicated', False)
         for a in leaves):
    return jax.device_get(x)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return multihost_utils.process_allgather(x, tiled=True)


PEER_EXIT_CODE = 5  # a process of a multi-process run stopped because another one did


def abort_run(why, code=PEER_EXIT_CODE):
  """Ends this process of a multi-process run in one sentence, without the exit-time barrier that
  would wait on the dead peer."""
  print(f'error: {why}; process {jax.process_index()} stops too. Rerun the same launch on every '
        'host to resume from the last complete checkpoint.', file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(code)  # pylint: disable=protected-access


def peer_failed(error):
  """Ends the process when ERROR (raised by a computation) is a collective that lost another
  process of a multi-process run; returns otherwise."""
  if jax.process_count() > 1 and isinstance(error, jax.errors.JaxRuntimeError):
    first = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
    abort_run(f'a collective with the other processes failed ({first}): another process of this '
              f'{jax.process_count()}-process run stopped (killed, crashed or its host is gone)')


class PeerWatch:
  """Ends this process with one clear sentence when another process of the run stops answering
  (killed, crashed, its host gone), instead of leaving it blocked in a collective.

  Every INTERVAL seconds a daemon thread bumps this process's counter in the coordinator's key-value
  store and reads the others'; a peer whose counter has not moved for TIMEOUT seconds, or a
  coordinator that no longer answers, ends the process (exit code 5). `stop(done=True)` marks a
  normal finish, so peers finishing later are not alarmed. A no-op in a one-process run."""

  EXIT_CODE = PEER_EXIT_CODE

  def __init__(self, timeout=None, interval=1.0):
    from jax._src import distributed  # pylint: disable=g-import-not-at-top
    self.client = distributed.global_state.client
    self.index, self.count = jax.process_index(), jax.process_count()
    self.timeout = timeout or peer_timeout()
    self.interval, self._stop = interval, threading.Event()
    self._thread = None
    if self.client is not None and self.count > 1:
      self._thread = threading.Thread(target=self._run, name='enhance_jax-peer-watch', daemon=True)
      self._thread.start()

  def _key(self, kind, index):
    return f'enhance_jax/peer/{kind}/{index}'

  def _get(self, kind, index):
    """Peer INDEX's KIND value, None when it has not written one (try_get raises for a missing key)."""
    try:
      return self.client.key_value_try_get(self._key(kind, index))
    except Exception:  # pylint: disable=broad-except
      return None

  def _run(self):
    seen = {i: (None, time.monotonic()) for i in range(self.count) if i != self.index}
    beat = 0
    while not self._stop.wait(self.interval):
      beat += 1
      try:  # a coordinator that is gone fails this write
        self.client.key_value_set(self._key('beat', self.index), str(beat), allow_overwrite=True)
      except Exception as e:  # pylint: disable=broad-except
        if not self._stop.is_set():
          self._abort(f'the run\'s coordinator (process 0) no longer answers ({type(e).__name__})')
        return
      for i, (last, since) in list(seen.items()):
        if self._get('done', i) is not None:  # finished normally
          del seen[i]
          continue
        value = self._get('beat', i)
        if value != last:
          seen[i] = (value, time.monotonic())
        elif time.monotonic() - since > self.timeout and not self._stop.is_set():
          self._abort(f'process {i} of this {self.count}-process run has not answered for '
                      f'{self.timeout:.0f} s (killed, crashed or its host is gone)')

  def _abort(self, why):
    abort_run(why, self.EXIT_CODE)

  def stop(self, done=False):
    """Stops watching; DONE tells the peers this process finished normally."""
    self._stop.set()
    if self._thread is not None and done:
      try:
        self.client.key_value_set(self._key('done', self.index), '1', allow_overwrite=True)
      except Exception:  # pylint: disable=broad-except
        pass


def peer_timeout(env=None):
  """Seconds a silent peer is waited for: ENHANCE_JAX_PEER_TIMEOUT, else half of JAX's heartbeat
  timeout (ENHANCE_JAX_HEARTBEAT_TIMEOUT, JAX's default 100 s), so this sentence comes first."""
  env = os.environ if env is None else env
  if (value := _env_int(env, 'ENHANCE_JAX_PEER_TIMEOUT')) is not None:
    return value
  return max(2, (_env_int(env, 'ENHANCE_JAX_HEARTBEAT_TIMEOUT') or 100) // 2)
