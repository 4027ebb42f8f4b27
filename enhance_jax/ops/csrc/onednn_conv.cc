// 2-D convolutions for XLA:CPU through oneDNN (the library PyTorch's CPU convolutions use), as XLA FFI
// handlers: forward, gradient w.r.t. the input and gradient w.r.t. the weights.
//
// Why: XLA:CPU runs each convolution through XNNPACK on one thread (it splits only along a wide output
// width) and computes weight gradients with transposes around a slow kernel. oneDNN runs all three on
// every core, straight from NHWC activations and HWIO weights. Layouts are JAX/Flax's: x [N,H,W,Ci],
// w [KH,KW,Ci,Co], y [N,OH,OW,Co]; float32; strides and explicit (lo, hi) padding per spatial side.

#include <cstdint>
#include <cstdlib>
#include <list>
#include <unordered_map>
#include <mutex>
#include <string>
#include <tuple>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using dnnl::memory;
using Dims = memory::dims;

struct Geometry {
  int64_t n, h, w, ci, kh, kw, co, oh, ow;
  Dims strides, pad_lo, pad_hi;

  std::string Key(char kind) const {
    std::string k(1, kind);
    for (int64_t v : {n, h, w, ci, kh, kw, co, oh, ow, strides[0], strides[1], pad_lo[0], pad_lo[1],
                      pad_hi[0], pad_hi[1]}) {
      k += ',' + std::to_string(v);
    }
    return k;
  }
  memory::desc Src() const { return {{n, ci, h, w}, memory::data_type::f32, memory::format_tag::nhwc}; }
  memory::desc Dst() const { return {{n, co, oh, ow}, memory::data_type::f32, memory::format_tag::nhwc}; }
  memory::desc Hwio() const { return {{co, ci, kh, kw}, memory::data_type::f32, memory::format_tag::hwio}; }
  memory::desc AnyWeights() const {
    return {{co, ci, kh, kw}, memory::data_type::f32, memory::format_tag::any};
  }
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::convolution_forward::primitive_desc ForwardDesc(const Geometry& g) {
  return dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, g.Src(),
      g.AnyWeights(), g.Dst(), g.strides, g.pad_lo, g.pad_hi);
}

// One primitive per (kind, geometry), built once: creating a oneDNN primitive JIT-compiles its kernel.
struct Cached {
  dnnl::primitive primitive;
  memory::desc weights;  // the layout the primitive wants its (diff) weights in
};

// The primitives, least recently used first evicted beyond CacheSize() (256, or the environment's
// ENHANCE_JAX_ONEDNN_CACHE): a long-running server that sees many shapes (whole images of every size)
// keeps a bounded set. Only Run calls Lookup, under its mutex, so an entry is never evicted while a
// convolution uses it.
size_t CacheSize() {
  static const size_t size = [] {
    const char* env = std::getenv("ENHANCE_JAX_ONEDNN_CACHE");
    long long n = env ? std::atoll(env) : 0;
    return n > 0 ? static_cast<size_t>(n) : size_t{256};
  }();
  return size;
}
using Entries = std::list<std::pair<std::string, Cached>>;
Entries order;  // most recently used first
std::unordered_map<std::string, Entries::iterator> index;
std::mutex running;  // Run's: one convolution at a time (see Run)

Cached& Lookup(char kind, const Geometry& g) {
  std::string key = g.Key(kind);
  auto it = index.find(key);
  if (it != index.end()) {
    order.splice(order.begin(), order, it->second);
    return it->second->second;
  }
  auto fwd = ForwardDesc(g);
  Cached c;
  if (kind == 'f') {
    c = {dnnl::convolution_forward(fwd), fwd.weights_desc()};
  } else if (kind == 'd') {
    dnnl::convolution_backward_data::primitive_desc pd(
        Engine(), dnnl::algorithm::convolution_direct, g.Src(), g.AnyWeights(), g.Dst(), g.strides,
        g.pad_lo, g.pad_hi, fwd);
    c = {dnnl::convolution_backward_data(pd), pd.weights_desc()};
  } else {
    dnnl::convolution_backward_weights::primitive_desc pd(
        Engine(), dnnl::algorithm::convolution_direct, g.Src(), g.AnyWeights(), g.Dst(), g.strides,
        g.pad_lo, g.pad_hi, fwd);
    c = {dnnl::convolution_backward_weights(pd), pd.diff_weights_desc()};
  }
  order.emplace_front(key, std::move(c));
  index[key] = order.begin();
  while (order.size() > CacheSize()) {
    index.erase(order.back().first);
    order.pop_back();
  }
  return order.front().second;
}

