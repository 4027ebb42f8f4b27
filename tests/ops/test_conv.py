"""The oneDNN convolution path (enhance_jax/ops/conv.py): same function and gradients as XLA's
convolution, used where it applies and only there, and clear errors when it cannot be built."""

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from enhance_jax.errors import UserError
from enhance_jax.ops import conv

NHWC = ('NHWC', 'HWIO', 'NHWC')

# (x shape, kernel shape, strides, padding): the geometries the models use (3x3 same, SRGAN's 9x9, the
# discriminators' stride 2, DCGAN-SR's 4x4 'SAME' with uneven padding) and odd sizes.
GEOMETRIES = [
    ((2, 16, 16, 8), (3, 3, 8, 4), (1, 1), ((1, 1), (1, 1))),
    ((2, 12, 12, 3), (9, 9, 3, 6), (1, 1), ((4, 4), (4, 4))),
    ((3, 17, 15, 6), (3, 3, 6, 5), (2, 2), ((1, 1), (1, 1))),
    ((2, 16, 16, 4), (4, 4, 4, 7), (1, 1), ((1, 2), (1, 2))),
    ((1, 9, 11, 5), (1, 1, 5, 3), (1, 1), ((0, 0), (0, 0))),
    ((2, 10, 10, 4), (3, 3, 4, 4), (1, 2), ((0, 1), (2, 0))),
    ((1, 20, 18, 4), (17, 17, 4, 3), (1, 1), ((8, 8), (8, 8))),
]


def _inputs(x_shape, w_shape):
  kx, kw = jax.random.split(jax.random.key(0))
  return jax.random.normal(kx, x_shape), 0.3 * jax.random.normal(kw, w_shape)


def test_onednn_is_on_for_this_suite():
  """The suite runs on one CPU device with oneDNN installed (a dependency): the fast path is live, so
  every model test below exercises it."""
  assert conv.onednn_unavailable_reason() is None
  assert conv.onednn_enabled()


@pytest.mark.parametrize('x_shape,w_shape,strides,padding', GEOMETRIES)
def test_forward_and_gradients_match_xla(x_shape, w_shape, strides, padding):
  x, w = _inputs(x_shape, w_shape)
  ref_fn = lambda x, w: lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC)
  new_fn = lambda x, w: conv.onednn_conv(x, w, strides, padding)
  y_ref, vjp_ref = jax.vjp(ref_fn, x, w)
  y_new, vjp_new = jax.vjp(jax.jit(new_fn), x, w)
  assert y_new.shape == y_ref.shape
  np.testing.assert_allclose(y_new, y_ref, rtol=1e-5, atol=1e-5)
  dy = jax.random.normal(jax.random.key(1), y_ref.shape)
  for got, want in zip(vjp_new(dy), vjp_ref(dy)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _hlo(fn, *args):
  return jax.jit(fn).lower(*args).compile().as_text()


def test_dispatch_uses_onednn_for_float32_nhwc_and_xla_otherwise():
  x, w = _inputs((2, 8, 8, 4), (3, 3, 4, 4))
  plain = lambda x, w: conv.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=NHWC)
  assert 'enhance_jax_conv_fwd' in _hlo(plain, x, w)
  grads = jax.grad(lambda x, w: jnp.sum(plain(x, w) ** 2), argnums=(0, 1))
  text = _hlo(grads, x, w)
  assert 'enhance_jax_conv_dx' in text and 'enhance_jax_conv_dw' in text
  fallbacks = {
      'bf16': lambda x, w: conv.conv_general_dilated(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16),
                                                     (1, 1), 'SAME', dimension_numbers=NHWC),
      'dilated': lambda x, w: conv.conv_general_dilated(x, w, (1, 1), 'SAME', rhs_dilation=(2, 2),
                                                        dimension_numbers=NHWC),
      'grouped': lambda x, w: conv.conv_general_dilated(x, w[:, :, :2], (1, 1), 'SAME',
                                                        dimension_numbers=NHWC, feature_group_count=2),
      'nchw': lambda x, w: conv.conv_general_dilated(x.transpose(0, 3, 1, 2), w, (1, 1), 'SAME',
                                                     dimension_numbers=('NCHW', 'HWIO', 'NCHW')),
      'cropping': lambda x, w: conv.conv_general_dilated(x, w, (1, 1), ((-1, 1), (1, 1)),
                                                         dimension_numbers=NHWC),
  }
  for name, fn in fallbacks.items():
    text = _hlo(fn, x, w)
    assert 'enhance_jax_conv' not in text, name
  # the fallbacks still compute the convolution they were asked for
  np.testing.assert_allclose(
      fallbacks['dilated'](x, w),
      lax.conv_general_dilated(x, w, (1, 1), 'SAME', rhs_dilation=(2, 2), dimension_numbers=NHWC),
      rtol=1e-6)


