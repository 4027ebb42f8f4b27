"""Issue 15, "Bad input, fuzzed": every command over a table of bad inputs.

Each bad input ends in one line on stderr that names the fix (`error: ...`, or `skipped PATH: ...`
for a file among others), a non-zero exit and no traceback; inside a folder the bad files are
reported and skipped, the others processed (exit 1); nothing already written is lost. Images that
are merely unusual (16-bit, palette, CMYK, grey, RGBA, a non-UTF-8 name) work. Files are generated
inside the tests (seeded); parametrize ids are fixed strings.
"""

import json
import os
import re
import pathlib
import struct
import subprocess
import sys
import zlib

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from enhance_jax import convert as convert_cli
from enhance_jax import enhance as enhance_cli
from enhance_jax import evaluate as evaluate_cli
from enhance_jax import score as score_cli
from enhance_jax import train as train_cli
from enhance_jax.io import weights
from enhance_jax.models.nima import NIMA
from enhance_jax.models.srvgg import SRVGGNetCompact

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / 'data'))
sys.path.insert(0, str(ROOT))
import prepare as prepare_cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import throughput as throughput_cli  # pylint: disable=g-import-not-at-top,wrong-import-position

pytestmark = pytest.mark.slow  # every command fuzzed through its CLI on trained fixtures

PRECIOUS = b'precious: an earlier result'


# ---------------------------------------------------------------- inputs


def _photo(h=12, w=12, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png_claiming(w, h, bits=8):
  """A PNG whose IHDR claims W x H RGB pixels of BITS, with no pixel data after it."""
  def chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, bits, 2, 0, 0, 0))
          + chunk(b'IEND', b''))


def _encoded(fmt, **kwargs):
  import io  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  Image.fromarray(_photo(32, 32)).save(buf, format=fmt, **kwargs)
  return buf.getvalue()


BAD_FILES = ('random_bytes.png', 'random_bytes.jpg', 'random_bytes.webp', 'zero_bytes.png',
             'one_pixel.png', 'claims_65535x1.png', 'bomb_65535x65535.png',
             'bomb_16bit_30000x30000.png', 'truncated.png',
             'truncated.jpg', 'directory.png', 'fifo.png', 'dangling_link.png')


