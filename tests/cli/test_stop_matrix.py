"""Issue 25's fault matrix: SIGINT and SIGTERM sent to the real commands (train, evaluate, enhance,
convert, score, serve), run as subprocesses, at seeded moments of each one's phases. Every case must
end with 130 / 143, one `stopped by SIG...` sentence, no traceback and no segfault; a checkpoint a
stop names is whole on disk, outputs are whole or absent, no temporary file is left; the training
cases then resume with the same command to the losses of a run nobody stopped. The last test writes
what was tried to artifacts/stop_matrix.json and checks its count."""

import http.server
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest
import skimage.data
from PIL import Image

from conftest import TINY
from enhance_jax.io import checkpoints as ckpt_lib

pytestmark = pytest.mark.slow  # real commands, signalled

REPO = pathlib.Path(__file__).resolve().parents[2]
ARTIFACTS = pathlib.Path(os.environ.get('ENHANCE_JAX_ARTIFACTS', REPO / 'artifacts'))
SIGNALS = (signal.SIGINT, signal.SIGTERM)
CASES = []  # (command, phase, signal name, exit code) of every case tried, for the report
RUN = (*TINY, 'train.num_steps=30', 'train.checkpoint_every_steps=1', 'train.eval_every_steps=6',
       'train.log_every_steps=1')


def _env(**extra):
  """The commands share the session's compilation cache (conftest), so most compiles are reads."""
  return {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONFAULTHANDLER': '1',
          'JAX_COMPILATION_CACHE_DIR': jax.config.jax_compilation_cache_dir,
          'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0.2', **extra}