# (x shape, kernel shape, padding, feature groups): 1x1 convolutions and small depthwise ones, which a
# CPU computes as a dot and as a sum of taps.
MATMUL_AND_TAPS = [
    ((2, 9, 11, 5), (1, 1, 5, 3), ((0, 0), (0, 0)), 1),
    ((2, 9, 11, 5), (1, 1, 5, 3), 'VALID', 1),
    ((2, 12, 10, 6), (3, 3, 1, 6), 'SAME', 6),
    ((1, 11, 13, 4), (5, 5, 1, 4), ((2, 1), (0, 2)), 4),
    ((2, 8, 8, 3), (7, 7, 1, 3), ((3, 3), (3, 3)), 3),
]


@pytest.mark.parametrize('x_shape,w_shape,padding,groups', MATMUL_AND_TAPS)
def test_pointwise_and_small_depthwise_convolutions_need_no_convolution_op(x_shape, w_shape, padding,
                                                                           groups):
  x, w = _inputs(x_shape, w_shape)
  ours = lambda x, w: conv.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=NHWC,
                                                feature_group_count=groups)
  ref = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=NHWC,
                                              feature_group_count=groups)
  grads = jax.grad(lambda x, w: jnp.sum(ours(x, w) ** 2), argnums=(0, 1))
  for fn in (ours, grads):
    text = _hlo(fn, x, w)
    assert 'convolution(' not in text and 'enhance_jax_conv' not in text, text
  y, vjp = jax.vjp(jax.jit(ours), x, w)
  y_ref, vjp_ref = jax.vjp(ref, x, w)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  dy = jax.random.normal(jax.random.key(1), y_ref.shape)
  for got, want in zip(vjp(dy), vjp_ref(dy)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_large_or_strided_depthwise_convolutions_stay_convolutions():
  x, w = _inputs((1, 12, 12, 4), (9, 9, 1, 4))
  for strides, kernel in (((1, 1), w), ((2, 2), w[:3, :3])):
    fn = lambda x, k, s=strides: conv.conv_general_dilated(x, k, s, 'SAME', dimension_numbers=NHWC,
                                                           feature_group_count=4)
    assert 'convolution(' in _hlo(fn, x, kernel)


def test_large_kernels_take_their_weight_gradient_from_xla():
  """oneDNN's weight gradient for 15x15 and up is a reference kernel (25x slower than XLA's): the
  input gradient stays oneDNN's, the weight gradient is XLA's convolution."""
  x, w = _inputs((1, 20, 20, 4), (17, 17, 4, 4))
  fn = lambda x, w: jnp.sum(conv.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=NHWC) ** 2)
  text = _hlo(jax.grad(fn, argnums=(0, 1)), x, w)
  assert 'enhance_jax_conv_dx' in text and 'enhance_jax_conv_dw' not in text and 'convolution(' in text
  small = _hlo(jax.grad(fn, argnums=(0, 1)), x, w[:13, :13])
  assert 'enhance_jax_conv_dw' in small


