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


def initialize():
  """Joins the multi-host job when launched as one (jax.distributed reads the cluster from the env)."""
  if launched_multihost() and not jax.distributed.is_initialized():
    jax.distributed.initialize()


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
