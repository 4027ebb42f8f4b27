"""Load test of the compare page's API: CLIENTS concurrent clients post real photos of mixed sizes
(and some bad uploads) to /api/enhance of a running `python -m enhance_jax.serve` on 127.0.0.1 for
SECONDS, against two models; others hang up mid-upload or before reading the answer.

  python -m benchmarks.serve_load                       # 16 clients, 60 s, realesr-animevideov3 x2 + x4
  python -m benchmarks.serve_load --workdir A --workdir B --seconds 20

It writes latency p50/p99, requests/s, the counts by outcome and the server's RSS after warm-up and
after the run to benchmarks/results/{device}_serve_load.json; it fails (exit 1) on any 5xx, a good
request answered with the wrong size or status, a bad one not refused with a 4xx, an upload left in
the server's folder, RSS past the stated margin, or a server that does not end with 143 on SIGTERM
and remove its files. The tests run it shorter (tests/benchmarks/test_serve_load.py).
"""

import argparse
import concurrent.futures
import io
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import requests
import skimage.data
from PIL import Image

from benchmarks.throughput import versions, write_json

RESULTS = pathlib.Path(__file__).with_name('results')
SIDES = (48, 64, 80, 96, 128)      # input sides the clients draw from (each is a new window shape once)
BAD_SHARE = 0.1                     # share of uploads that are bad and must get a 4xx
RSS_MARGIN = 1.3                    # RSS after the run may be at most this times RSS after warm-up (which
                                    # includes a quarter-length run at full load: the working memory)


def photos(seed=0):
  """(name, PNG bytes, (h, w)) crops of skimage's photos at mixed sizes."""
  rng = np.random.default_rng(seed)
  sources = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(),
             skimage.data.rocket()]
  out = []
  for i, src in enumerate(sources):
    for h in SIDES:
      w = int(rng.choice(SIDES))
      y, x = rng.integers(0, src.shape[0] - h), rng.integers(0, src.shape[1] - w)
      buf = io.BytesIO()
      Image.fromarray(src[y:y + h, x:x + w]).save(buf, format='PNG')
      out.append((f'photo{i}_{h}x{w}.png', buf.getvalue(), (h, w)))
  return out


