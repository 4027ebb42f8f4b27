"""Convolution for every model: oneDNN on a one-device CPU, XLA's own convolution everywhere else.

XLA:CPU runs each convolution on one thread (XNNPACK) and surrounds weight-gradient convolutions with
transposes; on a 2-core machine that made an ESRGAN step 2x slower than PyTorch's, whose oneDNN
kernels use every core. `conv_general_dilated` is a drop-in for `lax.conv_general_dilated` (the hook
flax's `nn.Conv` exposes) that sends float32 NHWC convolutions through oneDNN as XLA FFI calls
(csrc/onednn_conv.cc, compiled once per machine with the system's C++ compiler), with a custom VJP
whose input and weight gradients are oneDNN calls too. Everything else (GPU/TPU, bf16, dilation,
groups, several CPU devices, where GSPMD would have to replicate an opaque call) keeps XLA's
convolution. `ENHANCE_JAX_CONV=xla` turns the oneDNN path off; `=onednn` makes it an error when it
cannot be used.
"""

import contextlib
import contextvars
import ctypes
import functools
import hashlib
import logging
import os
import pathlib
import site
import subprocess
import sys
import tempfile

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from enhance_jax.errors import UserError

SOURCE = pathlib.Path(__file__).parent / 'csrc' / 'onednn_conv.cc'
TARGETS = {'fwd': 'EnhanceConvForward', 'dx': 'EnhanceConvInputGrad', 'dw': 'EnhanceConvWeightGrad'}
MODES = ('auto', 'xla', 'onednn')
# Set while tracing under `xla_convolutions()`: XLA's cost analysis cannot see into an FFI call.
_XLA_ONLY = contextvars.ContextVar('enhance_jax_xla_convolutions', default=False)


@contextlib.contextmanager
def xla_convolutions():
  """Functions traced inside use XLA's convolution (for FLOP counts by XLA's cost analysis). jit
  caches traces by function, not by this context: trace a function not traced before."""
  token = _XLA_ONLY.set(True)
  try:
    yield
  finally:
    _XLA_ONLY.reset(token)


def onednn_prefix():
  """The install prefix holding oneDNN's headers and library, or None: pip's `onednn-devel`
  (Intel's maintained wheels, the `[onednn]` extra), the older `onednn-devel-cpu-gomp`, or a
  system package (libdnnl-dev)."""
  for prefix in (sys.prefix, site.getuserbase(), sys.base_prefix, '/usr/local', '/usr'):
    root = pathlib.Path(prefix)
    if (root / 'include' / 'oneapi' / 'dnnl' / 'dnnl.hpp').exists() and _libdnnl(root):
      return root
  return None


def _libdnnl(prefix):
  """PREFIX's libdnnl.so (lib/ or the Debian multiarch lib/x86_64-linux-gnu/), or None."""
  for lib_dir in (prefix / 'lib', prefix / 'lib' / 'x86_64-linux-gnu'):
    if (lib := lib_dir / 'libdnnl.so').exists():
      return lib
  return None


def cache_dir():
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return pathlib.Path(base) / 'enhance_jax'


def build_key(prefix, cxx):
  """What the compiled kernels depend on, hashed: the source, jaxlib's FFI headers (their bytes:
  the ABI the FFI calls use), oneDNN's headers and library (path, size, mtime) and the compiler.
  Any change gives another file name, so a stale build is never loaded."""
  h = hashlib.sha256(SOURCE.read_bytes())
  for header in sorted(pathlib.Path(jax.ffi.include_dir()).rglob('*.h')):
    h.update(header.name.encode() + header.read_bytes())
  dnnl = prefix / 'include' / 'oneapi' / 'dnnl'
  for header in sorted(dnnl.glob('*.h*')):
    h.update(header.name.encode() + header.read_bytes())
  lib = _libdnnl(prefix).resolve()
  stat = lib.stat()
  h.update(f'{lib}:{stat.st_size}:{stat.st_mtime_ns}:{cxx}'.encode())
  return h.hexdigest()[:16]


def build(prefix, out_dir):
  """Compiles csrc/onednn_conv.cc against PREFIX's oneDNN into OUT_DIR (once per `build_key`) and
  returns the library's path. Raises RuntimeError with the compiler's message."""
  cxx = os.environ.get('CXX', 'c++')
  lib = pathlib.Path(out_dir) / f'onednn_conv_{build_key(prefix, cxx)}.so'
  if lib.exists():
    return lib
  lib.parent.mkdir(parents=True, exist_ok=True)
  lib_dir = _libdnnl(prefix).parent
  with tempfile.TemporaryDirectory(dir=lib.parent) as tmp:
    tmp_lib = pathlib.Path(tmp) / lib.name
    # DT_RPATH (not RUNPATH) also finds libdnnl's own dependencies there (the TBB/SYCL runtimes)
    cmd = [cxx, '-O2', '-std=c++17', '-shared', '-fPIC', '-w', f'-I{jax.ffi.include_dir()}',
           f'-I{prefix / "include"}', str(SOURCE), f'-L{lib_dir}', '-ldnnl',
           f'-Wl,-rpath,{lib_dir}', '-Wl,--disable-new-dtags', '-o', str(tmp_lib)]
    try:
      proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as e:
      raise RuntimeError(f'no C++ compiler ({cxx}): {e}') from e
    if proc.returncode != 0:
      raise RuntimeError(f'{cxx} failed: {proc.stderr.strip()[-2000:]}')
    os.replace(tmp_lib, lib)  # atomic: a concurrent build never sees half a file
  return lib


