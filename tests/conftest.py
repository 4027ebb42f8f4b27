"""Session set-up for the CPU test suite, and the tiny ESRGAN config the trainer tests share.

A compilation cache for the session lets the programs that several tests build (the same train step
for the same config) compile once. Tests compile with most of XLA's optimisations off
(`quick_compile`); the minutes-long trainings in session and module fixtures keep XLA's default
(-O0 makes them about 1.2x slower). The suite keeps one CPU device (8 fake devices slow those
trainings about 1.5x), so the 8-device tests run in a subprocess (tests/training/test_sharding.py).

Other test files: `from conftest import tiny_config` or take the `tiny_config` fixture.
"""

import atexit
import contextlib
import os
import shutil
import tempfile

os.environ.setdefault('JAX_PLATFORMS', 'cpu')  # the suite is CPU-only, also on a GPU machine

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

from enhance_jax.training import config as config_lib# pylint: disable=g-import-not-at-top,wrong-import-position

_CACHE_DIR = tempfile.mkdtemp(prefix='enhance_jax_tests_xla_cache_')
atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
jax.config.update('jax_compilation_cache_dir', _CACHE_DIR)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.2)

# esrgan_cpu shrunk to seconds: 1 RRDB of width 8, D of width 8, 32-pixel HR patches, VGG19 up to
# conv2_2 for the content loss; 2 L1 steps then 4 GAN steps, validation and checkpoints every 2.
TINY = ('model.num_blocks=1', 'model.num_features=8', 'model.growth_channels=4',
        'discriminator.num_features=8', 'discriminator.dense_features=16',
        'data.patch_size=32', 'data.val_patch_size=64', 'train.batch_size=8',
        'loss.content_layer=conv2_2', 'train.steps_per_epoch=2', 'train.eval_every_steps=2',
        'train.checkpoint_every_steps=2', 'train.pretrain_steps=2',
        'train.num_steps=6', 'train.progress=False')


@contextlib.contextmanager
def quick_compile():
  """Compiles with most of XLA's optimisations off, in this process and in the commands it starts:
  tiny programs that run a few steps spend nearly all their time compiling (a CLI run of dcgan_sr:
  20 -> 12 s). Module fixtures whose runs a test compares with its own take it too."""
  before = os.environ.get('JAX_DISABLE_MOST_OPTIMIZATIONS')
  flag = jax.config.read('jax_disable_most_optimizations')
  os.environ['JAX_DISABLE_MOST_OPTIMIZATIONS'] = '1'
  jax.config.update('jax_disable_most_optimizations', True)
  try:
    yield
  finally:
    jax.config.update('jax_disable_most_optimizations', flag)
    if before is None:
      os.environ.pop('JAX_DISABLE_MOST_OPTIMIZATIONS', None)
    else:
      os.environ['JAX_DISABLE_MOST_OPTIMIZATIONS'] = before


# Modules that train for minutes, longest first: pytest-xdist (--dist loadscope) hands modules to the
# workers in collection order, so these start first and the quick ones fill the gaps, instead of a
# 5-minute module starting when the other worker is nearly done.
LONGEST_FIRST = (
    'tests/training/test_new_bars.py', 'tests/training/test_new_architectures.py',
    'tests/training/test_multihost.py', 'tests/cli/test_stop_matrix.py', 'tests/models/test_edsr.py',
    'tests/training/test_experiments.py',
    'tests/cli/test_enhance.py', 'tests/training/test_open_core.py',
    'tests/training/test_training_faults.py', 'tests/training/test_sharding.py',
    'tests/benchmarks/test_benchmarks.py',
)


def pytest_collection_modifyitems(items):
  """Moves the LONGEST_FIRST modules to the front, in that order; each module's tests stay together."""
  rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.nodeid.split('::', 1)[0], len(rank)))


@pytest.fixture(autouse=True)
def quick_compile_each_test(request):
  """Every test runs under `quick_compile`, except those marked `optimized` (memory and speed
  checks); the session/module fixtures that train for minutes compile as users do."""
  if request.node.get_closest_marker('optimized'):
    yield
    return
  with quick_compile():
    yield


