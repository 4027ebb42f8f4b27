"""The compare page (issue 14) for real: `python -m enhance_jax.serve` started as users start it, on
127.0.0.1, its JSON API hit over HTTP (good, bad and concurrent uploads), and the page driven in
headless Chromium (Debian's chromium + chromium-driver, which .ci/install-browser installs): upload
two images, wait for the results, check sizes, NIMA scores, the slider and the download, and save a
screenshot to artifacts/ for a person to look at."""

import concurrent.futures
import io
import os
import pathlib
import re
import shutil
import signal
import socket
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import requests
from PIL import Image

from benchmarks import serve_load
from benchmarks.torch_reference import metric_references
from enhance_jax.io import weights
from enhance_jax.models.nima import NIMA
from enhance_jax.models.srvgg import SRVGGNetCompact

pytestmark = pytest.mark.slow  # a real server subprocess and headless Chromium

REPO = pathlib.Path(__file__).resolve().parents[2]
ARTIFACTS = pathlib.Path(os.environ.get('ENHANCE_JAX_ARTIFACTS', REPO / 'artifacts'))
MAX_PIXELS = 250_000
MAX_UPLOAD_MB = 1


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _png(array, **kwargs):
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format='PNG', **kwargs)
  return buf.getvalue()


def _photo(h, w, seed=0):
  """A smooth colour test picture (gradients and a disc), uint8 HxWx3."""
  y, x = np.mgrid[0:h, 0:w] / max(h, w)
  rng = np.random.default_rng(seed)
  disc = ((y - 0.5) ** 2 + (x - 0.5) ** 2 < 0.08).astype(float)
  rgb = np.stack([x, y, 0.5 * disc + 0.3 * rng.random((h, w))], -1)
  return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def _converted_models(root):
  """A converted SRVGGNetCompact x2 and a NIMA (MobileNet) model directory, random weights."""
  srvgg = SRVGGNetCompact(num_features=8, num_convs=2, scale=2)
  variables = srvgg.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  weights.write_model_dir(root / 'srvgg_x2', {'name': 'srvgg_compact', 'num_features': 8,
                                              'num_convs': 2, 'scale': 2}, variables, {})
  nima = NIMA(backbone='mobilenet')
  variables = nima.init(jax.random.key(1), jnp.zeros((1, 32, 32, 3)))
  weights.write_model_dir(root / 'nima', {'name': 'nima', 'backbone': 'mobilenet', 'dropout': 0.75},
                          variables, {})
  return root / 'srvgg_x2', root / 'nima'


@pytest.fixture(scope='module')
def server(l1_run, tmp_path_factory):
  """The server, started as a user would, on a free port: (base url, its temp dir, process)."""
  root = tmp_path_factory.mktemp('serve')
  srvgg, nima = _converted_models(root)
  log = open(root / 'server.log', 'w+')  # pylint: disable=consider-using-with
  proc, url, tmp = serve_load.start_server(  # as a user starts it; RuntimeError with its log if not
      [str(l1_run), str(srvgg)], _free_port(), log,
      ('--nima', str(nima), '--niqe', '--niqe-params', str(metric_references.pristine_params_path()),
       '--max-pixels', str(MAX_PIXELS), '--max-upload-mb', str(MAX_UPLOAD_MB), '--tile', '64',
       '--tile-pad', '8'))
  log.seek(0)
  banner = log.read()
  yield url, tmp, proc, banner
  proc.send_signal(signal.SIGTERM)
  proc.wait(timeout=60)
  log.close()


def _enhance(url, content, filename='photo.png', models=(), test=False):
  data = [('model', m) for m in models] + ([('test', 'true')] if test else [])
  return requests.post(url + '/api/enhance', files={'image': (filename, content)}, data=data,
                       timeout=300)


