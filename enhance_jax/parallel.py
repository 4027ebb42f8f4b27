"""Data parallelism through jax.sharding: one 'data' mesh axis, batch split, params replicated."""

import os

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

_MULTIHOST_ENV = ('JAX_COORDINATOR_ADDRESS', 'COORDINATOR_ADDRESS', 'SLURM_JOB_ID', 'TPU_WORKER_HOSTNAMES')


def initialize():
  """Joins the multi-host job when launched as one (coordinator env, SLURM, TPU pod); no-op otherwise."""
  if any(k in os.environ for k in _MULTIHOST_ENV) and int(os.environ.get('JAX_NUM_PROCESSES', '2')) > 1:
    if not jax.distributed.is_initialized():
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