def _stop(command, args, phase, sigs, trigger, delay, log, env=None, cwd=None):
  """Runs `python -m enhance_jax.COMMAND ARGS`, waits for TRIGGER() (polled), sleeps DELAY, sends
  SIGS (0.3 s apart); checks a clean stop and returns the output."""
  with open(log, 'w+') as out:
    proc = subprocess.Popen([sys.executable, '-m', f'enhance_jax.{command}', *args], env=env or _env(),
                            stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not trigger():
      time.sleep(0.05)
    assert proc.poll() is None, f'{command} ended before {phase}:\n{pathlib.Path(log).read_text()[-3000:]}'
    time.sleep(delay)
    for i, sig in enumerate(sigs):
      if i:
        time.sleep(0.3)
      if proc.poll() is None:
        proc.send_signal(sig)
    try:
      rc = proc.wait(timeout=180)
    except subprocess.TimeoutExpired:  # a hang: faulthandler's dump of every thread on SIGABRT
      proc.send_signal(signal.SIGABRT)
      proc.wait(timeout=30)
      pytest.fail(f'{command} did not stop in 180 s ({phase}):\n{pathlib.Path(log).read_text()[-6000:]}')
  text = pathlib.Path(log).read_text()
  CASES.append({'command': command, 'phase': phase, 'signals': [s.name for s in sigs], 'exit': rc})
  first = sigs[0]
  assert rc == 128 + first, (command, phase, rc, text[-3000:])
  for bad in ('Traceback', 'Segmentation fault', 'Fatal Python error', 'PLEASE submit a bug report'):
    assert bad not in text, (command, phase, text[-3000:])
  said = re.findall(r'stopped by (SIG\w+)', text)
  assert said == [first.name], (command, phase, said, text[-2000:])
  return text


def _train_args(workdir):
  return ['--exp', 'esrgan_cpu', '--workdir', str(workdir), *[a for o in RUN for a in ('--set', o)]]


def _losses(workdir):
  out = {}
  path = pathlib.Path(workdir) / 'metrics.jsonl'
  for line in (path.read_text().splitlines() if path.exists() else []):
    if line.strip() and json.loads(line)['split'] == 'train':
      r = json.loads(line)
      out[r['step']] = r['g_loss']
  return out


def _check_checkpoints(workdir, text):
  """The step the sentence names is the newest whole checkpoint; no orbax temporary folder is left."""
  named = re.search(r'the checkpoint of step (\d+) holds the run', text)
  kept = ckpt_lib.verified_latest(workdir)
  if 'while starting; this run wrote nothing' in text:  # before main: the workdir is as it was
    return kept
  if named is None:
    assert kept is None and ('nothing was trained yet' in text
                             or 'no checkpoint was written yet' in text), text[-2000:]
    return None
  assert int(named.group(1)) == kept, (named.group(0), kept)
  ckpts = ckpt_lib.Checkpoints(workdir, read_only=True)
  try:
    ckpts.read_meta('latest')
  finally:
    ckpts.close()
  leftovers = [p.name for p in (pathlib.Path(workdir) / 'checkpoints').iterdir() if not p.name.isdigit()]
  assert not leftovers, leftovers
  return kept


def test_train_stops_cleanly_in_every_phase_and_resumes_to_the_same_losses(tmp_path):
  straight = tmp_path / 'straight'
  subprocess.run([sys.executable, '-m', 'enhance_jax.train', *_train_args(straight)], env=_env(),
                 check=True, capture_output=True, timeout=600)
  want = _losses(straight)
  assert sorted(want) == list(range(1, 31))

  workdir, rng = tmp_path / 'stopped', np.random.default_rng(25)
  lock = workdir / '.lock'
  progress = lambda: max(_losses(workdir), default=0)
  cases = [  # (phase, signals, trigger(steps logged before this case), delay)
      ('start-up and imports', (signal.SIGINT,), lambda base: True, rng.uniform(0.1, 1.0)),
      ('config check, data start, first compile', (signal.SIGTERM,), lambda base: holds_lock(),
       rng.uniform(0.0, 2.0)),
      ('steps', (signal.SIGINT,), lambda base: progress() >= base + 2, rng.uniform(0.0, 0.3)),
      # the second run starts once the first has stepped; it is refused (about 5 s) while the first
      # steps on, and the signal follows the refusal at once
      ('steps after a refused second run', (signal.SIGTERM,),
       lambda base: holds_lock() and progress() >= base + 1, 0.0),
      ('validation and its checkpoint', (signal.SIGTERM,),  # the step before the next validation
       lambda base: progress() >= (base // 6 + 1) * 6 - 1,
       rng.uniform(0.0, 0.4)),
      ('a second signal while stopping', (signal.SIGINT, signal.SIGINT),
       lambda base: progress() >= base + 1, rng.uniform(0.0, 0.2)),
  ]
  for i, (phase, sigs, when, delay) in enumerate(cases):
    base, started = progress(), time.time()
    holds_lock = lambda started=started: lock.exists() and lock.stat().st_mtime >= started  # written anew
    trigger = lambda when=when, base=base: when(base)
    if phase == 'steps after a refused second run':  # the report's case: a refused run lost the first's
      trigger = _refusing_second_run(workdir, trigger, tmp_path)
    text = _stop('train', _train_args(workdir), phase, sigs, trigger, float(delay),
                 tmp_path / f'train_{i}.log')
    _check_checkpoints(workdir, text)
    assert progress() < 30, f'the run finished before the {phase} case; give it more steps'
  done = subprocess.run([sys.executable, '-m', 'enhance_jax.train', *_train_args(workdir)], env=_env(),
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
  got = _losses(workdir)
  assert sorted(got) == sorted(want)
  for step in want:  # the same losses as the run nobody stopped
    assert got[step] == pytest.approx(want[step], rel=1e-5, abs=1e-7), (step, got[step], want[step])


def _refusing_second_run(workdir, trigger, tmp_path):
  """TRIGGER, then a second `train` on the same workdir, which must be refused (exit 2) first."""
  def fire():
    if not trigger():
      return False
    second = subprocess.run([sys.executable, '-m', 'enhance_jax.train', *_train_args(workdir)],
                            env=_env(), capture_output=True, text=True, timeout=300)
    (tmp_path / 'second.log').write_text(second.stdout + second.stderr)
    assert second.returncode == 2 and 'another run' in second.stderr, second.stderr[-2000:]
    return True
  return fire


def _photos(folder, sizes=((120, 160), (96, 128), (140, 100))):
  folder.mkdir(parents=True, exist_ok=True)
  photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()]
  for i, ((h, w), photo) in enumerate(zip(sizes, photos)):
    Image.fromarray(photo[:h, :w]).save(folder / f'photo_{i}.png')
  return folder


def _whole_images(folder):
  """Every file under FOLDER is a whole image (decodes to its last row); no temporary file is left."""
  files = [p for p in pathlib.Path(folder).rglob('*') if p.is_file()] if pathlib.Path(folder).exists() else []
  for p in files:
    assert '.tmp' not in p.name and not p.name.startswith('.'), p
    if p.suffix == '.png':
      with Image.open(p) as im:
        im.load()
  return files


FRACTIONS = {'start-up': 0.05, 'early': 0.25, 'middle': 0.45, 'late': 0.7}  # of an unstopped run's time


def _timed(command, args_for, log, env=None):
  """Seconds an unstopped run of the command takes (it must succeed), the faster of two (the second
  reads its compiled programs from the cache, as the stopped runs do): the scale of the seeded moments."""
  times = []
  for attempt in range(2):
    start = time.time()
    done = subprocess.run([sys.executable, '-m', f'enhance_jax.{command}', *args_for(attempt)],
                          env=env or _env(),
                          capture_output=True, text=True, timeout=600)
    pathlib.Path(log).write_text(done.stdout + done.stderr)
    assert done.returncode == 0, (command, done.stdout[-2000:] + done.stderr[-2000:])
    times.append(time.time() - start)
  return min(times)


def _moments(seed, seconds):
  """(phase, delay) at each fraction of SECONDS, jittered by a seeded 5 %."""
  rng = np.random.default_rng(seed)
  return [(phase, seconds * f * float(rng.uniform(0.95, 1.05))) for phase, f in FRACTIONS.items()]


def test_enhance_stops_cleanly(l1_run, tmp_path):
  photos = _photos(tmp_path / 'in')
  args = lambda out: ['--workdir', str(l1_run), '-o', str(out), str(photos)]
  seconds = _timed('enhance', lambda k: args(tmp_path / f'clean{k}'), tmp_path / 'clean.log')
  for i, sig in enumerate(SIGNALS):
    for phase, delay in _moments(i, seconds):
      out = tmp_path / f'out_{sig.name}_{phase}'
      _stop('enhance', args(out), phase, (sig,), lambda: True, delay, tmp_path / f'{out.name}.log')
      _whole_images(out)
    out = tmp_path / f'out_{sig.name}_writing'  # once the first output is on disk
    written = lambda out=out: out.exists() and any(not p.name.startswith('.') for p in out.iterdir())
    _stop('enhance', args(out), 'writing outputs', (sig,), written, 0.0, tmp_path / f'{out.name}.log')
    assert len(_whole_images(out)) >= 1


def test_evaluate_stops_cleanly(l1_run, tmp_path):
  args = lambda out: ['--workdir', str(l1_run), '--out', str(out)]
  seconds = _timed('evaluate', lambda k: args(tmp_path / f'clean{k}'), tmp_path / 'clean.log')
  for i, sig in enumerate(SIGNALS):
    for phase, delay in _moments(10 + i, seconds):
      out = tmp_path / f'eval_{sig.name}_{phase}'
      _stop('evaluate', args(out), phase, (sig,), lambda: True, delay, tmp_path / f'{out.name}.log')
      _whole_images(out)
      if (out / 'metrics.json').exists():  # written whole, or not at all
        json.loads((out / 'metrics.json').read_text())


def test_convert_stops_cleanly(tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks.torch_reference import models as torch_models  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  weights_file = tmp_path / 'rrdb_x4.pth'
  torch.save({'params_ema': torch_models.RRDBNet(num_feat=16, num_block=2, num_grow_ch=8,
                                                 scale=4).state_dict()}, weights_file)
  seconds = _timed('convert', lambda k: [str(weights_file), '--out', str(tmp_path / f'clean{k}')],
                   tmp_path / 'clean.log')
  for i, sig in enumerate(SIGNALS):
    for phase, delay in _moments(20 + i, seconds):
      out = tmp_path / f'model_{sig.name}_{phase}'
      _stop('convert', [str(weights_file), '--out', str(out)], phase, (sig,), lambda: True, delay,
            tmp_path / f'{out.name}.log')
      if out.exists():  # whole: both files, readable
        assert {p.name for p in out.iterdir()} == {'model.json', 'variables.npz'}
        json.loads((out / 'model.json').read_text())
        np.load(out / 'variables.npz')
      assert not [p for p in tmp_path.iterdir() if p.name.startswith(f'.{out.name}')]


def test_score_stops_cleanly(tmp_path):
  from benchmarks.torch_reference import metric_references  # pylint: disable=g-import-not-at-top
  photos = _photos(tmp_path / 'in', sizes=((256, 300), (300, 256), (200, 400)))
  args = ['--metric', 'niqe', '--niqe-params', str(metric_references.pristine_params_path()), str(photos)]
  seconds = _timed('score', lambda k: args, tmp_path / 'clean.log')
  for i, sig in enumerate(SIGNALS):
    for phase, delay in _moments(30 + i, seconds):
      _stop('score', args, phase, (sig,), lambda: True, delay, tmp_path / f'score_{sig.name}_{phase}.log')
      assert sorted(p.name for p in photos.iterdir()) == ['photo_0.png', 'photo_1.png', 'photo_2.png']


@pytest.mark.parametrize('phase', ['start-up and model load', 'serving'])
def test_serve_stops_cleanly_and_removes_its_files(l1_run, tmp_path, phase):
  for sig in SIGNALS:
    with socket.socket() as s:
      s.bind(('127.0.0.1', 0))
      port = s.getsockname()[1]
    log = tmp_path / f'serve_{sig.name}.log'
    serving = lambda: log.exists() and 'files under' in log.read_text()
    text = _stop('serve', ['--workdir', str(l1_run), '--port', str(port), '--tile', '64', '--tile-pad', '8'],
                 phase, (sig,),
                 serving if phase == 'serving' else (lambda: True), 0.5 if phase == 'serving' else 2.0,
                 log)
    root = re.search(r'files under (\S+)', text)
    if root:
      assert not pathlib.Path(root.group(1)).exists()


class _SlowFile(http.server.BaseHTTPRequestHandler):
  """Serves 4 MB of zeros at about 1 MB/s, whatever the path: a download long enough to stop."""

  def do_GET(self):  # pylint: disable=invalid-name
    self.send_response(200)
    self.send_header('Content-Length', str(4 << 20))
    self.end_headers()
    try:
      for _ in range(64):
        self.wfile.write(bytes(64 << 10))
        time.sleep(0.06)
    except OSError:
      pass

  def log_message(self, *args):
    del args


def test_a_stopped_download_leaves_no_partial_file_in_the_model_cache(tmp_path):
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _SlowFile)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  cache = tmp_path / 'cache'
  env = _env(ENHANCE_JAX_MODELS=str(cache),
             ENHANCE_JAX_MODEL_MIRROR=f'http://127.0.0.1:{server.server_address[1]}/files')
  photos = _photos(tmp_path / 'in')
  try:
    for sig in SIGNALS:
      part = lambda: cache.exists() and any('.part-' in p.name for p in cache.iterdir())
      _stop('enhance', ['--model', 'realesr-general-x4v3', '-o', str(tmp_path / 'out'), str(photos)],
            'downloading a released model', (sig,), part, 0.5, tmp_path / f'download_{sig.name}.log',
            env=env)
      assert not [p.name for p in cache.iterdir() if '.part-' in p.name or p.suffix == '.pth']
  finally:
    server.shutdown()


def test_the_matrix_reports_what_it_tried():
  """Last in the module: the (command, phase, signal) cases above, written to artifacts/."""
  ARTIFACTS.mkdir(parents=True, exist_ok=True)
  (ARTIFACTS / 'stop_matrix.json').write_text(json.dumps(CASES, indent=1))
  commands = {c['command'] for c in CASES}
  print(f'stop matrix: {len(CASES)} (command, phase, signal) cases over {sorted(commands)}')
  assert commands == {'train', 'evaluate', 'enhance', 'convert', 'score', 'serve'}, commands
  assert len(CASES) >= 40, len(CASES)