def test_models_are_listed_by_workdir_and_experiment(server):
  url, _, _, banner = server
  info = requests.get(url + '/api/models', timeout=10).json()
  names = {m['name']: m['scale'] for m in info['models']}
  assert names == {'shared_esrgan_l1 (esrgan_cpu)': 4, 'srvgg_x2 (converted srvgg_compact)': 2}
  assert info['nima'] is True and info['niqe'] is True and info['max_pixels'] == MAX_PIXELS
  assert f'at {url}/' in banner  # bound to 127.0.0.1 (the default host)


def test_enhance_returns_every_model_bicubic_and_nima(server):
  url, _, _, _ = server
  r = _enhance(url, _png(_photo(40, 48)))
  assert r.status_code == 200, r.text
  body = r.json()
  assert (body['input']['width'], body['input']['height']) == (48, 40)
  assert isinstance(body['input']['nima'], float) and 1 <= body['input']['nima'] <= 10
  assert body['input']['niqe'] is None  # 48x40: under two 96x96 blocks
  by_model = {x['model']: x for x in body['results']}
  assert set(by_model) == {'bicubic x4', 'shared_esrgan_l1 (esrgan_cpu)', 'bicubic x2',
                           'srvgg_x2 (converted srvgg_compact)'}
  for entry in body['results']:
    s = entry['scale']
    assert (entry['width'], entry['height']) == (48 * s, 40 * s)
    assert 1 <= entry['nima'] <= 10 and entry['nima_std'] > 0
    if s == 4:  # 192x160 holds two 96x96 NIQE blocks; the x2 results (96x80) and the input do not
      assert isinstance(entry['niqe'], float) and 0 < entry['niqe'] < 100
    else:
      assert entry['niqe'] is None
    assert entry['baseline'] == entry['model'].startswith('bicubic')
    assert entry['baseline'] or entry['seconds'] > 0
    png = requests.get(url + entry['url'], timeout=30)
    assert png.headers['content-type'] == 'image/png'
    assert Image.open(io.BytesIO(png.content)).size == (48 * s, 40 * s)
  zipped = zipfile.ZipFile(io.BytesIO(requests.get(url + body['zip'], timeout=30).content))
  assert len(zipped.namelist()) == 5  # the input, two baselines, two models


def test_score_as_a_test_image_gives_psnr_and_ssim(server):
  url, _, _, _ = server
  body = _enhance(url, _png(_photo(40, 48)), models=['srvgg_x2 (converted srvgg_compact)'],
                  test=True).json()
  (base, out) = body['results']
  assert base['baseline'] and not out['baseline']
  assert (out['width'], out['height']) == (48, 40)  # the x2 downscale enhanced back to the input
  for entry in (base, out):
    assert 5 < entry['psnr'] < 80 and 0 < entry['ssim'] <= 1


def _bad_upload(name):
  """The bytes of each bad upload (built here: parameters must be the same on every xdist worker)."""
  return {
      'notes.png': lambda: b'these are my notes, not pixels\n' * 20,  # a renamed text file
      'empty.png': lambda: b'',
      'huge.png': lambda: np.random.default_rng(0).bytes((MAX_UPLOAD_MB << 20) + 200_000),
      # 4000 x 4000 one-bit pixels: a small file that would decode to 48 MB of RGB
      'bomb.png': lambda: _png(np.zeros((4000, 4000), bool)),
      'truncated.png': lambda: _png(_photo(60, 60, seed=3))[:400],
      'dot.png': lambda: _png(np.zeros((1, 1, 3), np.uint8)),
  }[name]()


@pytest.mark.parametrize('name,status,words', [
    ('notes.png', 415, 'not an image'),
    ('empty.png', 400, 'empty (0 bytes)'),
    ('huge.png', 413, 'MB'),
    ('bomb.png', 413, 'pixels, over'),
    ('truncated.png', 415, 'corrupt or truncated'),
    ('dot.png', 400, 'at least'),
])
def test_bad_uploads_get_a_4xx_and_one_sentence(server, name, status, words):
  url, tmp, proc, _ = server
  r = _enhance(url, _bad_upload(name), name)
  assert r.status_code == status, r.text
  message = r.json()['error']
  assert words in message and message.count('. ') == 0, message
  assert proc.poll() is None
  assert not any((tmp / 'uploads').iterdir())  # nothing left behind
  assert _enhance(url, _png(_photo(24, 24)), models=['srvgg_x2 (converted srvgg_compact)']).ok