def _use_bundled_opencl(prefix):
  """Intel's current oneDNN wheels are SYCL builds: their CPU engine runs on the OpenCL CPU runtime
  installed beside them (intel-opencl-rt), which the OpenCL loader finds only when told where."""
  runtime = prefix / 'lib' / 'libintelocl.so'
  if runtime.exists() and not os.environ.get('OCL_ICD_FILENAMES'):
    os.environ['OCL_ICD_FILENAMES'] = str(runtime)


@functools.cache
def _library():
  """The kernel library, built and loaded once per process (ctypes.CDLL), or why not (a str)."""
  prefix = onednn_prefix()
  if prefix is None:
    return ("oneDNN is not installed (pip install 'enhance_jax[onednn]' for the faster CPU "
            'convolution)')
  _use_bundled_opencl(prefix)
  try:
    return ctypes.cdll.LoadLibrary(str(build(prefix, cache_dir())))
  except (RuntimeError, OSError) as e:
    return f'could not build the oneDNN convolution kernels: {e}'


@functools.cache
def _load():
  """Registers the oneDNN FFI targets once per process; the error, or None."""
  lib = _library()
  if isinstance(lib, str):
    return lib
  for kind, symbol in TARGETS.items():
    jax.ffi.register_ffi_target(f'enhance_jax_conv_{kind}', jax.ffi.pycapsule(getattr(lib, symbol)),
                                platform='cpu')
  return None


def cached_primitives():
  """(oneDNN primitives cached now, the cache's bound): one per convolution shape, least recently
  used evicted first, so a server seeing every image size stays bounded. (0, 0) without oneDNN."""
  lib = _library() if onednn_prefix() is not None else 'none'
  if isinstance(lib, str):
    return 0, 0
  count, limit = lib.EnhanceConvCachedPrimitives, lib.EnhanceConvCacheLimit
  count.restype = limit.restype = ctypes.c_int64
  return int(count()), int(limit())


def _mode():
  mode = os.environ.get('ENHANCE_JAX_CONV', 'auto')
  if mode not in MODES:
    raise UserError(f'ENHANCE_JAX_CONV={mode!r}: use one of {", ".join(MODES)}.')
  return mode


def onednn_unavailable_reason():
  """Why the oneDNN path is off in this process (a sentence), or None when convolutions use it."""
  mode = _mode()
  if mode == 'xla':
    return 'ENHANCE_JAX_CONV=xla'
  if jax.default_backend() != 'cpu':
    return f'the backend is {jax.default_backend()}, not cpu'
  if jax.device_count() != 1:
    return f'{jax.device_count()} CPU devices (the FFI call is not partitioned)'
  return _load()


@functools.cache
def onednn_enabled():
  reason = onednn_unavailable_reason()
  if reason is not None and _mode() == 'onednn':
    raise UserError(f'ENHANCE_JAX_CONV=onednn but {reason}; unset it to fall back to XLA.')
  if reason is not None and jax.default_backend() == 'cpu' and _mode() == 'auto':
    logging.warning('convolutions use XLA:CPU, not oneDNN: %s.', reason)
  return reason is None


def _attrs(strides, padding):
  return {'strides': np.asarray(strides, np.int64),
          'padding': np.asarray([p for pair in padding for p in pair], np.int64)}


def _call(kind, shape, a, b, strides, padding):
  return jax.ffi.ffi_call(f'enhance_jax_conv_{kind}', jax.ShapeDtypeStruct(shape, jnp.float32),
                          vmap_method='sequential')(a, b, **_attrs(strides, padding))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def onednn_conv(x, w, strides, padding):
  """y = conv(x [N,H,W,Ci], w [KH,KW,Ci,Co]) with explicit ((lo, hi), (lo, hi)) padding, by oneDNN."""
  return _call('fwd', _out_shape(x.shape, w.shape, strides, padding), x, w, strides, padding)


def _out_shape(x_shape, w_shape, strides, padding):
  n, h, wd, _ = x_shape
  kh, kw, _, co = w_shape
  oh = (h + padding[0][0] + padding[0][1] - kh) // strides[0] + 1
  ow = (wd + padding[1][0] + padding[1][1] - kw) // strides[1] + 1
  return (n, oh, ow, co)


def _fwd(x, w, strides, padding):
  return _call('fwd', _out_shape(x.shape, w.shape, strides, padding), x, w, strides, padding), (x, w)


# oneDNN's weight gradient falls to a reference kernel from 15x15 up (RealPLKSR's 17x17 on 16 channels:
# 548 ms against XLA's 19 ms at 2x32x32); XLA's own convolution computes it there.
LARGE_KERNEL = 15


def _xla_weight_grad(x, w, dy, strides, padding):
  conv = lambda w: lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC)
  return jax.vjp(conv, w)[1](dy)[0]