def test_flax_conv_with_the_hook_equals_plain_flax_conv():
  x = jax.random.uniform(jax.random.key(2), (2, 12, 12, 3))
  for kwargs in ({'kernel_size': (3, 3), 'padding': 1}, {'kernel_size': (4, 4), 'padding': 'SAME',
                                                         'strides': 2}):
    ours, plain = conv.Conv(5, **kwargs), nn.Conv(5, **kwargs)
    params = plain.init(jax.random.key(3), x)
    assert jax.tree.structure(ours.init(jax.random.key(3), x)) == jax.tree.structure(params)
    np.testing.assert_allclose(ours.apply(params, x), plain.apply(params, x), rtol=1e-5, atol=1e-6)
    g_ours = jax.grad(lambda p: jnp.sum(ours.apply(p, x) ** 2))(params)
    g_plain = jax.grad(lambda p: jnp.sum(plain.apply(p, x) ** 2))(params)
    for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_plain)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_mode_flag(monkeypatch):
  monkeypatch.setenv('ENHANCE_JAX_CONV', 'xla')
  assert conv.onednn_unavailable_reason() == 'ENHANCE_JAX_CONV=xla'
  monkeypatch.setenv('ENHANCE_JAX_CONV', 'fast')
  with pytest.raises(UserError, match='ENHANCE_JAX_CONV=.fast.: use one of auto, xla, onednn'):
    conv.onednn_unavailable_reason()


def test_build_errors_name_the_cause(tmp_path, monkeypatch):
  prefix = conv.onednn_prefix()
  assert prefix is not None
  monkeypatch.setenv('CXX', str(tmp_path / 'no-such-compiler'))
  with pytest.raises(RuntimeError, match='no C.. compiler'):
    conv.build(prefix, tmp_path / 'a')
  monkeypatch.setenv('CXX', 'false')  # a "compiler" that fails
  with pytest.raises(RuntimeError, match='false failed'):
    conv.build(prefix, tmp_path / 'b')
  assert not list((tmp_path / 'b').glob('*.so'))  # nothing half-written is left to be loaded


@pytest.mark.slow
def test_build_caches_by_source(tmp_path):
  lib = conv.build(conv.onednn_prefix(), tmp_path)
  assert lib.exists() and lib.suffix == '.so'
  mtime = lib.stat().st_mtime_ns
  assert conv.build(conv.onednn_prefix(), tmp_path) == lib
  assert lib.stat().st_mtime_ns == mtime  # the second call did not recompile


def test_xla_convolutions_context_traces_xla_convolutions():
  """What throughput.py uses to let XLA's cost analysis count the convolutions' FLOPs."""
  x, w = _inputs((2, 8, 8, 4), (3, 3, 4, 4))
  fn = lambda x, w: conv.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=NHWC)
  with conv.xla_convolutions():
    lowered = jax.jit(fn).lower(x, w)
  assert 'enhance_jax_conv' not in lowered.as_text()
  # 2 flops per multiply-add, batch 2, 4 -> 4 channels; XLA skips the taps that land on SAME's zero
  # padding: 22 of the 8 x 3 (position, tap) pairs per spatial axis hit the image.
  assert lowered.cost_analysis()['flops'] == 2 * 2 * 22 * 22 * 4 * 4
  fresh = lambda x, w: fn(x, w)  # jit caches traces by function, not by this context
  assert 'enhance_jax_conv' in jax.jit(fresh).lower(x, w).as_text()  # outside: oneDNN again


@pytest.fixture(name='fresh_conv')
def fresh_conv_fixture():
  """conv's per-process caches emptied before and after a test that changes what they would find."""
  caches = (conv._library, conv._load, conv.onednn_enabled)  # pylint: disable=protected-access
  for c in caches:
    c.cache_clear()
  yield
  for c in caches:
    c.cache_clear()


