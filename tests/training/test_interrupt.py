"""An interrupted or failed run keeps its earlier checkpoints readable, and the next run resumes."""

import pytest

from conftest import stop_data_after
from conftest import tiny_config
from enhance_jax import evaluate
from enhance_jax import train
from enhance_jax.io import checkpoints as ckpt_lib
from enhance_jax.training import train_steps

pytestmark = pytest.mark.slow  # trainings stopped by signals


def test_ctrl_c_saves_then_resume_finishes(tmp_path, monkeypatch):
  config = tiny_config()
  stop_data_after(monkeypatch, 3, KeyboardInterrupt())
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(config, tmp_path)
  ckpts = ckpt_lib.Checkpoints(tmp_path, read_only=True)
  assert ckpts.latest.all_steps() == [2, 3]  # epoch end at 2, the interrupt's save at 3
  monkeypatch.undo()
  state = train.train_and_evaluate(config, tmp_path)
  assert int(state.step) == 6
  assert evaluate.run(tmp_path, 'latest')['checkpoint']['step'] == 6


@pytest.mark.parametrize('gan_call, saved', [(2, [2]), (3, [2, 4])])
def test_ctrl_c_as_a_step_returns_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys,
                                                           gan_call, saved):
  """An interrupt that lands as the jitted step returns, before the loop takes the new state: the
  step is lost (its donated input too, at the 2nd call; the 3rd follows the step-4 checkpoint), and
  the run ends on its last checkpoint."""
  real_jit_steps, calls = train_steps.jit_steps, []

  def jit_steps(task, mesh):
    steps = real_jit_steps(task, mesh)
    real_gan = steps['gan']

    def gan(*args):
      out = real_gan(*args)
      calls.append(1)
      if len(calls) == gan_call:
        raise KeyboardInterrupt
      return out

    return {**steps, 'gan': gan}

  monkeypatch.setattr(train_steps, 'jit_steps', jit_steps)
  config = tiny_config()
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(config, tmp_path)
  assert f'the checkpoint of step {saved[-1]} holds the run' in capsys.readouterr().out
  ckpts = ckpt_lib.Checkpoints(tmp_path, read_only=True)
  assert ckpts.latest.all_steps() == saved  # and readable: resuming is test_ctrl_c_saves_then_...
  assert evaluate.run(tmp_path, 'latest')['checkpoint']['step'] == saved[-1]


def test_failed_run_leaves_earlier_checkpoints_readable(tmp_path, monkeypatch):
  config = tiny_config()
  stop_data_after(monkeypatch, 5, RuntimeError('disk on fire'))
  with pytest.raises(RuntimeError, match='disk on fire'):
    train.train_and_evaluate(config, tmp_path)
  ckpts = ckpt_lib.Checkpoints(tmp_path, read_only=True)
  assert ckpts.latest.all_steps() == [2, 4]
  result = evaluate.run(tmp_path, 'latest')
  assert result['checkpoint']['step'] == 4
  assert result['mean']['model']['mse'] > 0


def test_nan_loss_stops_with_the_step_range(tmp_path, monkeypatch):
  config = tiny_config('train.log_every_steps=1')
  real = train._check_finite  # pylint: disable=protected-access

  def poisoned(host, step, n):
    return real({**host, 'g_loss': float('nan')} if step == 3 else host, step, n)

  monkeypatch.setattr(train, '_check_finite', poisoned)
  with pytest.raises(FloatingPointError, match='between steps 3 and 3'):
    train.train_and_evaluate(config, tmp_path)
  assert ckpt_lib.Checkpoints(tmp_path, read_only=True).latest.all_steps() == [2]
