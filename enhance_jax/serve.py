"""Report 002's compare page: upload images, enhance them with several models, compare the results
side by side with their NIMA scores; and the JSON API the page runs on.

  pip install -e '.[serve]'
  python -m enhance_jax.serve --workdir runs/edsr_nima --workdir models/realesrgan_x4 --nima runs/nima
  python -m enhance_jax.serve --model realesrgan-x4plus --model realesr-animevideov3-x2
  python -m enhance_jax.serve                      # every released model installed or cached

Each --model is a released model by name (enhance --list-models); each --workdir is a training run, a converted model directory (enhance_jax.convert) or a folder of
them (every restorable run or model inside is served, named `FOLDER (experiment)`). Models load once
at start; images go through the tiled enhance path (one compiled program per model and window shape,
reused by every request; bf16 on an accelerator). --nima (a `nima` run, converted NIMA or weights
file) adds NIMA mean scores; without it they are null. --niqe adds BasicSR's NIQE (no reference,
lower is more natural; null for an image under 96 pixels a side), its pristine parameters from
--niqe-params or found as `score --metric niqe` finds them.

API (the page uses it too):
  GET  /api/models  -> {"models": [{"name", "scale", "experiment", "source", "step", "programs"}],
                        "nima": bool, "niqe": bool,
                        "max_pixels", "max_upload_bytes"} ("programs": compiled so far)
  POST /api/enhance (multipart: `image` the file, `model` zero or more times (none = all), `test`
        "true" to score the image as a test image: its bicubic downscale by the model's scale is
        enhanced and compared with it by PSNR/SSIM)
       -> {"id", "input": {"name", "width", "height", "nima", "nima_std", "niqe", "url"},
           "results": [{"model", "scale", "width", "height", "nima", "nima_std", "niqe", "seconds", "url",
                        "baseline", "psnr", "ssim"}], "zip": url of every image of the request}
  GET  /results/ID/FILE.png serves an image; GET /api/zip?file=ID/FILE.png&file=... a zip of them.
Bad uploads get a 4xx with {"error": one sentence}: 400 no image field, empty or tiny file, unknown
model; 413 over --max-upload-mb or --max-pixels (decompression bombs included); 415 not an image.
Uploads and results live only under the server's own temporary directory, removed at exit.
"""

import argparse
import dataclasses
import io
import os
import pathlib
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
import zipfile

import jax
import numpy as np
from PIL import Image

from enhance_jax import stops
from enhance_jax.errors import UserError
from enhance_jax.eval import evaluators
from enhance_jax.eval import niqe as niqe_lib
from enhance_jax.infer import restoring
from enhance_jax.infer import scoring
from enhance_jax.infer import tiling
from enhance_jax.io import image_io
from enhance_jax.io import zoo

STATIC = pathlib.Path(__file__).with_name('static')
MAX_PIXELS = 4_000_000        # input pixels per image (a 2000 x 2000 photo)
MAX_UPLOAD_MB = 25
KEEP_JOBS = 64                # requests whose images stay downloadable (older ones are removed)
NIMA_SIZE = 224               # NIMA scores a 224 x 224 resize (the score CLI's default): one program
CHUNK = 1 << 20


BUCKET = 128  # small uploads are mirrored out to multiples of this: few compiled programs per model


class RequestError(Exception):
  """A request the server refuses: an HTTP status and one sentence for the user."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status, self.message = status, message


@dataclasses.dataclass
class Model:
  """A served generator: its page name, scale, where it came from, and its Enhancer."""
  name: str
  scale: int
  experiment: str
  source: str
  step: int
  enhancer: tiling.Enhancer

  def info(self) -> dict:
    return {'name': self.name, 'scale': self.scale, 'experiment': self.experiment,
            'source': self.source, 'step': self.step, 'programs': self.enhancer.compiles}


def _restorable(path: pathlib.Path) -> bool:
  try:
    return restoring.kind_of(path) in ('workdir', 'model_dir')
  except UserError:
    return False


def discover(paths) -> list[tuple[str, restoring.Restored]]:
  """[(page name, Restored)] for PATHS: each a run, a converted model, a weights file or a released
  model's name, or a folder whose restorable sub-folders are taken; UserError when a path holds none."""
  found = []
  for given in paths:
    path = pathlib.Path(given)
    if not path.exists() and zoo.is_name(os.fspath(given)):
      restored = restoring.restore(given)
      found.append((f'{given} (released {restored.name} x{restored.scale})', restored))
      continue
    if path.is_dir() and not _restorable(path):
      inner = sorted(p for p in path.iterdir() if p.is_dir() and _restorable(p))
      if not inner:
        raise UserError(f'{path} holds no training run or converted model (nor do its folders); '
                        'give a workdir with checkpoints or an enhance_jax.convert directory.')
    else:
      inner = [path]
    for p in inner:
      restored = restoring.restore(p)
      if restored.name == 'nima':
        raise UserError(f'{p} is a NIMA, which scores images; pass it as --nima, not --workdir.')
      experiment = ((restored.config.name or restored.name) if restored.config is not None
                    else f'converted {restored.name}')
      found.append((f'{p.name} ({experiment})', restored))
  names = [n for n, _ in found]
  return [(n if names.count(n) == 1 else f'{n} #{i + 1}', r) for i, (n, r) in enumerate(found)]


