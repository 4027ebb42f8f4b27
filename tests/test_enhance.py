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
from enhance_jax import image_io
from enhance_jax import inference
from enhance_jax import metrics
from enhance_jax.errors import UserError
from enhance_jax.models.rrdbnet import RRDBNet

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # `benchmarks` for bare pytest


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


@pytest.mark.parametrize('length,tile,overlap', [(10, 16, 4), (16, 16, 4), (17, 16, 4), (150, 48, 16),
                                                 (1000, 256, 32)])
def test_tiles_cover_the_side_with_the_overlap_and_feathers_sum_positive(length, tile, overlap):
  starts = enhance.tile_starts(length, tile, overlap)
  assert starts[0] == 0 and starts[-1] == max(0, length - tile)
  assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))  # overlap at least OVERLAP
  total = np.zeros(max(length, tile) * 2, np.float32)
  for s, w in zip(starts, enhance._axis_weights(starts, tile, 2)):  # pylint: disable=protected-access
    total[s * 2:(s + tile) * 2] += w
    assert w.min() >= 0 and w.max() == 1
  # neighbours' ramps are complementary: the weights sum to 1 everywhere (a partition of unity)
  np.testing.assert_allclose(total[:length * 2], 1.0, atol=1e-6)
  np.testing.assert_allclose(enhance._weight_sums(starts, enhance._axis_weights(starts, tile, 2), 2)[  # pylint: disable=protected-access
      :length * 2], 1.0, atol=1e-6)


def test_feather_is_zero_at_shared_edges_and_one_at_the_image_border():
  w = enhance.feather(64, 16, 0)
  assert w[:6].max() == 0 and w[10:].min() == 1  # zero over the outer 3/8, ramp over the middle 1/4
  assert np.all(np.diff(w) >= 0)
  assert enhance.feather(64, 0, 0).min() == 1


@pytest.mark.parametrize('which', ['tiny_rrdbnet', 'tiny_srvgg'])
def test_tiled_equals_whole_image_without_seams(which, request):
  model, variables = request.getfixturevalue(which)
  image = photo(150, 170)  # 4 x 4 tiles of 64 with 24 shared
  whole = enhance.Enhancer(model, variables, 4, tile=0)(image)
  tiled_enhancer = enhance.Enhancer(model, variables, 4, tile=64, overlap=24, batch=3)
  tiled = tiled_enhancer(image)
  assert tiled.shape == whole.shape == (600, 680, 3)
  assert np.abs(tiled - whole).max() < 1e-3
  # the largest jump across any tile boundary is no larger than the whole image's own
  assert np.abs(np.diff(tiled, axis=1)).max() <= np.abs(np.diff(whole, axis=1)).max() + 1e-3


def test_images_of_different_sizes_share_one_compiled_program(tiny_rrdbnet):
  model, variables = tiny_rrdbnet
  e = enhance.Enhancer(model, variables, 4, tile=32, overlap=8, batch=2)
  shapes = [e(photo(h, w)).shape for h, w in ((40, 70), (33, 33), (20, 90), (100, 37))]
  assert shapes == [(160, 280, 3), (132, 132, 3), (80, 360, 3), (400, 148, 3)]
  assert e.compiles == 1


def test_concurrent_requests_compile_once_and_agree(tiny_rrdbnet):
  model, variables = tiny_rrdbnet
  e = enhance.Enhancer(model, variables, 4, tile=32, overlap=8, batch=2)
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
  e = enhance.Enhancer(model, variables, 4, tile=0, max_programs=2)
  for side in (8, 12, 16, 20):
    e(photo(side, side))
  assert e.compiles == 4 and len(e._programs) == 2  # pylint: disable=protected-access


def test_host_memory_grows_with_the_output_not_with_a_float_copy_of_it(tiny_srvgg):
  model, variables = tiny_srvgg
  e = enhance.Enhancer(model, variables, 4, tile=64, overlap=16, batch=4)
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
  assert large - small < 1.5 * out_bytes  # one band of tiles in float, whatever the height


def test_bf16_runs_close_to_fp32(tiny_rrdbnet, rrdbnet_pth):
  restored = inference.restore(rrdbnet_pth)
  image = photo(40, 48)
  fp32 = enhance.enhancer_for(restored, 'fp32', tile=32, overlap=8)(image)
  bf16 = enhance.enhancer_for(restored, 'bf16', tile=32, overlap=8)(image)
  assert np.isfinite(bf16).all() and bf16.max() > 0
  assert float(metrics.psnr(bf16, fp32)) > 30


def test_a_bad_overlap_is_refused(tiny_rrdbnet):
  with pytest.raises(UserError, match='under half the tile'):
    enhance.Enhancer(*tiny_rrdbnet, 4, tile=32, overlap=16)


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
              '--tile-overlap', 4, '--suffix', '_x4') == 0
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


def test_trained_workdir_beats_bicubic_on_a_held_out_photo(tmp_path, l1_run):
  from enhance_jax import degradations  # pylint: disable=g-import-not-at-top
  hr = skimage.data.coffee()[:256, :384].astype(np.float32) / 255.0  # held out in training
  restored = inference.restore(l1_run)
  lr = np.asarray(degradations.parse(restored.config.data.degradation)(hr, np.random.default_rng(0)))
  image_io.write(tmp_path / 'lr.png', lr)
  assert _run(tmp_path / 'lr.png', '-o', tmp_path / 'sr.png', '--workdir', l1_run, '--tile', 32,
              '--tile-overlap', 8) == 0
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
    ('both_sources', 'exactly one of --workdir'),
    ('missing_input', 'does not exist'),
])
def test_bad_invocations_fail_in_one_sentence(case, message, tmp_path, rrdbnet_pth, capsys):
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
                            rrdbnet_pth]}[case]
  assert _run(*argv) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith('error: ') and message in err and len(err.splitlines()) == 1
  assert not (tmp_path / 'b.png').exists() and not (tmp_path / 'no').exists()


def test_the_onednn_primitive_cache_is_bounded_for_a_server_seeing_every_size():
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  child = '''
import numpy as np, jax, jax.numpy as jnp
from enhance_jax import conv, enhance
from enhance_jax.models.srvgg import SRVGGNetCompact
assert conv.onednn_enabled(), conv.onednn_unavailable_reason()
m = SRVGGNetCompact(num_features=4, num_convs=1, scale=2)
e = enhance.Enhancer(m, m.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3))), 2, tile=0,
                     max_programs=2)
for side in range(8, 14):  # six whole-image shapes, three convolutions each
  e(np.zeros((side, 9, 3), np.float32))
print(*conv.cached_primitives(), e.compiles, len(e._programs))
'''
  env = {**os.environ, 'ENHANCE_JAX_ONEDNN_CACHE': '8', 'JAX_PLATFORMS': 'cpu'}
  out = subprocess.run([sys.executable, '-c', child], env=env, capture_output=True, text=True,
                       check=True).stdout.split()
  assert out == ['8', '8', '6', '2']  # 18 primitives and 6 programs made, 8 and 2 kept
