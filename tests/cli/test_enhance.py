"""enhance: tiles equal the whole image, one program for every size, files in every form people have,
and bad input reported in one sentence while the other files are still written."""

import pathlib
import sys
import threading
import tracemalloc

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
import skimage.transform
from PIL import Image

from enhance_jax import enhance
from enhance_jax.errors import UserError
from enhance_jax.eval import metrics
from enhance_jax.infer import restoring
from enhance_jax.infer import tiling
from enhance_jax.io import image_io
from enhance_jax.models.rrdbnet import RRDBNet

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # `benchmarks` for bare pytest


def photo(h, w, seed=0):
  """A real photograph resized to h x w, float32 [0, 1]."""
  del seed
  return skimage.transform.resize(skimage.data.astronaut(), (h, w), anti_aliasing=True).astype(
      np.float32)


@pytest.fixture(scope='module')
def tiny_rrdbnet():
  """A random 1-block RRDBNet x4 of width 8 and its variables."""
  model = RRDBNet(num_blocks=1, num_features=8, growth_channels=4, scale=4)
  return model, model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))


@pytest.fixture(scope='module')
def tiny_srvgg():
  """A random SRVGGNetCompact x4 with 4 convs of width 8 and its variables."""
  from enhance_jax.models.srvgg import SRVGGNetCompact  # pylint: disable=g-import-not-at-top
  model = SRVGGNetCompact(num_features=8, num_convs=4, scale=4)
  return model, model.init(jax.random.key(1), jnp.zeros((1, 16, 16, 3)))