def test_no_image_field_and_unknown_model_are_400(server):
  url, _, _, _ = server
  r = requests.post(url + '/api/enhance', data={'model': 'x'}, timeout=30)
  assert r.status_code == 400 and "field 'image'" in r.json()['error']
  r = _enhance(url, _png(_photo(24, 24)), models=['nope'])
  assert r.status_code == 400 and "unknown model 'nope'" in r.json()['error']
  r = requests.get(url + '/api/zip', params={'file': '../../etc/passwd'}, timeout=30)
  assert r.status_code == 404


def test_two_concurrent_requests_both_succeed(server):
  url, _, _, _ = server
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    futures = [pool.submit(_enhance, url, _png(_photo(32 + 8 * i, 40, seed=i))) for i in range(2)]
    bodies = [f.result() for f in futures]
  assert all(b.status_code == 200 for b in bodies), [b.text for b in bodies]
  assert [b.json()['input']['height'] for b in bodies] == [32, 40]
  # Every image so far (sizes 24..48, under the 64-pixel tile) ran through one program per model.
  programs = {m['name']: m['programs'] for m in requests.get(url + '/api/models', timeout=10).json()['models']}
  assert programs == {'shared_esrgan_l1 (esrgan_cpu)': 1, 'srvgg_x2 (converted srvgg_compact)': 1}


def test_results_of_old_requests_are_removed(tmp_path, monkeypatch):
  """The Service keeps the last KEEP_JOBS requests' images (a server up for days stays bounded)
  and deletes each upload once read."""
  from enhance_jax import serve# pylint: disable=g-import-not-at-top
  from enhance_jax.infer import tiling# pylint: disable=g-import-not-at-top
  srvgg, _ = _converted_models(tmp_path)
  monkeypatch.setattr(serve, 'KEEP_JOBS', 2)
  model = serve.load_models([srvgg], 'fp32', tile=32, pad=8)[0]
  assert isinstance(model.enhancer, tiling.Enhancer)
  service = serve.Service([model], root=tmp_path / 'root')
  ids = [service.enhance(io.BytesIO(_png(_photo(20, 20, seed=i))), f'{i}.png')['id'] for i in range(3)]
  assert sorted(p.name for p in service.results.iterdir()) == sorted(ids[1:])
  assert not any(service.uploads.iterdir())
  with pytest.raises(serve.RequestError) as e:
    service.zip_bytes([f'{ids[0]}/input.png'])
  assert e.value.status == 404


# ---------------------------------------------------------------- the page in a real browser


def _browser():
  """Headless Debian Chromium through its ChromeDriver; a clear failure (not a skip) without them."""
  chromium, driver = shutil.which('chromium'), shutil.which('chromedriver')
  if not (chromium and driver):
    pytest.fail('the browser test needs Debian\'s chromium and chromium-driver: run '
                'bash .ci/install-browser (CI does).')
  from selenium import webdriver  # pylint: disable=g-import-not-at-top
  options = webdriver.ChromeOptions()
  options.binary_location = chromium
  for arg in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu',
              '--window-size=1400,2200'):
    options.add_argument(arg)
  return webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver), options=options)