def default_precision() -> str:
  """bf16 where the device computes it fast (GPU, TPU), fp32 on a CPU."""
  return 'fp32' if jax.default_backend() == 'cpu' else 'bf16'


def load_models(paths, precision=None, tile=tiling.DEFAULT_TILE, pad=None) -> list[Model]:
  """The Models of PATHS (`discover`), each with an Enhancer at PRECISION, loaded now."""
  precision = precision or default_precision()
  out = []
  for name, restored in discover(paths):
    enhancer = tiling.enhancer_for(restored, precision, tile=tile, pad=pad, bucket=BUCKET)
    experiment = ((restored.config.name or restored.name) if restored.config is not None
                  else restored.name)
    out.append(Model(name, restored.scale, experiment, restored.source, restored.step, enhancer))
  return out


def _safe(name: str) -> str:
  return re.sub(r'[^A-Za-z0-9._-]+', '_', name).strip('_') or 'image'


def _bicubic(colour: np.ndarray, hw) -> np.ndarray:
  """Float RGB [0, 1] resized to HW with Pillow's bicubic (what users compare against)."""
  im = Image.fromarray(image_io.quantise(colour, 8))
  return np.asarray(im.resize((hw[1], hw[0]), Image.Resampling.BICUBIC), np.float32) / 255.0


