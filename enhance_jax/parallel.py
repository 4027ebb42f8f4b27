"""Data parallelism through jax.sharding: one 'data' mesh axis, batch split, params replicated."""

import os

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

def launched_multihost(env=None):
  """True when this process is one of several: a JAX coordinator, SLURM or Open MPI with >1 tasks."""
  env = os.environ if env is None else env
  return (bool(env.get('JAX_COORDINATOR_ADDRESS')) or int(env.get('SLURM_NTASKS', '1')) > 1
          or int(env.get('OMPI_COMM_WORLD_SIZE', '1')) > 1)


def _env_int(env, name):
  value = env.get(name)
  return int(value) if value not in (None, '') else None


def initialize_kwargs(env=None):
  """jax.distributed.initialize's arguments for this launch. JAX reads JAX_COORDINATOR_ADDRESS itself
  but not JAX_NUM_PROCESSES/JAX_PROCESS_ID, so with a coordinator address in the env those come from
  it too (None where unset: then JAX's cluster detection, SLURM/Open MPI, fills them in).
  ENHANCE_JAX_HEARTBEAT_TIMEOUT (seconds) bounds how long the others wait on a dead process."""
  env = os.environ if env is None else env
  kwargs = {}
  if env.get('JAX_COORDINATOR_ADDRESS'):
    kwargs['coordinator_address'] = env['JAX_COORDINATOR_ADDRESS']
    for key, name in (('num_processes', 'JAX_NUM_PROCESSES'), ('process_id', 'JAX_PROCESS_ID')):
      if (value := _env_int(env, name)) is not None:
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
    from enhance_jax.errors import UserError  # pylint: disable=g-import-not-at-top
    raise UserError(f'train.batch_size={batch_size} is not divisible by the {n} devices; '
                    f'use a multiple of {n}.')