def test_the_page_in_headless_chromium(server, tmp_path):
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=g-import-not-at-top
  url, _, _, _ = server
  sizes = {'meadow.png': (36, 44), 'harbour.png': (28, 52)}
  for i, (name, (h, w)) in enumerate(sizes.items()):
    Image.fromarray(_photo(h, w, seed=i)).save(tmp_path / name)
  driver = _browser()
  try:
    driver.get(url + '/')
    wait = WebDriverWait(driver, 240)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, '#models input[type=checkbox]')) == 2)
    driver.find_element(By.ID, 'files').send_keys('\n'.join(str(tmp_path / n) for n in sizes))
    driver.find_element(By.ID, 'go').click()
    wait.until(lambda d: d.find_element(By.ID, 'status').get_attribute('data-done') == 'true')
    cards = driver.find_elements(By.CSS_SELECTOR, '#results .card')
    assert len(cards) == 2
    assert not driver.find_elements(By.CSS_SELECTOR, '#results .error')
    for card in cards:
      name = card.find_element(By.CSS_SELECTOR, 'h2 span').text
      h, w = sizes[name]
      tiles = {t.get_attribute('data-name'): t for t in card.find_elements(By.CSS_SELECTOR, '.tile')}
      assert set(tiles) == {'input', 'bicubic x4', 'shared_esrgan_l1 (esrgan_cpu)', 'bicubic x2',
                            'srvgg_x2 (converted srvgg_compact)'}
      for label, tile in tiles.items():
        scale = 1 if label == 'input' else (4 if 'x4' in label or 'esrgan' in label else 2)
        img = tile.find_element(By.TAG_NAME, 'img')
        wait.until(lambda d, img=img: d.execute_script('return arguments[0].complete', img))
        natural = driver.execute_script('return [arguments[0].naturalWidth, arguments[0].naturalHeight]',
                                        img)
        assert natural == [w * scale, h * scale], (name, label, natural)
        assert re.search(r'NIMA \d+\.\d\d ± \d+\.\d\d', tile.find_element(By.CLASS_NAME, 'nima').text)
        niqe_text = tile.find_element(By.CLASS_NAME, 'niqe').text  # a score where two 96x96 blocks fit
        blocks = (h * scale // 96) * (w * scale // 96)  # harbour's x4 holds 2, meadow's 1
        assert re.fullmatch(r'NIQE \d+\.\d\d' if blocks >= 2 else 'NIQE –', niqe_text), niqe_text
        link = tile.find_element(By.CSS_SELECTOR, 'a.download')
        assert link.get_attribute('download').endswith('.png')
        png = requests.get(link.get_attribute('href'), timeout=30).content
        assert Image.open(io.BytesIO(png)).size == (w * scale, h * scale)
      sliders = card.find_elements(By.CSS_SELECTOR, '.compare input[type=range]')
      assert len(sliders) == 2
      driver.execute_script("arguments[0].value = 20; arguments[0].dispatchEvent(new Event('input'))",
                            sliders[0])
      after = card.find_element(By.CSS_SELECTOR, '.compare .after')
      assert '20%' in after.get_attribute('style')
    zip_href = driver.find_element(By.ID, 'zip-all').get_attribute('href')
    assert len(zipfile.ZipFile(io.BytesIO(requests.get(zip_href, timeout=30).content)).namelist()) == 10
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script('return document.body.scrollHeight')
    driver.set_window_size(1400, max(1200, min(int(height) + 40, 6000)))
    assert driver.save_screenshot(str(ARTIFACTS / 'serve_results.png'))
    # A bad upload: its card says why, in the server's sentence, and the page stays usable.
    (tmp_path / 'notes.png').write_bytes(b'not a picture\n' * 10)
    driver.set_window_size(1400, 2200)
    chooser = driver.find_element(By.ID, 'files')
    driver.execute_script("arguments[0].value = ''", chooser)  # else ChromeDriver adds to the list
    chooser.send_keys(str(tmp_path / 'notes.png'))
    driver.find_element(By.ID, 'go').click()
    wait.until(lambda d: d.find_element(By.ID, 'status').get_attribute('data-done') == 'true')
    errors = driver.find_elements(By.CSS_SELECTOR, '#results .error')
    assert len(errors) == 1 and 'is not an image' in errors[0].text
    assert not driver.find_elements(By.CSS_SELECTOR, '#results .tile')
    assert driver.find_element(By.ID, 'go').is_enabled()
  finally:
    driver.quit()


def test_the_server_removes_its_files_when_stopped(server):
  """Last in the module: SIGTERM ends the server with 143 and one sentence (and the fixture's own
  stop finds it gone)."""
  _, tmp, proc, _ = server
  assert tmp.is_dir()
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=60) == 143
  assert not tmp.exists()
