"""Multi-host launch (issue 15, part): how jax.distributed.initialize is called from the environment.
The two-process end-to-end run is not here yet (see the issue's closing note)."""

from enhance_jax import parallel


def test_initialize_kwargs_from_env():
  env = {'JAX_COORDINATOR_ADDRESS': '127.0.0.1:1234', 'JAX_NUM_PROCESSES': '2', 'JAX_PROCESS_ID': '1',
         'ENHANCE_JAX_HEARTBEAT_TIMEOUT': '20'}
  assert parallel.initialize_kwargs(env) == {'coordinator_address': '127.0.0.1:1234',
                                             'num_processes': 2, 'process_id': 1,
                                             'heartbeat_timeout_seconds': 20}
  assert parallel.initialize_kwargs({'SLURM_NTASKS': '4'}) == {}  # JAX's SLURM detection
  assert parallel.launched_multihost({'SLURM_NTASKS': '4'})


def test_each_process_reads_its_rows_of_the_one_process_batch():
  """Two processes' first batches, stacked in process order, are the one-process batch: the same
  images, crops and augmentations (so losses match across process counts)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from conftest import tiny_config  # pylint: disable=g-import-not-at-top
  from enhance_jax import datasets, input_pipeline  # pylint: disable=g-import-not-at-top
  config = tiny_config('train.batch_size=4')
  source, _ = datasets.train_val_sources(config.data)
  first = lambda ds: [ds[i] for i in range(2)]
  one = first(input_pipeline.train_dataset(source, config))
  parts = [first(input_pipeline.train_dataset(source, config, process_index=p, process_count=2))
           for p in range(2)]
  for step in range(2):
    for key in ('lr', 'hr'):
      stacked = np.concatenate([parts[0][step][key], parts[1][step][key]])
      np.testing.assert_array_equal(stacked, one[step][key])
