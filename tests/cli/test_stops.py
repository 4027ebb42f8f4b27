"""stops.py's policy in this process: a deferred signal waits for `check`, a second stops at once, a
held block finishes first and says so, handlers are put back, and only enhance_jax's commands are
recognised as launched. (The real commands, signalled as subprocesses: test_stop_matrix.py.)"""

import os
import signal
import time
import types

import pytest

from enhance_jax import stops


def _send(sig):
  os.kill(os.getpid(), sig)  # delivered to the main thread at the next bytecode


def test_a_deferred_signal_waits_for_check_and_a_second_stops_at_once(capsys):
  before = signal.getsignal(signal.SIGTERM)
  with stops.deferred():
    _send(signal.SIGTERM)
    assert stops.pending() == signal.SIGTERM  # kept, not raised
    with pytest.raises(stops.Stopped) as stop:
      stops.check()
    assert stop.value.exit_code == 143 and stop.value.name == 'SIGTERM'
  assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back
  with stops.deferred():
    _send(signal.SIGINT)
    with pytest.raises(stops.Stopped) as stop:
      _send(signal.SIGINT)
      for _ in range(1000):  # the second is delivered within a few bytecodes
        pass
    assert stop.value.exit_code == 130
  err = capsys.readouterr().err
  assert 'send it again to stop at once' in err and 'received again: stopping at once' in err


def test_a_held_block_finishes_before_the_stop_and_says_why(capsys):
  done = []
  with stops.deferred():
    with stops.held('the checkpoint of step 7 is saved'):
      _send(signal.SIGINT)
      _send(signal.SIGINT)
      done.append('saved')
    assert done == ['saved'] and stops.pending() == signal.SIGINT
    with pytest.raises(stops.Stopped):
      stops.check()
  err = capsys.readouterr().err
  assert 'SIGINT received: stopping once the checkpoint of step 7 is saved.' in err
  assert 'received again: still stopping once' in err


def test_only_enhance_jax_commands_count_as_launched():
  assert stops.launched_command(['python', '-m', 'enhance_jax.train', '--exp', 'x']) == 'train'
  assert stops.launched_command(['python', '-m', 'enhance_jax.serve']) == 'serve'
  assert stops.launched_command(['python', '-m', 'pytest', '-q']) is None
  assert stops.launched_command(['python', '-m', 'enhance_jax.models']) is None
  assert stops.launched_command(['python', 'script.py']) is None
  assert stops.stop_sentence(stops.Stopped(signal.SIGTERM), 'x is kept') == 'stopped by SIGTERM; x is kept.'


def test_a_stop_swallowed_by_a_gc_callback_is_sent_again():
  """Python ignores an exception raised in a garbage-collector callback (JAX registers one); the
  hook re-sends that stop's signal so it lands in ordinary code."""
  seen = []
  hook = stops._unraisable(seen.append)  # pylint: disable=protected-access
  with stops.deferred():
    hook(types.SimpleNamespace(exc_value=ValueError('other'), exc_type=ValueError))
    assert len(seen) == 1  # anything else goes to the previous hook
    hook(types.SimpleNamespace(exc_value=stops.Stopped(signal.SIGTERM), exc_type=stops.Stopped))
    deadline = time.time() + 5
    while stops.pending() is None and time.time() < deadline:
      time.sleep(0.01)
    assert stops.pending() == signal.SIGTERM and len(seen) == 1