@pytest.fixture(scope='module')
def rrdbnet_pth(tmp_path_factory):
  """A tiny BasicSR RRDBNet x4 with random weights saved by PyTorch, as a released file would be."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks.torch_reference import models as torch_models  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  net = torch_models.RRDBNet(num_feat=8, num_block=1, num_grow_ch=4, scale=4)
  with torch.no_grad():
    net.conv_last.bias.fill_(0.5)  # outputs around mid-grey rather than clipped at black
  path = tmp_path_factory.mktemp('weights') / 'tiny_x4.pth'
  torch.save({'params_ema': net.state_dict()}, path)
  return path


# ---------------------------------------------------------------- tiling


@pytest.mark.parametrize('length,tile,pad,multiple', [(10, 16, 4, 1), (16, 16, 4, 1), (17, 16, 4, 1),
                                                      (150, 48, 16, 1), (1000, 256, 32, 1),
                                                      (1000, 256, 32, 4), (334, 64, 8, 2)])
def test_window_cores_partition_the_side_and_each_has_its_context(length, tile, pad, multiple):
  ws = tiling.windows(length, tile, pad, multiple)
  cores = [(lo, hi) for _, lo, hi in ws]
  assert cores[0][0] == 0 and cores[-1][1] == length
  assert all(a[1] == b[0] for a, b in zip(cores, cores[1:]))  # a partition: each pixel once
  for start, lo, hi in ws:
    assert start % multiple == 0 and 0 <= start and start + min(tile, length) <= length
    assert start <= lo and hi <= start + min(tile, length)
    assert lo - start >= pad or start == 0  # context before the core, or the image's own border
    assert start + tile - hi >= pad or start + tile >= length  # and after it


def test_default_pads_grow_with_depth():
  from enhance_jax.models.srvgg import SRVGGNetCompact  # pylint: disable=g-import-not-at-top
  assert tiling.default_pad(RRDBNet(num_blocks=23)) == 88  # released x4plus: measured 80 needed
  assert tiling.default_pad(RRDBNet(num_blocks=6)) == 56  # the anime model: measured 40-48
  assert tiling.default_pad(SRVGGNetCompact(num_convs=16)) == 24  # animevideov3: measured 12-16
  assert all(tiling.default_pad(m) % 8 == 0 for m in (RRDBNet(num_blocks=1), SRVGGNetCompact()))


@pytest.mark.slow
@pytest.mark.parametrize('which', ['tiny_rrdbnet', 'tiny_srvgg'])
def test_tiled_equals_whole_image_without_seams(which, request):
  model, variables = request.getfixturevalue(which)
  image = photo(150, 170)  # windows of 64 with 24 pixels of context: more than these nets see
  whole = tiling.Enhancer(model, variables, 4, tile=0)(image)
  tiled_enhancer = tiling.Enhancer(model, variables, 4, tile=64, pad=24, batch=3)
  tiled = tiled_enhancer(image)
  assert tiled.shape == whole.shape == (600, 680, 3)
  assert np.abs(tiled - whole).max() < 1e-4
  # the largest jump across any tile boundary is no larger than the whole image's own
  assert np.abs(np.diff(tiled, axis=1)).max() <= np.abs(np.diff(whole, axis=1)).max() + 1e-3


def test_images_of_different_sizes_share_one_compiled_program(tiny_rrdbnet):
  model, variables = tiny_rrdbnet
  e = tiling.Enhancer(model, variables, 4, tile=32, pad=8, batch=2)
  shapes = [e(photo(h, w)).shape for h, w in ((40, 70), (33, 33), (50, 90), (100, 37))]
  assert shapes == [(160, 280, 3), (132, 132, 3), (200, 360, 3), (400, 148, 3)]
  assert e.compiles == 1  # every side at least a window: one window shape
  assert e(photo(20, 90)).shape == (80, 360, 3) and e.compiles == 2  # a side under it runs whole


def test_concurrent_requests_compile_once_and_agree(tiny_rrdbnet):
  model, variables = tiny_rrdbnet
  e = tiling.Enhancer(model, variables, 4, tile=32, pad=8, batch=2)
  images = [photo(50 + 7 * i, 60) for i in range(4)]
  results = [None] * 4
  threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, e(images[i])))
             for i in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert e.compiles == 1
  for image, out in zip(images, results):
    assert np.abs(out - e(image)).max() < 1e-6


def test_the_program_cache_is_bounded(tiny_rrdbnet):
  model, variables = tiny_rrdbnet
  e = tiling.Enhancer(model, variables, 4, tile=0, max_programs=2)
  for side in (8, 12, 16, 20):
    e(photo(side, side))
  assert e.compiles == 4 and len(e._programs) == 2  # pylint: disable=protected-access


def test_host_memory_grows_with_the_output_not_with_a_float_copy_of_it(tiny_srvgg):
  model, variables = tiny_srvgg
  e = tiling.Enhancer(model, variables, 4, tile=64, pad=8, batch=4)
  e(photo(64, 64), dtype=np.uint8)  # compile outside the measurement

  def peak(h, w):
    image = photo(h, w)
    tracemalloc.start()
    out = e(image, dtype=np.uint8)
    used = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out.shape == (4 * h, 4 * w, 3) and out.dtype == np.uint8
    return used, out.nbytes

  small, _ = peak(128, 256)
  large, out_bytes = peak(512, 256)  # 4x the rows: 12 MB more uint8 output, 50 MB more as float
  assert large - small < 1.5 * out_bytes  # one batch of windows in float, whatever the height


def test_bf16_runs_close_to_fp32(tiny_rrdbnet, rrdbnet_pth):
  restored = restoring.restore(rrdbnet_pth)
  image = photo(40, 48)
  fp32 = tiling.enhancer_for(restored, 'fp32', tile=32, pad=8)(image)
  bf16 = tiling.enhancer_for(restored, 'bf16', tile=32, pad=8)(image)
  assert np.isfinite(bf16).all() and bf16.max() > 0
  assert float(metrics.psnr(bf16, fp32)) > 30


def test_a_pad_that_fills_the_window_is_refused(tiny_rrdbnet):
  with pytest.raises(UserError, match='leaves no room inside --tile-pad 16'):
    tiling.Enhancer(*tiny_rrdbnet, 4, tile=32, pad=16)


# ---------------------------------------------------------------- image files


def _save_png16(path, array):
  image_io.write(path, array.astype(np.float32) / 65535.0, bits=16)


def test_16_bit_png_and_tiff_round_trip_exactly(tmp_path):
  rng = np.random.default_rng(0)
  for shape in ((9, 11, 3), (9, 11, 4), (9, 11, 1)):
    a = rng.integers(0, 65536, shape).astype(np.uint16)
    for ext in ('.png', '.tif'):
      path = tmp_path / f'x{shape[-1]}{ext}'
      image_io.write(path, a, bits=16)
      back, info = image_io.read(path)
      assert info.bits == 16 and back.shape == shape
      assert np.array_equal(image_io.quantise(back, 16), a)


def test_exif_rotated_input_is_read_upright(tmp_path):
  pixels = (photo(20, 30) * 255).astype(np.uint8)  # stored 30 wide, 20 tall
  exif = Image.Exif()
  exif[0x0112] = 6  # rotate 90 degrees clockwise to display
  Image.fromarray(pixels).save(tmp_path / 'r.jpg', exif=exif, quality=95)
  image, _ = image_io.read(tmp_path / 'r.jpg')
  assert image.shape[:2] == (30, 20)
  right = np.abs(image - np.rot90(pixels, -1) / 255.0).mean()  # clockwise, as tag 6 says
  wrong = np.abs(image - np.rot90(pixels, 1) / 255.0).mean()
  assert right < 0.03 < wrong


def test_palette_and_grey_alpha_images_read(tmp_path):
  rgb = Image.fromarray((photo(16, 16) * 255).astype(np.uint8))
  rgb.convert('P', palette=Image.Palette.ADAPTIVE).save(tmp_path / 'p.png')
  rgb.convert('LA').save(tmp_path / 'la.png')
  assert image_io.read(tmp_path / 'p.png')[0].shape == (16, 16, 3)
  assert image_io.read(tmp_path / 'la.png')[0].shape == (16, 16, 2)


# ---------------------------------------------------------------- the command


def _run(*argv):
  return enhance.main([str(a) for a in argv])


def test_cli_weights_file_16_bit_rgba_grey_and_jpeg(tmp_path, rrdbnet_pth):
  src = tmp_path / 'in'
  (src / 'sub').mkdir(parents=True)
  rgb = photo(20, 24)
  rgba = np.concatenate([rgb, np.linspace(0, 1, 20 * 24, dtype=np.float32).reshape(20, 24, 1)], -1)
  image_io.write(src / 'rgb16.png', rgb, bits=16)
  image_io.write(src / 'sub' / 'rgba.png', rgba)
  image_io.write(src / 'grey.png', rgb.mean(-1, keepdims=True))
  image_io.write(src / 'photo.jpg', rgb)
  assert _run(src, '-o', tmp_path / 'out', '--weights', rrdbnet_pth, '--tile', 16,
              '--tile-pad', 4, '--suffix', '_x4') == 0
  out = tmp_path / 'out'
  rgb16, info = image_io.read(out / 'rgb16_x4.png')
  assert info.bits == 16 and rgb16.shape == (80, 96, 3)
  levels = image_io.quantise(rgb16, 16)
  assert len(np.unique(levels)) > 256 and (levels % 257 != 0).mean() > 0.9  # not 8 bits scaled up
  rgba_out, _ = image_io.read(out / 'sub' / 'rgba_x4.png')
  assert rgba_out.shape == (80, 96, 4)
  grey_out = Image.open(out / 'grey_x4.png')
  assert grey_out.mode == 'L' and grey_out.size == (96, 80)
  assert Image.open(out / 'photo_x4.jpg').format == 'JPEG'


def test_alpha_by_model_and_by_bicubic_both_take_effect(tmp_path, rrdbnet_pth):
  rgba = np.concatenate([photo(20, 20), np.tile(np.linspace(0, 1, 20, dtype=np.float32),
                                                (20, 1))[..., None]], -1)
  image_io.write(tmp_path / 'a.png', rgba)
  for how in ('model', 'bicubic'):
    assert _run(tmp_path / 'a.png', '-o', tmp_path / f'{how}.png', '--weights', rrdbnet_pth,
                '--alpha', how, '--tile', 0) == 0
  by_model, _ = image_io.read(tmp_path / 'model.png')
  by_bicubic, _ = image_io.read(tmp_path / 'bicubic.png')
  bicubic = skimage.transform.resize(rgba[..., 3], (80, 80), order=3)
  assert np.abs(by_bicubic[..., 3] - bicubic).mean() < 0.02  # the smooth ramp, enlarged
  assert np.abs(by_model[..., 3] - by_bicubic[..., 3]).mean() > 0.02  # the random model's alpha
  np.testing.assert_array_equal(by_model[..., :3], by_bicubic[..., :3])


def test_outscale_resizes_after_the_model(tmp_path, rrdbnet_pth):
  image_io.write(tmp_path / 'a.png', photo(21, 30))
  assert _run(tmp_path / 'a.png', '-o', tmp_path / 'b.png', '--weights', rrdbnet_pth,
              '--outscale', 2.5) == 0
  assert Image.open(tmp_path / 'b.png').size == (75, 52)  # round(30 * 2.5), round(21 * 2.5)


@pytest.mark.slow
def test_trained_workdir_beats_bicubic_on_a_held_out_photo(tmp_path, l1_run):
  from enhance_jax.data import degradations# pylint: disable=g-import-not-at-top
  hr = skimage.data.coffee()[:256, :384].astype(np.float32) / 255.0  # held out in training
  restored = restoring.restore(l1_run)
  lr = np.asarray(degradations.parse(restored.config.data.degradation)(hr, np.random.default_rng(0)))
  image_io.write(tmp_path / 'lr.png', lr)
  assert _run(tmp_path / 'lr.png', '-o', tmp_path / 'sr.png', '--workdir', l1_run, '--tile', 32,
              '--tile-pad', 8) == 0
  sr, _ = image_io.read(tmp_path / 'sr.png')
  lr8, _ = image_io.read(tmp_path / 'lr.png')
  bicubic = np.clip(skimage.transform.resize(lr8, (256, 384), order=3), 0, 1)
  assert sr.shape == hr.shape
  assert float(metrics.psnr(sr, hr)) > float(metrics.psnr(bicubic, hr))


def test_existing_outputs_are_kept_without_overwrite(tmp_path, rrdbnet_pth, capsys):
  image_io.write(tmp_path / 'a.png', photo(16, 16))
  (tmp_path / 'b.png').write_bytes(b'precious')
  assert _run(tmp_path / 'a.png', '-o', tmp_path / 'b.png', '--weights', rrdbnet_pth) == 1
  assert (tmp_path / 'b.png').read_bytes() == b'precious'
  assert '--overwrite' in capsys.readouterr().err
  assert _run(tmp_path / 'a.png', '-o', tmp_path / 'b.png', '--weights', rrdbnet_pth,
              '--overwrite') == 0
  assert Image.open(tmp_path / 'b.png').size == (64, 64)


def test_bad_files_in_a_folder_are_reported_and_the_others_written(tmp_path, rrdbnet_pth, capsys):
  src = tmp_path / 'in'
  src.mkdir()
  image_io.write(src / 'good.png', photo(16, 16))
  (src / 'text.png').write_text('not an image')
  (src / 'empty.png').write_bytes(b'')
  Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(src / 'dot.png')
  assert _run(src, '-o', tmp_path / 'out', '--weights', rrdbnet_pth) == 1
  err = capsys.readouterr().err
  assert 'text.png as an image' in err and 'empty (0 bytes)' in err and '1x1 pixels' in err
  assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['good.png']


@pytest.mark.parametrize('case,message', [
    ('empty_folder', 'holds no images'),
    ('missing_output_folder', 'does not exist; create it'),
    ('wrong_arch', 'edsr'),
    ('both_sources', 'give one of --model'),
    ('missing_input', 'does not exist'),
    ('unknown_model', 'realesrgan-x4plus'),  # the nearest names
    ('unreachable_model', 'RealESRGAN_x2plus.pth'),  # not installed, not cached, not reachable
])
def test_bad_invocations_fail_in_one_sentence(case, message, tmp_path, rrdbnet_pth, capsys,
                                              monkeypatch):
  monkeypatch.setenv('ENHANCE_JAX_MODELS', str(tmp_path / 'cache'))
  monkeypatch.setenv('ENHANCE_JAX_MODEL_MIRROR', 'http://127.0.0.1:9/')  # the discard port: refused
  image_io.write(tmp_path / 'a.png', photo(16, 16))
  (tmp_path / 'empty').mkdir()
  argv = {'empty_folder': [tmp_path / 'empty', '-o', tmp_path / 'o', '--weights', rrdbnet_pth],
          'missing_output_folder': [tmp_path / 'a.png', '-o', tmp_path / 'no' / 'b.png',
                                    '--weights', rrdbnet_pth],
          'wrong_arch': [tmp_path / 'a.png', '-o', tmp_path / 'b.png', '--weights', rrdbnet_pth,
                         '--arch', 'edsr'],
          'both_sources': [tmp_path / 'a.png', '-o', tmp_path / 'b.png', '--weights', rrdbnet_pth,
                           '--workdir', tmp_path],
          'missing_input': [tmp_path / 'nope.png', '-o', tmp_path / 'b.png', '--weights',
                            rrdbnet_pth],
          'unknown_model': [tmp_path / 'a.png', '-o', tmp_path / 'b.png', '--model',
                            'realesrgan-x4pls'],
          'unreachable_model': [tmp_path / 'a.png', '-o', tmp_path / 'b.png', '--model',
                                'realesrgan-x2plus']}[case]
  assert _run(*argv) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith('error: ') and message in err and len(err.splitlines()) == 1
  assert not (tmp_path / 'b.png').exists() and not (tmp_path / 'no').exists()


@pytest.mark.slow
def test_the_onednn_primitive_cache_is_bounded_for_a_server_seeing_every_size():
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  child = '''
import numpy as np, jax, jax.numpy as jnp
from enhance_jax.infer import tiling
from enhance_jax.models.srvgg import SRVGGNetCompact
from enhance_jax.ops import conv
assert conv.onednn_enabled(), conv.onednn_unavailable_reason()
m = SRVGGNetCompact(num_features=4, num_convs=1, scale=2)
e = tiling.Enhancer(m, m.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3))), 2, tile=0,
                     max_programs=2)
for side in range(8, 14):  # six whole-image shapes, three convolutions each
  e(np.zeros((side, 9, 3), np.float32))
print(*conv.cached_primitives(), e.compiles, len(e._programs))
'''
  env = {**os.environ, 'ENHANCE_JAX_ONEDNN_CACHE': '8', 'JAX_PLATFORMS': 'cpu'}
  out = subprocess.run([sys.executable, '-c', child], env=env, capture_output=True, text=True,
                       check=True).stdout.split()
  assert out == ['8', '8', '6', '2']  # 18 primitives and 6 programs made, 8 and 2 kept