class Service:
  """What the API does, without HTTP: models, NIMA, limits, and the temporary folder holding
  uploads (deleted after each request) and results (the last KEEP_JOBS requests')."""

  def __init__(self, models, nima=None, max_pixels=MAX_PIXELS, max_upload_bytes=MAX_UPLOAD_MB << 20,
               root=None, niqe=None):
    self.models = {m.name: m for m in models}
    self.nima, self.niqe = nima, niqe
    self.max_pixels, self.max_upload_bytes = int(max_pixels), int(max_upload_bytes)
    self._own_root = root is None
    self.root = pathlib.Path(root or tempfile.mkdtemp(prefix='enhance_jax_serve_'))
    self.uploads, self.results = self.root / 'uploads', self.root / 'results'
    for d in (self.uploads, self.results):
      d.mkdir(parents=True, exist_ok=True)
    self._jobs, self._lock = [], threading.Lock()

  def info(self) -> dict:
    return {'models': [m.info() for m in self.models.values()], 'nima': self.nima is not None,
            'niqe': self.niqe is not None,
            'max_pixels': self.max_pixels, 'max_upload_bytes': self.max_upload_bytes}

  def save_upload(self, stream, filename: str) -> pathlib.Path:
    """STREAM copied into the uploads folder (413 past max_upload_bytes, nothing kept)."""
    path = self.uploads / f'{uuid.uuid4().hex}{pathlib.Path(filename or "").suffix.lower()[:8]}'
    size = 0
    try:
      with open(path, 'wb') as f:
        while chunk := stream.read(CHUNK):
          size += len(chunk)
          if size > self.max_upload_bytes:
            raise RequestError(413, f'{filename} is over the {self.max_upload_bytes >> 20} MB upload '
                                    'limit; send a smaller file.')
          f.write(chunk)
    except BaseException:
      path.unlink(missing_ok=True)
      raise
    return path

  def read(self, path: pathlib.Path, filename: str) -> np.ndarray:
    """The upload as float RGB(A) [0, 1], after its header passed the pixel limit."""
    if path.stat().st_size == 0:
      raise RequestError(400, f'{filename} is empty (0 bytes); choose an image file.')
    try:
      w, h = image_io.dimensions(path)
    except UserError:
      raise RequestError(415, f'{filename} is not an image this server reads; upload a PNG, JPEG, '
                              'TIFF, WebP or BMP file.') from None
    if w * h > self.max_pixels:
      raise RequestError(413, f'{filename} is {w}x{h} = {w * h:,} pixels, over this server\'s limit of '
                              f'{self.max_pixels:,}; downscale or crop it first.')
    if min(w, h) < tiling.MIN_SIDE:
      raise RequestError(400, f'{filename} is {w}x{h}; images need at least {tiling.MIN_SIDE} pixels '
                              'on each side.')
    try:
      image, _ = image_io.read(path)
    except UserError:
      raise RequestError(415, f'{filename} could not be decoded as an image (corrupt or truncated); '
                              'upload another file.') from None
    return image

  def _job_dir(self) -> tuple[str, pathlib.Path]:
    job = uuid.uuid4().hex[:16]
    d = self.results / job
    d.mkdir()
    with self._lock:
      self._jobs.append(job)
      old = self._jobs[:-KEEP_JOBS]
      del self._jobs[:-KEEP_JOBS]
    for j in old:
      shutil.rmtree(self.results / j, ignore_errors=True)
    return job, d

  def _nima(self, image):
    return self.nima(image) if self.nima is not None else (None, None)

  def _niqe(self, image):
    """NIQE of IMAGE, or None without --niqe or below one 96x96 block."""
    if self.niqe is None or niqe_lib.too_small(image.shape):
      return None
    return round(self.niqe(image), 3)

  def _entry(self, job, d, file, image, **extra) -> dict:
    image_io.write(d / file, image)
    mean, std = self._nima(image)
    return {'width': image.shape[1], 'height': image.shape[0], 'nima': mean, 'nima_std': std,
            'niqe': self._niqe(image), 'url': f'/results/{job}/{file}', **extra}

  def enhance(self, stream, filename: str, names=(), test: bool = False) -> dict:
    """One request: the upload enhanced by NAMES (all when empty), with bicubic baselines, NIMA
    scores, timings and, with TEST, PSNR/SSIM of each against the image itself."""
    unknown = [n for n in names if n not in self.models]
    if unknown:
      raise RequestError(400, f'unknown model {unknown[0]!r}; GET /api/models lists: '
                              f'{", ".join(self.models)}.')
    chosen = [self.models[n] for n in (names or self.models)]
    path = self.save_upload(stream, filename)
    try:
      image = self.read(path, filename)
    finally:
      path.unlink(missing_ok=True)
    colour, _ = image_io.split_alpha(image)
    job, d = self._job_dir()
    result = {'id': job, 'input': {'name': filename, **self._entry(job, d, 'input.png', colour)},
              'results': [], 'zip': f'/api/zip?file={job}/input.png'}
    baselines = {}
    for model in chosen:
      s = model.scale
      target = source = colour
      if test:  # the image is the target; the model sees its bicubic downscale
        h, w = colour.shape[0] - colour.shape[0] % s, colour.shape[1] - colour.shape[1] % s
        if min(h, w) // s < tiling.MIN_SIDE:
          raise RequestError(400, f'{filename} is too small to score at x{s}; untick "score as a '
                                  'test image" or upload a larger image.')
        target = colour[:h, :w]
        source = _bicubic(target, (h // s, w // s))
      out_hw = (source.shape[0] * s, source.shape[1] * s)
      if s not in baselines:
        up = _bicubic(source, out_hw)
        baselines[s] = self._entry(job, d, f'bicubic_x{s}.png', up, model=f'bicubic x{s}', scale=s,
                                   seconds=None, baseline=True, **self._scores(up, target, s, test))
        result['results'].append(baselines[s])
      t0 = time.perf_counter()
      out = model.enhancer(source, dtype=np.float32)
      seconds = time.perf_counter() - t0
      result['results'].append(self._entry(job, d, f'{_safe(model.name)}.png', out, model=model.name,
                                           scale=s, seconds=round(seconds, 3), baseline=False,
                                           **self._scores(out, target, s, test)))
    files = '&'.join(f'file={job}/{pathlib.PurePath(r["url"]).name}' for r in result['results'])
    result['zip'] += '&' + files
    return result

  @staticmethod
  def _scores(out, target, scale, test) -> dict:
    if not test:
      return {'psnr': None, 'ssim': None}
    m = evaluators.score(out[None], target[None], scale)[0]
    return {'psnr': round(m['psnr_y'], 3), 'ssim': round(m['ssim_y'], 4)}

  def zip_bytes(self, files) -> bytes:
    """A zip of result FILES ('ID/NAME.png', as in their urls); 404 for any that is not one."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w', zipfile.ZIP_STORED) as z:
      for f in files:
        path = (self.results / f).resolve()
        if self.results.resolve() not in path.parents or not path.is_file():
          raise RequestError(404, f'{f} is not a result of this server (results are kept for the '
                                  f'last {KEEP_JOBS} requests); enhance the image again.')
        z.write(path, f.replace('/', '_'))
    return buf.getvalue()

  def close(self):
    if self._own_root:
      shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------- HTTP


class LimitBody:
  """ASGI middleware: a POST body past LIMIT bytes is answered 413 as soon as it is (so a huge
  upload is not spooled whole before the endpoint sees it)."""

  def __init__(self, app, limit: int):
    self.app, self.limit = app, limit

  async def __call__(self, scope, receive, send):
    if scope['type'] != 'http' or scope['method'] != 'POST':
      return await self.app(scope, receive, send)
    declared = dict(scope['headers']).get(b'content-length')
    if declared is not None and declared.isdigit() and int(declared) > self.limit:
      await self._drain(receive)
      return await _send_error(send, 413, self._message())
    seen, started = 0, False

    async def counted():
      nonlocal seen
      message = await receive()
      if message['type'] == 'http.request':
        seen += len(message.get('body', b''))
        if seen > self.limit:
          raise _TooLarge()
      return message

    async def tracking_send(message):
      nonlocal started
      started = started or message['type'] == 'http.response.start'
      await send(message)

    try:
      await self.app(scope, counted, tracking_send)
    except _TooLarge:
      if not started:
        await self._drain(receive)
        await _send_error(send, 413, self._message())

  async def _drain(self, receive):
    """Reads (and drops) the rest of a refused body up to 8 x LIMIT, so the client, still sending,
    gets the answer instead of a reset connection; a larger one is cut off."""
    seen = 0
    while seen <= 8 * self.limit:
      message = await receive()
      if message['type'] != 'http.request':
        return
      seen += len(message.get('body', b''))
      if not message.get('more_body', False):
        return

  def _message(self):
    return f'the upload is over the {self.limit >> 20} MB limit; send a smaller file.'


class _TooLarge(Exception):
  pass


async def _send_error(send, status, message):
  import json  # pylint: disable=g-import-not-at-top
  body = json.dumps({'error': message}).encode()
  await send({'type': 'http.response.start', 'status': status,
              'headers': [(b'content-type', b'application/json'),
                          (b'content-length', str(len(body)).encode())]})
  await send({'type': 'http.response.body', 'body': body})


def create_app(service: Service):
  """The FastAPI app: the JSON API, the result images and the page (all assets served locally)."""
  # pylint: disable=g-import-not-at-top
  from fastapi import FastAPI, File, Form, Query, Request, UploadFile
  from fastapi.responses import JSONResponse, Response
  from fastapi.staticfiles import StaticFiles

  app = FastAPI(title='enhance_jax compare', docs_url='/api/docs', redoc_url=None)

  @app.exception_handler(RequestError)
  async def refused(request: Request, e: RequestError):  # pylint: disable=unused-argument
    return JSONResponse({'error': e.message}, status_code=e.status)

  @app.get('/api/models')
  def models():
    return service.info()

  @app.post('/api/enhance')
  def enhance_upload(image: UploadFile | None = File(None), model: list[str] = Form([]),
                     test: bool = Form(False)):
    if image is None:
      raise RequestError(400, "send the image as the multipart field 'image'.")
    return service.enhance(image.file, image.filename or 'upload', list(model), test)

  @app.get('/api/zip')
  def zip_results(file: list[str] = Query(...)):
    return Response(service.zip_bytes(file), media_type='application/zip',
                    headers={'Content-Disposition': 'attachment; filename="enhanced.zip"'})

  app.mount('/results', StaticFiles(directory=service.results), name='results')
  app.mount('/', StaticFiles(directory=STATIC, html=True), name='page')
  return LimitBody(app, service.max_upload_bytes + (1 << 16))  # + room for the form's other parts


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--workdir', action='append', default=[],
                 help='a training run, converted model, or folder of them (repeatable)')
  p.add_argument('--model', action='append', default=[],
                 help='a released model by name (repeatable; see python -m enhance_jax.enhance '
                      '--list-models); with no --workdir/--model, every released model found')
  p.add_argument('--nima', default=None, help='a `nima` run, converted NIMA or NIMA weights file')
  p.add_argument('--niqe', action='store_true',
                 help="score every image by NIQE too (no reference; lower is more natural)")
  p.add_argument('--niqe-params', default='',
                 help="NIQE's niqe_pris_params.npz (default: basicsr's, the cache's or downloaded)")
  p.add_argument('--host', default='127.0.0.1', help='address to bind (default 127.0.0.1: this '
                 'machine only; 0.0.0.0 exposes the page to the network)')
  p.add_argument('--port', type=int, default=8000)
  p.add_argument('--max-pixels', type=int, default=MAX_PIXELS, help='largest input, in pixels')
  p.add_argument('--max-upload-mb', type=float, default=MAX_UPLOAD_MB, help='largest upload, in MB')
  p.add_argument('--tile', type=int, default=tiling.DEFAULT_TILE,
                 help='window side (input pixels; 0 = whole images)')
  p.add_argument('--tile-pad', type=int, default=None,
                 help="context pixels per window side (default: the architecture's)")
  p.add_argument('--precision', choices=restoring.PRECISIONS, default=None,
                 help='default: bf16 on an accelerator, fp32 on a CPU')
  return p.parse_args(argv)


def main(argv=None):
  stops.begin()
  args = parse_args(argv)
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  absl_logging.set_verbosity(absl_logging.ERROR)
  if args.max_pixels < 16 or args.max_upload_mb <= 0 or not 0 < args.port < 65536:
    print('error: --max-pixels must be at least 16, --max-upload-mb above 0 and --port in 1..65535.',
          file=sys.stderr)
    return 2
  try:
    import uvicorn  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("error: serving needs FastAPI and uvicorn: pip install 'enhance_jax[serve]'.", file=sys.stderr)
    return 2
  try:
    sources = args.workdir + args.model or [m.name for m, _, _ in zoo.available()]
    if not sources:
      raise UserError('no model to serve: give --workdir or --model NAME, or install the released '
                      "models with pip install 'enhance_jax[pretrained]'.")
    models = load_models(sources, args.precision, tile=args.tile, pad=args.tile_pad)
    nima = scoring.Scorer(args.nima, size=NIMA_SIZE) if args.nima else None
    niqe = scoring.NiqeScorer(args.niqe_params or None) if args.niqe or args.niqe_params else None
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except stops.Stopped as stop:  # while loading or compiling the models: nothing was served yet
    print(stops.stop_sentence(stop, 'before serving; nothing was written'), file=sys.stderr, flush=True)
    return stop.exit_code
  service = Service(models, nima, args.max_pixels, int(args.max_upload_mb * (1 << 20)), niqe=niqe)
  tempfile.tempdir = str(service.uploads)  # multipart spooling stays in the server's own folder
  stopped = None
  try:
    app = create_app(service)
    print(f'serving {len(models)} model(s) ({", ".join(m.name for m in models)}) at '
          f'http://{args.host}:{args.port}/ ; files under {service.root}', flush=True)
    # uvicorn shuts down gracefully on SIGTERM/Ctrl-C (requests in flight finish), then raises the
    # signal again for the handlers found before it: Stopped here, after which the files go.
    # (Server.run, not uvicorn.run, which swallows that KeyboardInterrupt.)
    uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level='warning')).run()
  except KeyboardInterrupt as stop:  # stops.Stopped, or Ctrl-C where main was called from Python
    stopped = stop if isinstance(stop, stops.Stopped) else stops.Stopped(signal.SIGINT)
  finally:
    service.close()
  if stopped is None:
    print('stopped; its temporary files are removed.', flush=True)
    return 0
  print(stops.stop_sentence(stopped, 'requests in flight were answered and its temporary files are '
                                     'removed'), flush=True)
  return stopped.exit_code


if __name__ == '__main__':
  stops.finish(main())