def bad_uploads(good_png):
  """(name, bytes, expected 4xx statuses): empty, not an image, truncated, too small (3x3)."""
  tiny = io.BytesIO()
  Image.new('RGB', (3, 3)).save(tiny, format='PNG')  # under tiling.MIN_SIDE (4)
  return [('empty.png', b'', (400,)), ('notes.png', b'not a picture\n' * 40, (415,)),
          ('cut.png', good_png[:len(good_png) // 2], (415,)), ('tiny.png', tiny.getvalue(), (400,))]


def rss_bytes(pid):
  """Resident memory of process PID (Linux /proc)."""
  for line in pathlib.Path(f'/proc/{pid}/status').read_text().splitlines():
    if line.startswith('VmRSS:'):
      return int(line.split()[1]) * 1024
  raise RuntimeError(f'no VmRSS for pid {pid}')


def start_server(sources, port, log, extra=()):
  """`python -m enhance_jax.serve` on 127.0.0.1:PORT: (process, base url, its temporary folder)."""
  args = [a for s in sources for a in (('--workdir', s) if os.path.exists(s) else ('--model', s))]
  proc = subprocess.Popen([sys.executable, '-m', 'enhance_jax.serve', *args, '--port', str(port),
                           *extra], stdout=log, stderr=subprocess.STDOUT)
  url, deadline = f'http://127.0.0.1:{port}', time.time() + 600
  while time.time() < deadline:
    if proc.poll() is not None:
      log.seek(0)
      raise RuntimeError(f'the server exited ({proc.returncode}):\n{log.read()[-3000:]}')
    try:
      if requests.get(url + '/api/models', timeout=5).ok:
        break
    except requests.ConnectionError:
      time.sleep(0.5)
  else:
    proc.kill()
    raise RuntimeError('the server did not answer in 600 s')
  log.seek(0)
  root = pathlib.Path(re.search(r'files under (\S+)', log.read()).group(1))
  return proc, url, root


def post(url, name, content, models):
  return requests.post(url + '/api/enhance', files={'image': (name, content)},
                       data=[('model', m) for m in models], timeout=600)


def hang_up(port, content, mid_upload):
  """A client that sends half the multipart body and closes (MID_UPLOAD), or sends it all and closes
  before reading the answer."""
  boundary = 'enhanceJaxLoad'
  body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
          f'Content-Type: image/png\r\n\r\n').encode() + content + f'\r\n--{boundary}--\r\n'.encode()
  head = (f'POST /api/enhance HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; '
          f'boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n').encode()
  with socket.create_connection(('127.0.0.1', port), timeout=30) as s:
    s.sendall(head + (body[:len(body) // 2] if mid_upload else body))
    time.sleep(0.05)


def check_answer(r, size, models, scales):
  """Problems with answer R to a good upload of SIZE (h, w) for MODELS (none: all)."""
  if r.status_code != 200:
    return [f'status {r.status_code}: {r.text[:200]}']
  body, problems = r.json(), []
  for entry in body['results']:
    s = entry['scale']
    if (entry['height'], entry['width']) != (size[0] * s, size[1] * s):
      problems.append(f'{entry["model"]}: {entry["width"]}x{entry["height"]} for {size} x{s}')
  got = {e['model'] for e in body['results'] if not e['baseline']}
  if got != set(models or scales):
    problems.append(f'models {sorted(got)} for {sorted(models or scales)}')
  return problems


def run(sources, clients=16, seconds=60.0, port=None, seed=0, log_path=None, server_args=()):
  """The load test; returns its record (see the module docstring). Raises nothing for a failed
  check: `record['problems']` lists them."""
  good = photos(seed)
  bad = bad_uploads(good[0][1])
  if port is None:
    with socket.socket() as s:
      s.bind(('127.0.0.1', 0))
      port = s.getsockname()[1]
  log = open(log_path, 'w+') if log_path else tempfile.TemporaryFile('w+')  # pylint: disable=consider-using-with
  proc, url, root = start_server(sources, port, log, server_args)
  problems, stats = [], {'good': 0, 'bad': 0, 'hang_ups': 0, '5xx': 0}
  latencies, lock = [], threading.Lock()
  try:
    info = requests.get(url + '/api/models', timeout=30).json()
    scales = {m['name']: m['scale'] for m in info['models']}
    names = list(scales)
    # Warm-up: every size once through every model (the compiled programs), then the same load for a
    # quarter of the run (the working memory of CLIENTS requests at once): RSS after it is the base.
    t0 = time.time()
    for name, content, size in good:
      r = post(url, name, content, ())
      problems += [f'warm-up {name}: {p}' for p in check_answer(r, size, (), scales)]

    def client(index, seconds):
      crng = np.random.default_rng(seed * 1000 + index + int(seconds * 10))
      deadline = time.time() + seconds
      while time.time() < deadline:
        draw = crng.random()
        if draw < 0.05:  # hang up mid-upload or before the answer
          hang_up(port, good[int(crng.integers(len(good)))][1], mid_upload=bool(crng.random() < 0.5))
          with lock:
            stats['hang_ups'] += 1
          continue
        models = [names[int(crng.integers(len(names)))]] if crng.random() < 0.7 else []
        if draw < 0.05 + BAD_SHARE:
          name, content, statuses = bad[int(crng.integers(len(bad)))]
          r = post(url, name, content, models)
          with lock:
            stats['bad'] += 1
            stats['5xx'] += r.status_code >= 500
            if r.status_code not in statuses:
              problems.append(f'bad {name}: status {r.status_code}, wanted {statuses}')
          continue
        name, content, size = good[int(crng.integers(len(good)))]
        start = time.perf_counter()
        r = post(url, name, content, models)
        took = time.perf_counter() - start
        found = check_answer(r, size, models, scales)
        with lock:
          stats['good'] += 1
          stats['5xx'] += r.status_code >= 500
          latencies.append(took)
          problems.extend(f'{name}: {p}' for p in found)

    def load(seconds):
      with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client, i, seconds) for i in range(clients)]:
          f.result()

    load(seconds / 4)
    warm_seconds = time.time() - t0
    rss_warm = rss_bytes(proc.pid)
    latencies.clear()
    stats.update(good=0, bad=0, hang_ups=0)
    start = time.time()
    load(seconds)
    elapsed = time.time() - start
    time.sleep(1.0)  # the hang-ups' requests finish on the server
    rss_after = rss_bytes(proc.pid)
    left = sorted(p.name for p in (root / 'uploads').iterdir())
    if left:
      problems.append(f'uploads left in the server folder: {left[:5]}')
    if rss_after > RSS_MARGIN * rss_warm:
      problems.append(f'RSS grew from {rss_warm >> 20} MiB after warm-up to {rss_after >> 20} MiB')
    if stats['5xx']:
      problems.append(f'{stats["5xx"]} answers were 5xx')
  finally:
    proc.send_signal(signal.SIGTERM)
    try:
      code = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
      proc.kill()
      code = None
    log.seek(0)
    tail = log.read()[-2000:]
    log.close()
  if code != 143 or 'stopped by SIGTERM' not in tail:
    problems.append(f'the server ended with {code} on SIGTERM:\n{tail}')
  if root.exists():
    problems.append(f'the server left its folder {root}')
  lat = np.asarray(latencies) if latencies else np.asarray([np.nan])
  return {
      'benchmark': 'serve_load', 'models': names, 'clients': clients, 'seconds': round(elapsed, 1),
      'warm_up_seconds': round(warm_seconds, 1), 'photo_sides': list(SIDES),
      'bad_share': BAD_SHARE, 'requests': stats, 'requests_per_s': round(stats['good'] / elapsed, 3),
      'latency_p50_s': round(float(np.percentile(lat, 50)), 3),
      'latency_p99_s': round(float(np.percentile(lat, 99)), 3),
      'rss_after_warm_up_mib': rss_warm >> 20, 'rss_after_run_mib': rss_after >> 20,
      'rss_margin': RSS_MARGIN, 'server_exit_on_sigterm': code, 'problems': problems[:50],
      'versions': versions(),
  }


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--workdir', action='append', default=[], help='a run or converted model (repeatable)')
  p.add_argument('--model', action='append', default=[], help='a released model by name (repeatable)')
  p.add_argument('--clients', type=int, default=16)
  p.add_argument('--seconds', type=float, default=60.0)
  p.add_argument('--device', default='cpu-2core', help='the results file prefix')
  p.add_argument('--out', default=None, help='results JSON (default results/DEVICE_serve_load.json)')
  args = p.parse_args(argv)
  sources = args.workdir + args.model or ['realesr-animevideov3-x2', 'realesr-animevideov3-x4']
  record = run(sources, args.clients, args.seconds)
  write_json(args.out or RESULTS / f'{args.device}_serve_load.json', {**record, 'device': args.device})
  print(json.dumps({k: v for k, v in record.items() if k != 'versions'}, indent=2))
  return 1 if record['problems'] else 0


if __name__ == '__main__':
  sys.exit(main())
