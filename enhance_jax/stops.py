"""How a command stops on SIGINT (Ctrl-C) or SIGTERM (a scheduler): an ordinary event, never a crash.

From the moment a command starts (`install`, run by the package before the heavy imports when a
command is launched) a signal ends it at once, as nothing is written yet; once its `main` runs
(`begin`) both signals raise `Stopped`, and `main` turns that into one sentence of what was kept and
exit code 128 + the signal (130, 143). Work that must not be cut
(saving a checkpoint) runs `held`: a signal waits for it and says so. A training loop runs
`deferred`: the first signal stops it where its state is whole (the end of the step, or of the
compile it is in), a second stops it at once. After a stop, `exit_now` ends the process without
Python's teardown, where XLA threads still busy with a compile would crash it (exit 139).
"""

import contextlib
import dataclasses
import os
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)
COMMANDS = ('train', 'evaluate', 'enhance', 'convert', 'score', 'serve')  # enhance_jax.NAME CLIs


class Stopped(KeyboardInterrupt):
  """A stop asked by SIGNUM (a KeyboardInterrupt, so code that cleans up after Ctrl-C does so)."""

  def __init__(self, signum=signal.SIGINT):
    super().__init__(signum)
    self.signum = int(signum)

  @property
  def name(self) -> str:
    return signal.Signals(self.signum).name

  @property
  def exit_code(self) -> int:
    return 128 + self.signum


@dataclasses.dataclass
class _Policy:
  """What a signal does now: 'startup' (exit: nothing is written yet), 'raise' (Stopped at once),
  'defer' (the first is kept for `check`), 'hold' (kept until WHAT is finished); PENDING is the
  signal kept, if any."""
  mode: str = 'startup'
  what: str = ''
  pending: int | None = None


_POLICY = _Policy()  # one per process, as signal handlers are


def _say(text):
  print(text, file=sys.stderr, flush=True)


def _handler(signum, frame):
  del frame
  name = signal.Signals(signum).name
  if _POLICY.mode == 'startup':
    _say(f'stopped by {name} while starting; this run wrote nothing.')
    exit_now(128 + signum)
  if _POLICY.mode == 'hold':
    again = _POLICY.pending is not None
    _POLICY.pending = _POLICY.pending or signum
    _say(f'{name} received{" again" if again else ""}: {"still " if again else ""}stopping once '
         f'{_POLICY.what}.')
    return
  if _POLICY.mode == 'defer' and _POLICY.pending is None:
    _POLICY.pending = signum
    _say(f'{name} received: stopping once the current step (or its compile) is done; send it again '
         'to stop at once.')
    return
  _quiet_threads()
  if _POLICY.mode == 'defer':
    _say(f'{name} received again: stopping at once.')
    raise Stopped(_POLICY.pending)
  raise Stopped(signum)


class _MainThreadOnly:
  """A stream that drops what threads other than the main one write to it."""

  def __init__(self, stream):
    self._stream = stream

  def write(self, text):
    if threading.current_thread() is threading.main_thread():
      return self._stream.write(text)
    return len(text)

  def __getattr__(self, name):
    return getattr(self._stream, name)


def _quiet_threads():
  """Once a stop is raised, helper threads that fail because of it (orbax's event loops, closed under
  them) stay quiet: the stop's sentence is what the user reads, then the process ends. Only in a
  launched command: a program that called the trainer keeps its own streams and hooks."""
  if launched_command() is None:
    return
  threading.excepthook = lambda args: None
  if not isinstance(sys.stderr, _MainThreadOnly):
    sys.stderr = _MainThreadOnly(sys.stderr)


def _unraisable(hook):
  """sys.unraisablehook that re-sends a Stopped Python swallowed (raised inside a garbage-collector
  callback or a __del__, where exceptions are 'ignored'), so the stop lands in ordinary code."""
  def redeliver(unraisable):
    if isinstance(unraisable.exc_value, Stopped):
      threading.Timer(0.01, os.kill, (os.getpid(), unraisable.exc_value.signum)).start()
      return
    hook(unraisable)
  redeliver.redelivers = True
  return redeliver


def install(mode='startup'):
  """Both signals go to this module's handler from now on, in MODE (main thread only: Python
  delivers signals there)."""
  if threading.current_thread() is threading.main_thread():
    _POLICY.mode, _POLICY.pending = mode, None
    for sig in SIGNALS:
      signal.signal(sig, _handler)
    if not getattr(sys.unraisablehook, 'redelivers', False):
      sys.unraisablehook = _unraisable(sys.unraisablehook)


def begin():
  """A command's main has started: from now on signals raise Stopped, for main to say what it kept
  (only in a launched command: a main called from Python leaves the caller's handlers alone)."""
  if launched_command() is not None:
    install('raise')


def launched_command(argv=None):
  """The NAME of `python -m enhance_jax.NAME` when this process was started as one of COMMANDS."""
  argv = list(getattr(sys, 'orig_argv', []) if argv is None else argv)
  if '-m' in argv[:-1]:
    module = argv[argv.index('-m') + 1]
    prefix, _, name = module.partition('.')
    if prefix == 'enhance_jax' and name in COMMANDS:
      return name
  return None


def check():
  """Raises Stopped when a deferred or held signal is waiting."""
  if _POLICY.pending is not None:
    raise Stopped(_POLICY.pending)


@contextlib.contextmanager
def deferred():
  """Inside, the first signal is kept for `check` (called where the work is whole); a second raises.
  Installs this module's handler for the block (also when the trainer is called from Python), and
  puts the previous handlers back after it."""
  on_main = threading.current_thread() is threading.main_thread()
  previous = {sig: signal.getsignal(sig) for sig in SIGNALS} if on_main else {}
  before = dataclasses.replace(_POLICY)
  _POLICY.mode, _POLICY.pending = 'defer', None
  for sig in previous:
    signal.signal(sig, _handler)
  try:
    yield
  finally:  # a signal kept but not acted on (the run ended first) goes with the block
    _POLICY.mode, _POLICY.what, _POLICY.pending = before.mode, before.what, before.pending
    for sig, handler in previous.items():
      signal.signal(sig, handler)


@contextlib.contextmanager
def held(what: str, stop_after: bool = True):
  """Inside, signals wait for the block (WHAT says when it is done: 'the checkpoint of step 7 is
  saved'; said once per signal); after it, a kept signal raises
  (STOP_AFTER; False where the caller is stopping already), unless an enclosing `deferred` block
  stops at its own check."""
  before = dataclasses.replace(_POLICY)
  _POLICY.mode, _POLICY.what = 'hold', what
  try:
    yield
  finally:
    _POLICY.mode, _POLICY.what = before.mode, before.what
  if before.mode == 'raise' and stop_after:
    check()


def pending() -> int | None:
  return _POLICY.pending


def stop_sentence(stop: Stopped, kept: str) -> str:
  """The one sentence a stopped command prints: which signal, and what is kept."""
  return f'stopped by {stop.name}; {kept}.'


def exit_now(code: int):
  """Ends the process with CODE after flushing its output, skipping interpreter teardown (XLA's
  compile threads may still run; tearing Python down under them segfaults). Files are closed first
  by the callers; nothing else is written after a stop."""
  for stream in (sys.stdout, sys.stderr):
    with contextlib.suppress(Exception):
      stream.flush()
  os._exit(code)


def finish(code: int):
  """A command's exit: `exit_now` after a stop (130, 143), else the ordinary sys.exit."""
  if code in (128 + sig for sig in SIGNALS):
    exit_now(code)
  sys.exit(code)
