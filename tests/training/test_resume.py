"""Resuming through `train_and_evaluate` on the embedded photos: a run stopped at step 4, continued,
interrupted (Ctrl-C) after step 5 and resumed ends exactly where a straight 6-step run ends (train
state and data position); a workdir holding another model's checkpoint is refused and left alone.

Stopping at step k of an N-step run is expressed with the run's own config and `train.num_steps=k`:
the GAN stage ends at gan_start + num_steps - pretrain_steps and no schedule depends on num_steps
(the learning-rate milestones count optimizer steps), so the next run with num_steps=N continues
the same schedule. Here k=4 is an epoch end; at another k the early stage end also ends an epoch
(validation, `meta['epoch']` + 1), which changes epoch numbering but not the parameters.
"""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import quick_compile
from conftest import stop_data_after
from conftest import tiny_config
from enhance_jax import train
from enhance_jax.data import datasets
from enhance_jax.data import input_pipeline
from enhance_jax.errors import UserError
from enhance_jax.io import checkpoints as ckpt_lib

pytestmark = pytest.mark.slow  # trainings resumed from checkpoints

# 2 L1 steps then 4 GAN steps, 2 steps an epoch (conftest.TINY); EMA on, and both learning rates
# halve after one step of their stage, so a resume that lost the optimizer's step count would show.
RESUME = ('train.ema_decay=0.9', 'train.pretrain_milestones=(1,)', 'train.gan_milestones=(1,)')


def _host(state):
  """The train state as numpy, the PRNG key as its raw data."""
  return jax.device_get(state.replace(rng=jax.random.key_data(state.rng)))


def _data_state(workdir, step):
  mngr = ckpt_lib.Checkpoints(workdir, read_only=True).latest
  return mngr.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore())).data


def _next_batch(config, data_state):
  """The batch the training data iterator yields next from DATA_STATE."""
  train_src, _ = datasets.train_val_sources(config.data)
  iterator = input_pipeline.train_iterator(input_pipeline.train_dataset(train_src, config))
  iterator.set_state(data_state)
  return next(iterator)


def _snapshot(root):
  """{path: (size, mtime_ns)} of every file and directory under ROOT but the run lock (`.lock`,
  which every run, a refused one too, takes)."""
  out = {}
  for folder, dirs, files in os.walk(root):
    for name in dirs + files:
      if name == '.lock' and folder == str(root):
        continue
      path = os.path.join(folder, name)
      st = os.stat(path)
      out[os.path.relpath(path, root)] = (st.st_size if name in files else None, st.st_mtime_ns)
  return out


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
  """Six steps in one go, compiled as the test's own runs are."""
  workdir = tmp_path_factory.mktemp('straight')
  with quick_compile():
    state = train.train_and_evaluate(tiny_config(*RESUME), workdir)
  return workdir, _host(state)


def test_stopped_interrupted_and_resumed_run_matches_a_straight_run(straight, tmp_path, monkeypatch):
  straight_dir, want = straight
  assert int(want.step) == 6 and want.ema_params is not None

  state = train.train_and_evaluate(tiny_config(*RESUME, 'train.num_steps=4'), tmp_path)
  assert int(state.step) == 4
  assert ckpt_lib.Checkpoints(tmp_path, read_only=True).latest.latest_step() == 4

  stop_data_after(monkeypatch, 1)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(tiny_config(*RESUME), tmp_path)
  monkeypatch.undo()
  assert ckpt_lib.Checkpoints(tmp_path, read_only=True).latest.all_steps() == [2, 4, 5]

  got = _host(train.train_and_evaluate(tiny_config(*RESUME), tmp_path))
  assert int(got.step) == 6
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=jax.tree_util.keystr(path))
  assert int(got.g_opt[0].count) == 4 and int(got.d_opt[0].count) == 4  # 4 GAN steps, not 1 or 2

  # The data iterator stands at the same place: same state, same next batch.
  config = tiny_config(*RESUME)
  data_state = _data_state(tmp_path, 6)
  assert data_state == _data_state(straight_dir, 6)
  batch, want_batch = _next_batch(config, data_state), _next_batch(config, _data_state(straight_dir, 6))
  for k in ('lr', 'hr'):
    np.testing.assert_array_equal(batch[k], want_batch[k])
  assert not np.array_equal(batch['hr'], _next_batch(config, _data_state(tmp_path, 5))['hr'])


def test_checkpoint_of_another_model_is_refused_and_left_alone(straight):
  workdir, _ = straight
  before = _snapshot(workdir)
  assert any(p.startswith('checkpoints') for p in before)
  with pytest.raises(UserError, match='another model.*num_blocks'):
    train.train_and_evaluate(tiny_config(*RESUME, 'model.num_blocks=2'), workdir)
  assert _snapshot(workdir) == before