@pytest.mark.parametrize('missing', ['compiler', 'onednn'])
def test_without_a_compiler_or_onednn_the_run_says_so_once_and_uses_xla(
    missing, tmp_path, monkeypatch, caplog, fresh_conv):
  """No C++ compiler (nothing cached yet) or no oneDNN headers/library: one warning naming the cause
  and the fix, then every convolution is XLA's, with the same results."""
  monkeypatch.setattr(conv, 'cache_dir', lambda: tmp_path / 'cache')  # nothing built yet
  if missing == 'compiler':
    monkeypatch.setenv('CXX', str(tmp_path / 'no-such-compiler'))
    cause = 'no C++ compiler'
  else:
    monkeypatch.setattr(conv, 'onednn_prefix', lambda: None)
    cause = "oneDNN is not installed (pip install 'enhance_jax[onednn]'"
  x, w = _inputs((2, 8, 8, 4), (3, 3, 4, 4))
  with caplog.at_level('WARNING'):
    outs = [conv.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=NHWC)
            for _ in range(3)]
    assert not conv.onednn_enabled()
  said = [r.getMessage() for r in caplog.records if 'not oneDNN' in r.getMessage()]
  assert len(said) == 1 and cause in said[0], said
  expected = lax.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=NHWC)
  for out in outs:
    np.testing.assert_array_equal(np.asarray(out), np.asarray(expected))
  jaxpr = str(jax.make_jaxpr(lambda a, b: conv.conv_general_dilated(
      a, b, (1, 1), 'SAME', dimension_numbers=NHWC))(x, w))
  assert 'conv_general_dilated' in jaxpr and 'ffi_call' not in jaxpr


def test_build_key_follows_what_the_kernels_link_against(tmp_path, monkeypatch):
  """The cached library's name changes with jaxlib's FFI headers, oneDNN's headers or library, and
  the compiler: a jaxlib or oneDNN upgrade never loads a stale build."""
  prefix = conv.onednn_prefix()
  base = conv.build_key(prefix, 'c++')
  assert base == conv.build_key(prefix, 'c++') and base != conv.build_key(prefix, 'clang++')
  ffi = tmp_path / 'ffi'
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.copytree(jax.ffi.include_dir(), ffi)
  monkeypatch.setattr(jax.ffi, 'include_dir', lambda: str(ffi))
  assert conv.build_key(prefix, 'c++') == base  # same bytes, same key
  header = next(ffi.rglob('api.h'))
  header.write_text(header.read_text() + '\n// another jaxlib\n')
  assert conv.build_key(prefix, 'c++') != base
  fake = tmp_path / 'prefix'  # another oneDNN: same headers, another library file
  shutil.copytree(prefix / 'include' / 'oneapi', fake / 'include' / 'oneapi')
  (fake / 'lib').mkdir()
  (fake / 'lib' / 'libdnnl.so').write_bytes(b'not the same library')
  monkeypatch.undo()
  assert conv.build_key(fake, 'c++') != conv.build_key(prefix, 'c++')


@pytest.mark.slow
def test_kernels_find_onednn_and_its_runtimes_without_ld_library_path(tmp_path):
  """The library carries DT_RPATH to oneDNN's folder, which also serves libdnnl's own dependencies
  (TBB, the SYCL runtime): a fresh process with no LD_LIBRARY_PATH loads it."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  lib = conv.build(conv.onednn_prefix(), tmp_path)
  dynamic = subprocess.run(['readelf', '-d', str(lib)], capture_output=True, text=True, check=True)
  assert '(RPATH)' in dynamic.stdout and '(RUNPATH)' not in dynamic.stdout, dynamic.stdout
  env = {k: v for k, v in __import__('os').environ.items() if k != 'LD_LIBRARY_PATH'}
  probe = f'import ctypes; ctypes.CDLL({str(lib)!r}); print("loaded")'
  out = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, env=env,
                       check=False)
  assert out.returncode == 0 and 'loaded' in out.stdout, out.stderr