def make_bad(folder: pathlib.Path, name: str) -> pathlib.Path:
  """Writes the bad input NAME into FOLDER and returns its path."""
  path = folder / name
  rng = np.random.default_rng(len(name))
  stem = name.split('.')[0]
  if stem == 'random_bytes':
    path.write_bytes(rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())
  elif stem == 'zero_bytes':
    path.write_bytes(b'')
  elif stem == 'one_pixel':
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(path)
  elif stem == 'claims_65535x1':
    path.write_bytes(_png_claiming(65535, 1))
  elif stem == 'bomb_65535x65535':
    path.write_bytes(_png_claiming(65535, 65535))
  elif stem == 'bomb_16bit_30000x30000':  # OpenCV's own limit (2**30 pixels) would let it through
    path.write_bytes(_png_claiming(30000, 30000, bits=16))
  elif stem == 'truncated':
    data = _encoded('PNG' if name.endswith('.png') else 'JPEG')
    path.write_bytes(data[:len(data) // 2])
  elif stem == 'directory':
    path.mkdir()
  elif stem == 'fifo':
    os.mkfifo(path)
  elif stem == 'dangling_link':
    path.symlink_to(folder / 'nowhere.png')
  elif stem == 'symlink_loop':
    path.symlink_to(path)
  else:
    raise ValueError(name)
  return path


GOOD_KINDS = ('grey', 'rgba', 'sixteen_bit', 'palette', 'cmyk', 'non_utf8_name')


def make_good(folder: pathlib.Path, kind: str) -> pathlib.Path:
  """An unusual but valid image of KIND (12x12) in FOLDER."""
  rgb = _photo()
  if kind == 'grey':
    path = folder / 'grey.png'
    Image.fromarray(rgb[..., 0]).save(path)
  elif kind == 'rgba':
    path = folder / 'rgba.png'
    Image.fromarray(np.concatenate([rgb, rgb[..., :1]], -1)).save(path)
  elif kind == 'sixteen_bit':
    import cv2  # pylint: disable=g-import-not-at-top
    path = folder / 'sixteen_bit.png'
    cv2.imwrite(str(path), rgb.astype(np.uint16) * 257 + 3)
  elif kind == 'palette':
    path = folder / 'palette.png'
    Image.fromarray(rgb).convert('P').save(path)
  elif kind == 'cmyk':
    path = folder / 'cmyk.jpg'
    Image.fromarray(rgb).convert('CMYK').save(path, quality=95)
  elif kind == 'non_utf8_name':
    raw = os.path.join(os.fsencode(folder), b'\xff\xfe.png')
    fd = os.open(raw, os.O_WRONLY | os.O_CREAT, 0o644)
    with os.fdopen(fd, 'wb') as f:
      Image.fromarray(rgb).save(f, format='PNG')
    path = pathlib.Path(os.fsdecode(raw))
  else:
    raise ValueError(kind)
  return path


EXPECTED_CHANNELS = {'grey': 1, 'rgba': 4, 'sixteen_bit': 3, 'palette': 3, 'cmyk': 3,
                     'non_utf8_name': 3}


@pytest.fixture(scope='module')
def models(tmp_path_factory):
  """A converted SRVGGNetCompact x2 and a NIMA (MobileNet) model directory, random weights."""
  root = tmp_path_factory.mktemp('models')
  srvgg = SRVGGNetCompact(num_features=8, num_convs=2, scale=2)
  variables = srvgg.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  weights.write_model_dir(root / 'srvgg_x2', {'name': 'srvgg_compact', 'num_features': 8,
                                              'num_convs': 2, 'scale': 2}, variables, {})
  nima = NIMA(backbone='mobilenet')
  variables = nima.init(jax.random.key(1), jnp.zeros((1, 32, 32, 3)))
  weights.write_model_dir(root / 'nima', {'name': 'nima', 'backbone': 'mobilenet', 'dropout': 0.75},
                          variables, {})
  return root / 'srvgg_x2', root / 'nima'


TQDM_BAR = re.compile(r'(img/s|s/img)\]')  # a progress bar's rate, fast host or slow


def check_err(err: str, bad: int = 1):
  """No traceback; BAD lines that name the fix (`error:` or `skipped PATH:`) plus at most a summary."""
  if os.environ.get('FUZZ_SHOW'):  # FUZZ_SHOW=1 pytest -s ...: read the messages
    sys.__stderr__.write(err)
  assert 'Traceback' not in err, err
  lines = [l for line in err.splitlines() for l in line.split('\r')
           if l.strip() and not TQDM_BAR.search(l)]  # tqdm's bar redraws itself with \r
  fixes = [l for l in lines if l.startswith('error: ') or l.startswith('skipped ')]
  assert len(fixes) == bad, err
  others = [l for l in lines if l not in fixes]
  assert all('file(s) skipped' in l for l in others), err


# ---------------------------------------------------------------- enhance


def _enhance(models, *argv):
  return enhance_cli.main([str(a) for a in argv] + ['--workdir', str(models[0]), '--tile', '16',
                                                    '--tile-pad', '2'])


@pytest.mark.slow
@pytest.mark.parametrize('name', BAD_FILES + ('missing.png',))
def test_enhance_bad_file_is_one_line_and_keeps_the_output(name, models, tmp_path, capsys):
  bad = make_bad(tmp_path, name) if name != 'missing.png' else tmp_path / name
  out = tmp_path / 'out.png'
  out.write_bytes(PRECIOUS)
  assert _enhance(models, bad, '-o', out, '--overwrite') in (1, 2)
  check_err(capsys.readouterr().err)
  assert out.read_bytes() == PRECIOUS
  assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith('.')) == []  # no temp files


@pytest.mark.parametrize('kind', GOOD_KINDS)
def test_enhance_unusual_images_work(kind, models, tmp_path, capsys):
  src = make_good(tmp_path, kind)
  out = tmp_path / 'out'
  assert _enhance(models, src, '-o', out) == 0, capsys.readouterr().err
  assert 'Traceback' not in capsys.readouterr().err
  (written,) = list(out.iterdir())
  array = np.asarray(Image.open(written)) if kind != 'sixteen_bit' else None
  if kind == 'sixteen_bit':
    import cv2  # pylint: disable=g-import-not-at-top
    array = cv2.imread(str(written), cv2.IMREAD_UNCHANGED)
    assert array.dtype == np.uint16
  shape = array.shape if array.ndim == 3 else (*array.shape, 1)
  assert shape == (24, 24, EXPECTED_CHANNELS[kind])


def test_enhance_folder_reports_each_bad_file_and_writes_the_rest(models, tmp_path, capsys):
  src = tmp_path / 'in'
  src.mkdir()
  for name in BAD_FILES:
    if name != 'directory.png':  # a folder named x.png is searched, not reported
      make_bad(src, name)
  make_bad(src, 'symlink_loop.png')
  good = [make_good(src, kind) for kind in GOOD_KINDS]
  assert _enhance(models, src, '-o', tmp_path / 'out') == 1
  err = capsys.readouterr().err
  check_err(err, bad=len(BAD_FILES))
  written = sorted(os.fsencode(p.name) for p in (tmp_path / 'out').iterdir())
  assert written == sorted(os.fsencode(p.with_suffix('.png' if p.suffix != '.jpg' else '.jpg').name)
                           for p in good)


@pytest.mark.parametrize('flags,message', [
    (['--tile', '-1'], '--tile'),
    (['--outscale', 'nan'], '--outscale'),
    (['--outscale', '-2'], '--outscale'),
    (['--outscale', 'inf'], '--outscale'),
    (['--tile-pad', '-3'], '--tile-pad'),
    (['--batch', '0'], '--batch'),
    (['--scale', '3'], 'scale'),
    (['--tile', '100000'], '--tile'),
    (['--tile', '256', '--batch', '100000'], '--batch'),
], ids=['tile_-1', 'outscale_nan', 'outscale_-2', 'outscale_inf', 'pad_-3', 'batch_0',
        'scale_3', 'tile_100000', 'batch_100000'])
def test_enhance_bad_numbers(flags, message, models, tmp_path, capsys):
  Image.fromarray(_photo()).save(tmp_path / 'a.png')
  out = tmp_path / 'b.png'
  out.write_bytes(PRECIOUS)
  assert enhance_cli.main([str(tmp_path / 'a.png'), '-o', str(out), '--overwrite', '--workdir',
                           str(models[0]), *flags]) == 2
  err = capsys.readouterr().err
  check_err(err)
  assert message in err
  assert out.read_bytes() == PRECIOUS


# ---------------------------------------------------------------- score


def _score(models, *argv):
  return score_cli.main([str(a) for a in argv] + ['--nima', str(models[1]), '--size', '32'])


@pytest.mark.parametrize('name', BAD_FILES + ('missing.png',))
def test_score_bad_file_is_one_line(name, models, tmp_path, capsys):
  bad = make_bad(tmp_path, name) if name != 'missing.png' else tmp_path / name
  assert _score(models, bad) in (1, 2)
  check_err(capsys.readouterr().err)


@pytest.mark.parametrize('kind', GOOD_KINDS)
def test_score_unusual_images_work(kind, models, tmp_path, capsys):
  src = make_good(tmp_path, kind)
  assert _score(models, src, '--json') == 0
  captured = capsys.readouterr()
  assert 'Traceback' not in captured.err
  (row,) = json.loads(captured.out)
  assert 1.0 <= row['mean'] <= 10.0 and row['std'] >= 0


def test_score_folder_reports_each_bad_file_and_scores_the_rest(models, tmp_path, capsys):
  src = tmp_path / 'in'
  src.mkdir()
  for name in BAD_FILES:
    if name != 'directory.png':
      make_bad(src, name)
  make_bad(src, 'symlink_loop.png')
  for kind in GOOD_KINDS:
    make_good(src, kind)
  assert _score(models, src) == 1  # the table, not JSON: names are printed as text
  captured = capsys.readouterr()
  check_err(captured.err, bad=len(BAD_FILES))
  assert len(captured.out.splitlines()) == 1 + len(GOOD_KINDS)


@pytest.mark.parametrize('size', ['-3', '0x', 'nan', '8', '100000'])
def test_score_bad_size(size, models, tmp_path, capsys):
  Image.fromarray(_photo()).save(tmp_path / 'a.png')
  with pytest.raises(SystemExit) if size in ('0x', 'nan') else _no_raise() as raised:
    code = score_cli.main([str(tmp_path / 'a.png'), '--nima', str(models[1]), '--size', size])
  err = capsys.readouterr().err
  assert 'Traceback' not in err and 'error:' in err.splitlines()[-1]
  assert (raised.value.code if raised else code) == 2


class _no_raise:  # pylint: disable=invalid-name
  def __enter__(self):
    return None

  def __exit__(self, *exc):
    return False


# ---------------------------------------------------------------- convert


CONVERT_BAD = ('random_bytes.pth', 'zero_bytes.pth', 'random_bytes.safetensors',
               'truncated.safetensors', 'random_bytes.npz', 'zero_bytes.npz', 'images.npz',
               'directory.pth', 'fifo.pth', 'dangling_link.pth', 'missing.pth', 'unknown.ext')


def make_bad_weights(folder: pathlib.Path, name: str) -> pathlib.Path:
  path = folder / name
  rng = np.random.default_rng(len(name))
  if name.startswith('random_bytes'):
    path.write_bytes(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
  elif name.startswith('zero_bytes'):
    path.write_bytes(b'')
  elif name == 'truncated.safetensors':
    import safetensors.numpy  # pylint: disable=g-import-not-at-top
    data = safetensors.numpy.save({'conv_first.weight': np.zeros((8, 3, 3, 3), np.float32)})
    path.write_bytes(data[:len(data) - 100])
  elif name == 'images.npz':
    np.savez(path, photo=_photo())  # arrays, but no model's
  elif name == 'directory.pth':
    path.mkdir()
  elif name == 'fifo.pth':
    os.mkfifo(path)
  elif name == 'dangling_link.pth':
    path.symlink_to(folder / 'nowhere.pth')
  elif name == 'unknown.ext':
    path.write_bytes(b'weights?')
  return path


@pytest.mark.parametrize('name', CONVERT_BAD)
def test_convert_bad_weights_is_one_line_and_writes_nothing(name, tmp_path, capsys):
  src = tmp_path / 'src'
  src.mkdir()
  bad = make_bad_weights(src, name)
  assert convert_cli.main([str(bad), '--out', str(tmp_path / 'model')]) == 2
  check_err(capsys.readouterr().err)
  assert not (tmp_path / 'model').exists()


@pytest.mark.parametrize('case', ['out_is_a_file', 'arch_unknown', 'arch_mismatch'])
def test_convert_bad_invocations_keep_what_exists(case, models, tmp_path, capsys):
  sd = tmp_path / 'w.npz'
  np.savez(sd, **{'body.0.weight': np.zeros((8, 3, 3, 3), np.float32)})
  out = tmp_path / 'out'
  out.write_bytes(PRECIOUS)
  argv = {'out_is_a_file': [str(sd), '--out', str(out)],
          'arch_unknown': [str(sd), '--out', str(out) + '_dir', '--arch', 'nosuch'],
          'arch_mismatch': [str(sd), '--out', str(out) + '_dir', '--arch', 'edsr']}[case]
  assert convert_cli.main(argv) == 2
  check_err(capsys.readouterr().err)
  assert out.read_bytes() == PRECIOUS and not (tmp_path / 'out_dir').exists()


def _srvgg_state_dict(nf=8, num_convs=2, scale=2):
  """Real-ESRGAN SRVGGNetCompact tensors in PyTorch layout (body.{even} convs, body.{odd} PReLU)."""
  rng = np.random.default_rng(0)
  sd, c_in = {}, 3
  for i in range(num_convs + 1):
    sd[f'body.{2 * i}.weight'] = rng.normal(0, 0.1, (nf, c_in, 3, 3)).astype(np.float32)
    sd[f'body.{2 * i}.bias'] = np.zeros(nf, np.float32)
    sd[f'body.{2 * i + 1}.weight'] = np.full(nf, 0.25, np.float32)
    c_in = nf
  last = 2 * num_convs + 2
  sd[f'body.{last}.weight'] = rng.normal(0, 0.1, (3 * scale * scale, nf, 3, 3)).astype(np.float32)
  sd[f'body.{last}.bias'] = np.zeros(3 * scale * scale, np.float32)
  return sd


def test_convert_non_utf8_file_name_works(tmp_path, capsys):
  raw = os.path.join(os.fsencode(tmp_path), b'\xff\xfe.npz')
  fd = os.open(raw, os.O_WRONLY | os.O_CREAT, 0o644)
  with os.fdopen(fd, 'wb') as f:
    np.savez(f, **_srvgg_state_dict())
  assert convert_cli.main([os.fsdecode(raw), '--out', str(tmp_path / 'model')]) == 0
  assert 'Traceback' not in capsys.readouterr().err
  section, _, _ = weights.read_model_dir(tmp_path / 'model')
  assert section['name'] == 'srvgg_compact' and section['scale'] == 2


# ---------------------------------------------------------------- train / throughput: overrides


BAD_SETS = {
    'batch_size_abc': 'train.batch_size=abc',
    'scale_2.5': 'model.scale=2.5',
    'unknown_key': 'train.batch_sise=4',
    'unknown_section': 'nosuch.key=1',
    'no_equals': 'train.batch_size',
    'patch_size_-8': 'data.patch_size=-8',
    'batch_size_0': 'train.batch_size=0',
    'batch_size_nan': 'train.batch_size=nan',
    'lr_nan': 'train.pretrain_lr=nan',
    'lr_inf': 'train.pretrain_lr=inf',
    'lr_-1': 'train.pretrain_lr=-1',
    'patch_size_1e9': 'data.patch_size=1e9',
    'num_steps_-5': 'train.num_steps=-5',
}


@pytest.mark.parametrize('case', sorted(BAD_SETS))
def test_train_bad_override_is_one_line_and_creates_no_workdir(case, tmp_path, capsys):
  workdir = tmp_path / 'run'
  assert train_cli.main(['--exp', 'esrgan_cpu', '--workdir', str(workdir), '--set',
                         BAD_SETS[case]]) == 2
  check_err(capsys.readouterr().err)
  assert not workdir.exists()


def test_train_unknown_experiment(tmp_path, capsys):
  assert train_cli.main(['--exp', 'nosuch', '--workdir', str(tmp_path / 'run')]) == 2
  check_err(capsys.readouterr().err)
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('case', ['batch_size_abc', 'unknown_key', 'patch_size_-8', 'lr_nan'])
def test_throughput_bad_override(case, capsys):
  assert throughput_cli.main(['--exp', 'esrgan_cpu', '--set', BAD_SETS[case]]) == 2
  check_err(capsys.readouterr().err)


@pytest.mark.parametrize('flags', [['--batch', '0'], ['--patch', '-8'], ['--exp', 'nosuch']],
                         ids=['batch_0', 'patch_-8', 'exp_nosuch'])
def test_throughput_bad_flags(flags, tmp_path, capsys):
  out = tmp_path / 'result.json'
  out.write_bytes(PRECIOUS)
  assert throughput_cli.main(['--exp', 'esrgan_cpu', *flags, '--json', str(out)]) == 2
  check_err(capsys.readouterr().err)
  assert out.read_bytes() == PRECIOUS


# ---------------------------------------------------------------- evaluate


EVAL_CASES = ('missing_workdir', 'workdir_random_file', 'empty_workdir', 'garbage_model_json',
              'empty_checkpoints', 'data_missing_folder', 'data_bad_images', 'data_unknown_kind')


@pytest.mark.parametrize('case', EVAL_CASES)
def test_evaluate_bad_inputs(case, models, tmp_path, capsys):
  workdir, data = tmp_path / 'run', None
  if case == 'workdir_random_file':
    workdir = make_bad_weights(tmp_path, 'random_bytes.pth')
  elif case == 'empty_workdir':
    workdir.mkdir()
  elif case == 'garbage_model_json':
    workdir.mkdir()
    (workdir / 'model.json').write_text('{not json')
  elif case == 'empty_checkpoints':
    (workdir / 'checkpoints').mkdir(parents=True)
  elif case.startswith('data_'):
    workdir = models[0]
    data = {'data_missing_folder': f'folder:{tmp_path / "nope"}',
            'data_bad_images': f'folder:{tmp_path / "bad"}',
            'data_unknown_kind': 'nosuch:thing'}[case]
    if case == 'data_bad_images':
      (tmp_path / 'bad').mkdir()
      for name in ('random_bytes.png', 'zero_bytes.png', 'bomb_65535x65535.png'):
        make_bad(tmp_path / 'bad', name)
  out = tmp_path / 'eval'
  argv = ['--workdir', str(workdir), '--out', str(out)] + (['--data', data] if data else [])
  assert evaluate_cli.main(argv) == 2
  check_err(capsys.readouterr().err)
  assert not (tmp_path / 'run' / 'checkpoints').exists() or case == 'empty_checkpoints'


# ---------------------------------------------------------------- data/prepare.py


PREPARE_BAD = ('random_bytes.png', 'zero_bytes.png', 'bomb_65535x65535.png', 'claims_65535x1.png',
               'truncated.jpg', 'one_pixel.png', 'non_utf8_name')


@pytest.mark.parametrize('name', PREPARE_BAD)
def test_prepare_bad_source_image_is_one_line_and_writes_nothing(name, tmp_path, capsys):
  src = tmp_path / 'src'
  src.mkdir()
  Image.fromarray(_photo(40, 40)).save(src / 'good.png')
  if name == 'non_utf8_name':
    make_good(src, name)
  else:
    make_bad(src, name)
  assert prepare_cli.main(['--src', str(src), '--out', str(tmp_path / 'out'), '--workers', '1']) == 2
  check_err(capsys.readouterr().err)
  assert not (tmp_path / 'out' / 'dataset.json').exists()


@pytest.mark.parametrize('flags', [['--crop', '-8'], ['--crop', '0', '--step', '4'],
                                   ['--workers', '0'], ['--images-per-shard', '0'],
                                   ['--min-size', '-1'], ['--thresh-size', '-1']],
                         ids=['crop_-8', 'step_without_crop', 'workers_0', 'per_shard_0',
                              'min_size_-1', 'thresh_-1'])
def test_prepare_bad_flags(flags, tmp_path, capsys):
  src = tmp_path / 'src'
  src.mkdir()
  Image.fromarray(_photo(40, 40)).save(src / 'good.png')
  assert prepare_cli.main(['--src', str(src), '--out', str(tmp_path / 'out'), *flags]) == 2
  check_err(capsys.readouterr().err)
  assert not (tmp_path / 'out').exists()


def test_prepare_takes_unusual_images(tmp_path, capsys):
  src = tmp_path / 'src'
  src.mkdir()
  for kind in GOOD_KINDS:
    if kind != 'non_utf8_name':
      make_good(src, kind)
  assert prepare_cli.main(['--src', str(src), '--out', str(tmp_path / 'out'), '--workers', '1',
                           '--min-size', '8']) == 0
  assert 'Traceback' not in capsys.readouterr().err
  manifest = json.loads((tmp_path / 'out' / 'dataset.json').read_text())
  assert manifest['count'] == len(GOOD_KINDS) - 1


def test_prepare_skips_links_and_fifos_in_the_folder(tmp_path, capsys):
  """Entries that are no regular file (a loop, a dangling link, a FIFO) are not images to prepare."""
  src = tmp_path / 'src'
  src.mkdir()
  Image.fromarray(_photo(40, 40)).save(src / 'good.png')
  for name in ('symlink_loop.png', 'dangling_link.png', 'fifo.png'):
    make_bad(src, name)
  assert prepare_cli.main(['--src', str(src), '--out', str(tmp_path / 'out'), '--workers', '1']) == 0
  assert 'Traceback' not in capsys.readouterr().err


# ---------------------------------------------------------------- the real CLIs


def _cli(*argv, cwd):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=cwd, env=env,
                        timeout=300, check=False)


@pytest.mark.slow
def test_real_cli_exit_codes(models, tmp_path):
  """A few bad inputs through the real entry points: exit status and one line, no traceback."""
  src = tmp_path / 'in'
  src.mkdir()
  make_bad(src, 'bomb_65535x65535.png')
  make_good(src, 'non_utf8_name')  # printed to a real (UTF-8, strict) stdout
  r = _cli('-m', 'enhance_jax.enhance', str(src), '-o', str(tmp_path / 'out'), '--workdir',
           str(models[0]), '--tile', '16', '--tile-pad', '2', cwd=tmp_path)
  assert r.returncode == 1, r.stderr
  check_err(r.stderr)
  assert len(list((tmp_path / 'out').iterdir())) == 1
  r = _cli('-m', 'enhance_jax.train', '--exp', 'esrgan_cpu', '--workdir', str(tmp_path / 'run'),
           '--set', 'model.scale=2.5', cwd=tmp_path)
  assert r.returncode == 2, r.stderr
  check_err(r.stderr)
  assert not (tmp_path / 'run').exists()
  r = _cli(str(ROOT / 'data' / 'prepare.py'), '--src', str(src), '--out', str(tmp_path / 'ds'),
           cwd=tmp_path)
  assert r.returncode == 2, r.stderr
  check_err(r.stderr)