ffi::Error MakeGeometry(ffi::Span<const int64_t> x_dims, ffi::Span<const int64_t> w_dims,
                        ffi::Span<const int64_t> y_dims, ffi::Span<const int64_t> strides,
                        ffi::Span<const int64_t> padding, Geometry* g) {
  if (x_dims.size() != 4 || w_dims.size() != 4 || y_dims.size() != 4 || strides.size() != 2 ||
      padding.size() != 4) {
    return ffi::Error::InvalidArgument("onednn conv: expected NHWC x, HWIO w, NHWC y, 2 strides, 4 pads");
  }
  *g = {x_dims[0], x_dims[1], x_dims[2], x_dims[3], w_dims[0], w_dims[1], w_dims[3], y_dims[1],
        y_dims[2], {strides[0], strides[1]}, {padding[0], padding[2]}, {padding[1], padding[3]}};
  if (w_dims[2] != g->ci || y_dims[0] != g->n || y_dims[3] != g->co) {
    return ffi::Error::InvalidArgument("onednn conv: inconsistent shapes");
  }
  return ffi::Error::Success();
}

// Runs the KIND primitive with the HWIO weights at WEIGHTS, reordering them to/from its layout. One
// convolution at a time: each already uses every core, and XLA may call independent ones from several
// threads at once, which would oversubscribe the cores with OpenMP teams.
ffi::Error Run(char kind, const Geometry& g, void* src, void* weights, void* dst) {
  std::lock_guard<std::mutex> lock(running);
  try {
    Cached& c = Lookup(kind, g);
    dnnl::stream stream(Engine());
    memory src_m(g.Src(), Engine(), src), dst_m(g.Dst(), Engine(), dst);
    memory hwio(g.Hwio(), Engine(), weights);
    bool reorder = c.weights != g.Hwio();
    memory wei = reorder ? memory(c.weights, Engine()) : hwio;
    if (kind == 'f') {
      if (reorder) dnnl::reorder(hwio, wei).execute(stream, hwio, wei);
      c.primitive.execute(stream, {{DNNL_ARG_SRC, src_m}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst_m}});
    } else if (kind == 'd') {
      if (reorder) dnnl::reorder(hwio, wei).execute(stream, hwio, wei);
      c.primitive.execute(stream,
                          {{DNNL_ARG_DIFF_SRC, src_m}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DIFF_DST, dst_m}});
    } else {
      c.primitive.execute(stream,
                          {{DNNL_ARG_SRC, src_m}, {DNNL_ARG_DIFF_WEIGHTS, wei}, {DNNL_ARG_DIFF_DST, dst_m}});
      if (reorder) dnnl::reorder(wei, hwio).execute(stream, wei, hwio);
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("onednn conv: ") + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> y,
                   ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding) {
  Geometry g;
  if (auto err = MakeGeometry(x.dimensions(), w.dimensions(), y->dimensions(), strides, padding, &g);
      err.failure()) {
    return err;
  }
  return Run('f', g, x.untyped_data(), w.untyped_data(), y->untyped_data());
}

ffi::Error InputGrad(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> dx,
                     ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding) {
  Geometry g;
  if (auto err = MakeGeometry(dx->dimensions(), w.dimensions(), dy.dimensions(), strides, padding, &g);
      err.failure()) {
    return err;
  }
  return Run('d', g, dx->untyped_data(), w.untyped_data(), dy.untyped_data());
}

ffi::Error WeightGrad(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy, ffi::ResultBuffer<ffi::F32> dw,
                      ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding) {
  Geometry g;
  if (auto err = MakeGeometry(x.dimensions(), dw->dimensions(), dy.dimensions(), strides, padding, &g);
      err.failure()) {
    return err;
  }
  return Run('w', g, x.untyped_data(), dw->untyped_data(), dy.untyped_data());
}

// All three take two float32 buffers, return one, and carry the strides and (lo, hi) paddings.
auto Binding() {
  return ffi::Ffi::Bind()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Ret<ffi::Buffer<ffi::F32>>()
      .Attr<ffi::Span<const int64_t>>("strides")
      .Attr<ffi::Span<const int64_t>>("padding");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(EnhanceConvForward, Forward, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(EnhanceConvInputGrad, InputGrad, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(EnhanceConvWeightGrad, WeightGrad, Binding());

// How many primitives the cache holds now (tests check it stays bounded).
extern "C" int64_t EnhanceConvCachedPrimitives() {
  std::lock_guard<std::mutex> lock(running);
  return static_cast<int64_t>(order.size());
}

// The cache's bound.
extern "C" int64_t EnhanceConvCacheLimit() { return static_cast<int64_t>(CacheSize()); }