def _bwd(strides, padding, res, dy):
  x, w = res
  if max(w.shape[:2]) >= LARGE_KERNEL:
    dw = _xla_weight_grad(x, w, dy, strides, padding)
  else:
    dw = _call('dw', w.shape, x, dy, strides, padding)
  return _call('dx', x.shape, dy, w, strides, padding), dw


onednn_conv.defvjp(_fwd, _bwd)

_NHWC = ('NHWC', 'HWIO', 'NHWC')


def _supported(lhs, rhs, window_strides, lhs_dilation, rhs_dilation, dimension_numbers,
               feature_group_count, batch_group_count):
  if lhs.ndim != 4 or lhs.dtype != jnp.float32 or rhs.dtype != jnp.float32:
    return False
  if any(d != 1 for d in (lhs_dilation or ())) or any(d != 1 for d in (rhs_dilation or ())):
    return False
  if feature_group_count != 1 or batch_group_count != 1 or len(window_strides) != 2:
    return False
  nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
  return lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == nhwc


def _pointwise(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                feature_group_count, batch_group_count):
  """Whether the convolution is a per-pixel matmul: an NHWC 1x1 kernel, stride 1, no padding, one group."""
  if rhs.ndim != 4 or rhs.shape[:2] != (1, 1) or tuple(window_strides) != (1, 1):
    return False
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  if any(int(p) for pair in padding for p in pair):
    return False
  return _supported(lhs.astype(jnp.float32), rhs.astype(jnp.float32), window_strides, lhs_dilation,
                    rhs_dilation, dimension_numbers, feature_group_count, batch_group_count)


MAX_DEPTHWISE_TAPS = 49  # up to 7x7: each tap is one fused multiply-add over the map


def _depthwise(lhs, rhs, window_strides, lhs_dilation, rhs_dilation, dimension_numbers,
               feature_group_count, batch_group_count):
  """Whether the convolution is depthwise (one KxK filter per channel, multiplier 1), stride 1,
  undilated, NHWC, with at most MAX_DEPTHWISE_TAPS taps."""
  if lhs.ndim != 4 or rhs.ndim != 4 or tuple(window_strides) != (1, 1) or batch_group_count != 1:
    return False
  if any(d != 1 for d in (lhs_dilation or ())) or any(d != 1 for d in (rhs_dilation or ())):
    return False
  nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
  if lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != nhwc:
    return False
  channels = lhs.shape[3]
  return (feature_group_count == channels > 1 and rhs.shape[2:] == (1, channels) and
          rhs.shape[0] * rhs.shape[1] <= MAX_DEPTHWISE_TAPS)


def depthwise_taps(x, w, padding):
  """A depthwise NHWC convolution as the sum of its taps: each a shifted view of the padded map times
  one weight per channel. XLA fuses the sum (and its gradients) into single loops; XLA:CPU's grouped
  convolution ran 100x slower (Omni-SR's and DAT's depthwise 3x3s)."""
  kh, kw = w.shape[:2]
  x = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
  oh, ow = x.shape[1] - kh + 1, x.shape[2] - kw + 1
  out = None
  for i in range(kh):
    for j in range(kw):
      tap = x[:, i:i + oh, j:j + ow, :] * w[i, j, 0]
      out = tap if out is None else out + tap
  return out


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated`, computed by oneDNN where it applies (see the module docstring). On
  a CPU a 1x1 convolution is the matmul it is: XLA's multithreaded dot, fused with its neighbours,
  instead of an opaque call per layer (RCAN's and HAT's channel attention, SPAN's and Omni-SR's 1x1s);
  a small depthwise one is the sum of its taps (`depthwise_taps`)."""
  if jax.default_backend() == 'cpu' and _pointwise(lhs, rhs, window_strides, padding, lhs_dilation,
                                                   rhs_dilation, dimension_numbers,
                                                   feature_group_count, batch_group_count):
    return lax.dot_general(lhs, rhs[0, 0], (((3,), (0,)), ((), ())), precision=precision,
                           preferred_element_type=preferred_element_type)
  if (jax.default_backend() == 'cpu' and preferred_element_type is None and
      _depthwise(lhs, rhs, window_strides, lhs_dilation, rhs_dilation, dimension_numbers,
                 feature_group_count, batch_group_count)):
    if isinstance(padding, str):
      padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
    if min(min(pair) for pair in padding) >= 0:
      return depthwise_taps(lhs, rhs, padding)
  if (preferred_element_type is None and not _XLA_ONLY.get() and onednn_enabled() and
      _supported(lhs, rhs, window_strides, lhs_dilation, rhs_dilation, dimension_numbers,
                 feature_group_count, batch_group_count)):
    if isinstance(padding, str):
      padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    if min(min(pair) for pair in pads) >= 0:  # oneDNN pads, it does not crop
      return onednn_conv(lhs, rhs, tuple(int(s) for s in window_strides), pads)
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                  dimension_numbers, feature_group_count, batch_group_count,
                                  precision, preferred_element_type)


# flax's Conv with this module's convolution: what every model builds its convolutions from.
Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)