def tiny_config(*overrides):
  """The esrgan_cpu experiment at test size, with OVERRIDES ('key=value') applied after TINY."""
  return config_lib.get_config('esrgan_cpu', [*TINY, *overrides])


@pytest.fixture(name='tiny_config')
def tiny_config_fixture():
  """`tiny_config` itself, for tests that prefer a fixture to an import."""
  return tiny_config


def photo_batch(config, n=None, seed=0):
  """A fixed batch of real photo patches: N (default: the batch size) HR crops of the config's patch
  size from astronaut/coffee/chelsea (fitted to data.hr_resize first when set), float32 NHWC in
  [0, 1], with their LR by the config's degradation."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  from enhance_jax.data import input_pipeline# pylint: disable=g-import-not-at-top
  n, (ph, pw) = n or config.train.batch_size, input_pipeline.patch_hw(config)
  rng = np.random.default_rng(seed)
  photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()]
  hr = []
  side, mode = config.data.get('hr_resize', 0), config.data.get('hr_resize_mode', 'resize')
  for i in range(n):
    photo = photos[i % len(photos)]
    if side:  # fitted to data.hr_resize first, as the pipeline does (back to uint8 for the crop)
      photo = np.round(input_pipeline.prepare_hr(photo, side, mode) * 255).astype(np.uint8)
    top, left = (rng.integers(0, max(1, photo.shape[0] - ph)), rng.integers(0, max(1, photo.shape[1] - pw)))
    hr.append(photo[top:top + ph, left:left + pw].astype(np.float32) / 255.0)
  return {'lr': np.stack(input_pipeline.degrade_fixed(hr, config)), 'hr': np.stack(hr)}


def fast_jit(fn, *args):
  """jax.jit(FN) compiled ahead of time for ARGS at XLA's lowest CPU optimisation level: with these
  tiny models compile time is nearly all of a test's time, and this cuts it about 3x."""
  return jax.jit(fn).lower(*args).compile(compiler_options={'xla_backend_optimization_level': 0})



def stop_data_after(monkeypatch, n_batches, exc=KeyboardInterrupt):
  """Makes the step loop's data stream raise EXC once N_BATCHES batches have been handed out."""
  from enhance_jax.data import input_pipeline# pylint: disable=g-import-not-at-top
  real = input_pipeline.prefetch_to_device

  def stream(*args, **kwargs):
    for i, item in enumerate(real(*args, **kwargs)):
      if i == n_batches:
        raise exc
      yield item

  monkeypatch.setattr(input_pipeline, 'prefetch_to_device', stream)


@pytest.fixture(scope='session')
def l1_run(tmp_path_factory):
  """A small ESRGAN's L1 stage, trained for a couple of CPU minutes on the embedded photos: the one
  trained model the suite shares (evaluate, enhance, init_from). Under pytest-xdist the workers
  share one training too: the first to ask trains under a file lock, the others wait and reuse it."""
  import filelock  # pylint: disable=g-import-not-at-top
  from enhance_jax import train# pylint: disable=g-import-not-at-top
  root = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    root = root.parent  # the directory all workers' temp dirs live in
  workdir, done = root / 'shared_esrgan_l1', root / 'shared_esrgan_l1.done'
  with filelock.FileLock(str(root / 'shared_esrgan_l1.lock')):
    if not done.exists():
      sets = ['train.pretrain_steps=400', 'train.num_steps=400', 'train.eval_every_steps=200',
              'train.checkpoint_every_steps=200', 'train.progress=False']
      # as a user runs it: python -m enhance_jax.train --exp esrgan_cpu --workdir W --set ... (in process)
      assert train.main(['--exp', 'esrgan_cpu', '--workdir', str(workdir),
                         *[arg for s in sets for arg in ('--set', s)]]) == 0
      done.touch()
  return workdir
