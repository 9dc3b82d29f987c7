// The op harness machinery: targets, inputs and layouts, guarded placement, run and compare.
#include "ops/harness.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>

#include "backends/backends.h"
#include "backends/cpu/cpu.h"
#include "backends/cpu/matmul.h"
#include "quant/quant.h"
#if V4_HAVE_CUDA
#include "backends/cuda/kernels.h"  // matmul_x_rounding
#endif

namespace v4::optest {

// ---- targets -----------------------------------------------------------------------------------------
namespace {

std::string safe_name(const std::string& s) {
  std::string r;
  for (char ch : s) r += (std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_');
  return r;
}

// Conservative default for devices that do not describe their matmul: x may be rounded to the
// weight's 16-bit format (bf16: 8 significant bits, f16: 11).
double default_x_rounding(dtype w, int64_t, int64_t, int64_t) {
  if (w == dtype::bf16) return 0x1p-8;
  if (w == dtype::f16) return 0x1p-11;
  return 0.0;
}

// The targets of one device. Describe kernel variants and matmul rounding of new backends here.
std::vector<target> device_targets(device* d) {
  std::vector<target> out;
  if (d == cpu::cpu_device()) {
    // One target per ISA level the host runs: each caps dispatch at its level, so the scalar,
    // AVX2 and AVX-512 (or NEON) kernels are each checked against float64.
    for (cpu::isa level : {cpu::isa::scalar, cpu::isa::avx2, cpu::isa::avx512, cpu::isa::neon}) {
      if (!cpu::isa_available(level)) continue;
      target t;
      t.name = std::string("CPU_") + cpu::isa_name(level);
      t.dev = d;
      auto saved = std::make_shared<cpu::isa>(cpu::isa::scalar);
      t.enter = [saved, level] {
        *saved = cpu::isa_limit();
        cpu::set_isa_limit(level);
      };
      t.leave = [saved] { cpu::set_isa_limit(*saved); };
      // The matmul kernel table states how each variant rounds x (matmul.h: x_rounding, or int8 per
      // block: x_int8_block, passed as minus the block size; reference.cpp, x_rounding_class).
      t.mm_x_rounding = [](dtype w, int64_t M, int64_t N, int64_t K) {
        const cpu::mm_variant& v = cpu::mm_pick(w, M, N, K);
        return v.x_int8_block > 0 ? -double(v.x_int8_block) : v.x_rounding;
      };
      t.must_support_all = true;  // the scheduler's fallback for every op
      out.push_back(std::move(t));
    }
    return out;
  }
  target t;
  t.name = safe_name(d->name());
  t.dev = d;
  t.mm_x_rounding = default_x_rounding;
#if V4_HAVE_CUDA
  // CUDA (backends/cuda/ops_matmul.cu): the kernel picked for the shape says how it rounds x
  // (decode kernels: not at all; tensor cores for N > 16: bf16).
  if (std::string(d->name()).rfind("CUDA", 0) == 0) t.mm_x_rounding = cuda::matmul_x_rounding;
#endif
  out.push_back(std::move(t));
  return out;
}

}  // namespace

const std::vector<target>& all_targets() {
  static const std::vector<target> targets = [] {
    backends::init();
    std::vector<target> all;
    for (device* d : devices())
      for (target& t : device_targets(d)) all.push_back(std::move(t));
    return all;
  }();
  return targets;
}

// ---- layouts and fillers -------------------------------------------------------------------------------
layout cont() { return layout{}; }
layout transposed() {
  layout l;
  l.perm[0] = 1;
  l.perm[1] = 0;
  l.name = "transposed";
  return l;
}
layout permuted_0213() {
  layout l;
  l.perm[1] = 2;
  l.perm[2] = 1;
  l.name = "perm0213";
  return l;
}
layout padded(int64_t offset) {
  layout l;
  l.pad = true;
  l.offset = offset;
  l.name = "padded";
  return l;
}
layout padded_transposed() {
  layout l = transposed();
  l.pad = true;
  l.offset = 5;
  l.name = "padded_transposed";
  return l;
}

filler uniform(double lo, double hi) {
  return [lo, hi](std::vector<double>& v, const int64_t*, std::mt19937_64& rng) {
    std::uniform_real_distribution<double> d(lo, hi);
    for (double& x : v) x = d(rng);
  };
}
filler ints(int64_t lo, int64_t hi) {
  return [lo, hi](std::vector<double>& v, const int64_t*, std::mt19937_64& rng) {
    std::uniform_int_distribution<int64_t> d(lo, hi);
    for (double& x : v) x = double(d(rng));
  };
}
filler values(std::vector<double> list) {
  return [list](std::vector<double>& v, const int64_t*, std::mt19937_64&) {
    for (size_t i = 0; i < v.size(); ++i) v[i] = list[i % list.size()];
  };
}
filler ties(int n_distinct) { return ints(0, n_distinct - 1); }

input in(dtype t, std::initializer_list<int64_t> ne, filler f, layout l) {
  input i;
  i.type = t;
  int d = 0;
  for (int64_t n : ne) i.ne[d++] = n;
  i.fill = std::move(f);
  i.lay = l;
  return i;
}

input qin(dtype t, std::initializer_list<int64_t> ne, filler f, int scales_input, int32_t sb_k, int32_t sb_m, layout l) {
  input i = in(t, ne, std::move(f), l);
  i.scales_input = scales_input;
  i.scale_block[0] = sb_k;
  i.scale_block[1] = sb_m;
  return i;
}

bool is_block_quant(dtype t) {
  return t == dtype::mxfp4 || t == dtype::q8_0 || t == dtype::q4_k || t == dtype::q3_k || t == dtype::q2_k;
}

namespace {

// One row of k values of block type t: quant/'s reference quantizer (valid codes for any data),
// and its reference dequantizer (the values every kernel must reproduce). mxfp4 rows hold unscaled
// e2m1 codes: the scales are a separate input.
void quantize_row(dtype t, const float* x, uint8_t* dst, int64_t k) {
  switch (t) {
    case dtype::mxfp4: quant::e2m1_from_f32_row(x, dst, k); break;
    case dtype::q8_0: quant::quantize_row_q8_0(x, dst, k); break;
    case dtype::q4_k: quant::quantize_row_q4_k(x, dst, k); break;
    case dtype::q3_k: quant::quantize_row_q3_k(x, dst, k); break;
    case dtype::q2_k: quant::quantize_row_q2_k(x, dst, k); break;
    default: break;
  }
}
void dequantize_row(dtype t, const uint8_t* src, float* y, int64_t k) {
  switch (t) {
    case dtype::mxfp4: quant::e2m1_to_f32_row(src, y, k); break;
    case dtype::q8_0: quant::dequantize_row_q8_0(src, y, k); break;
    case dtype::q4_k: quant::dequantize_row_q4_k(src, y, k); break;
    case dtype::q3_k: quant::dequantize_row_q3_k(src, y, k); break;
    case dtype::q2_k: quant::dequantize_row_q2_k(src, y, k); break;
    default: break;
  }
}

}  // namespace

// ---- comparison ----------------------------------------------------------------------------------------
namespace {

std::string fmt_index(const ref_out& w, int64_t i) {
  std::ostringstream s;
  s << "[" << i % w.ne[0] << "," << (i / w.ne[0]) % w.ne[1] << "," << (i / (w.ne[0] * w.ne[1])) % w.ne[2] << ","
    << i / (w.ne[0] * w.ne[1] * w.ne[2]) << "]";
  return s.str();
}

}  // namespace

bool compare(const ref_out& want, const std::vector<double>& got, std::string* report, double* worst) {
  const double inf = std::numeric_limits<double>::infinity();
  int64_t bad = 0;
  double w = 0;
  std::ostringstream s;
  s.precision(9);
  if (got.size() != want.v.size()) {
    if (report) *report = "result has " + std::to_string(got.size()) + " elements, expected " + std::to_string(want.v.size());
    if (worst) *worst = inf;
    return false;
  }
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = got[i], e = want.v[i];
    bool ok;
    double ratio = 0;
    if (std::isnan(e)) {
      ok = std::isnan(g);
    } else if (want.exact || std::isinf(e)) {
      ok = g == e;
    } else {
      const double diff = std::fabs(g - e), t = want.tol[i];
      ok = diff <= t;  // false for NaN
      ratio = diff == 0 ? 0 : (t > 0 ? diff / t : inf);
    }
    if (!ok) ratio = std::isnan(ratio) || ratio <= 1 ? inf : ratio;
    if (std::isnan(g) && !std::isnan(e)) ratio = inf;
    w = std::max(w, ratio);
    if (!ok && ++bad <= 8) {
      s << "\n    at " << fmt_index(want, int64_t(i)) << ": got " << g << ", expected " << e;
      if (!want.exact) s << " (bound " << want.tol[i] << ", |diff| " << std::fabs(g - e) << ")";
    }
  }
  if (worst) *worst = w;
  if (bad == 0) return true;
  if (report)
    *report = "mismatch: " + std::to_string(bad) + " of " + std::to_string(got.size()) + " elements" +
              (want.exact ? " differ (exact op)" : " out of bound") + s.str();
  return false;
}

// ---- running one case ------------------------------------------------------------------------------------
namespace {

uint8_t guard_byte(size_t i) { return uint8_t(0x5A + 37 * i); }

uint64_t seed_of(const op_case& c) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a over op and case names
  for (const char* p = op_name(c.op); *p; ++p) h = (h ^ uint8_t(*p)) * 1099511628211ull;
  for (char ch : c.name) h = (h ^ uint8_t(ch)) * 1099511628211ull;
  return h;
}

// Where one input's elements are in its leaf: element (i0..i3) at byte offset + sum i*nb.
struct input_mem {
  tensor* leaf = nullptr;
  tensor* op_input = nullptr;
  size_t span = 0;       // bytes of the leaf
  size_t offset = 0;     // bytes
  size_t nb[4] = {};     // logical strides, bytes
  std::vector<uint8_t> before;  // leaf bytes as read back before compute
};

bool place(context& ctx, buffer_type* bt, tensor* t, size_t span, uint8_t fill, std::vector<placed>* allocs,
           std::string* err) {
  placed p;
  p.buf = bt->alloc(2 * kGuardBytes + span, err);
  if (!p.buf) return false;
  p.buf->clear(fill);
  bind_tensor(t, p.buf.get(), kGuardBytes);
  p.t = t;
  p.guard_lo = ctx.new_tensor(dtype::i8, {int64_t(kGuardBytes)});
  p.guard_hi = ctx.new_tensor(dtype::i8, {int64_t(kGuardBytes)});
  if (!p.guard_lo || !p.guard_hi) {
    *err = "cannot make guard tensors: " + ctx.error();
    return false;
  }
  bind_tensor(p.guard_lo, p.buf.get(), 0);
  bind_tensor(p.guard_hi, p.buf.get(), kGuardBytes + span);
  std::vector<uint8_t> g(kGuardBytes);
  for (size_t i = 0; i < kGuardBytes; ++i) g[i] = guard_byte(i);
  p.buf->set(p.guard_lo, g.data(), 0, kGuardBytes);
  p.buf->set(p.guard_hi, g.data(), 0, kGuardBytes);
  allocs->push_back(std::move(p));
  return true;
}

std::string shape_str(const int64_t* ne) {
  std::ostringstream s;
  s << "[" << ne[0] << "," << ne[1] << "," << ne[2] << "," << ne[3] << "]";
  return s.str();
}

// A tensor of block type spec.type: the filler's values (as f32) quantized row by row with quant/'s
// reference quantizer; the values are the read-back bytes through quant/'s dequantizer. Packed
// (cont), or with padded(): rows one block longer than they need, a gap row between planes, one
// block before the first row (random bytes in the gaps), seen through view().
bool make_block_input(context& ctx, buffer_type* bt, const input& spec, std::mt19937_64& rng,
                      std::vector<placed>* allocs, input_mem* m, darray* values, std::string* err) {
  quant::register_types();
  const layout& l = spec.lay;
  if (l.perm[0] != 0 || l.perm[1] != 1 || l.perm[2] != 2 || l.perm[3] != 3) {
    *err = std::string(type_name(spec.type)) + " inputs are made with rows in order (layouts cont, padded), not " + l.name;
    return false;
  }
  const type_traits& tr = traits(spec.type);
  const int64_t K = spec.ne[0];
  if (K % tr.block_size != 0) {
    *err = "K = " + std::to_string(K) + " is not a whole number of " + type_name(spec.type) + " blocks (case bug)";
    return false;
  }
  const size_t row_bytes = size_t(K / tr.block_size) * tr.block_bytes;
  size_t nb[4] = {tr.block_bytes, row_bytes, 0, 0};
  size_t offset = 0;
  if (l.pad) {
    nb[1] = row_bytes + tr.block_bytes;
    offset = tr.block_bytes;
  }
  nb[2] = nb[1] * size_t(spec.ne[1] + (l.pad ? 1 : 0));
  nb[3] = nb[2] * size_t(spec.ne[2]);
  const size_t span = offset + nb[3] * size_t(spec.ne[3]);
  tensor* leaf = l.pad ? ctx.new_tensor(spec.type, {int64_t(span / tr.block_bytes) * tr.block_size})
                       : ctx.new_tensor(spec.type, {spec.ne[0], spec.ne[1], spec.ne[2], spec.ne[3]});
  if (!leaf) {
    *err = "new_tensor failed: " + ctx.error();
    return false;
  }
  if (!place(ctx, bt, leaf, span, 0, allocs, err)) return false;
  tensor* t = leaf;
  if (l.pad) {
    t = view(ctx, leaf, 4, spec.ne, nb + 1, offset);
    if (!t || t->nb[1] != nb[1] || t->nb[2] != nb[2] || t->nb[3] != nb[3]) {
      *err = "view() of the padded " + std::string(type_name(spec.type)) + " input failed: " + ctx.error();
      return false;
    }
  }
  m->leaf = leaf;
  m->op_input = t;
  m->span = span;
  m->offset = offset;
  for (int d = 0; d < 4; ++d) m->nb[d] = nb[d];

  const int64_t rows = spec.ne[1] * spec.ne[2] * spec.ne[3];
  auto row_at = [&](int64_t r) {  // byte offset of row r (i1 fastest)
    return offset + size_t(r % spec.ne[1]) * nb[1] + size_t(r / spec.ne[1] % spec.ne[2]) * nb[2] +
           size_t(r / (spec.ne[1] * spec.ne[2])) * nb[3];
  };
  std::vector<double> v(size_t(K * rows));
  spec.fill(v, spec.ne, rng);
  std::vector<uint8_t> img(span);
  for (uint8_t& b : img) b = uint8_t(rng());
  std::vector<float> row(static_cast<size_t>(K));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < K; ++k) row[size_t(k)] = float(v[size_t(r * K + k)]);
    quantize_row(spec.type, row.data(), &img[row_at(r)], K);
  }
  allocs->back().buf->set(leaf, img.data(), 0, span);

  m->before.resize(span);
  allocs->back().buf->get(leaf, m->before.data(), 0, span);
  *values = darray(spec.type, spec.ne);
  for (int64_t r = 0; r < rows; ++r) {
    dequantize_row(spec.type, &m->before[row_at(r)], row.data(), K);
    for (int64_t k = 0; k < K; ++k) values->v[size_t(r * K + k)] = row[size_t(k)];
  }
  return true;
}

// Attaches input k's e8m0 scales (input spec.scales_input) to the tensor the op sees, and scales
// the reference's values of input k by them: w[i0, i1, i2, i3] *= s[i0 / bk, i1 / bm, i2, i3].
bool attach_scales(const input& spec, tensor* t, const input_mem& sm, const darray& s, darray* w, std::string* err) {
  const int64_t bk = spec.scale_block[0], bm = spec.scale_block[1];
  if (s.type != dtype::e8m0 || bk <= 0 || bm <= 0 || s.ne[0] != (w->ne[0] + bk - 1) / bk ||
      s.ne[1] != (w->ne[1] + bm - 1) / bm || s.ne[2] != w->ne[2] || s.ne[3] != w->ne[3]) {
    *err = "the scales input does not fit the weight and its scale block (case bug)";
    return false;
  }
  t->scales = sm.op_input;
  t->scale_block[0] = int32_t(bk);
  t->scale_block[1] = int32_t(bm);
  for (int64_t i3 = 0; i3 < w->ne[3]; ++i3)
    for (int64_t i2 = 0; i2 < w->ne[2]; ++i2)
      for (int64_t i1 = 0; i1 < w->ne[1]; ++i1)
        for (int64_t i0 = 0; i0 < w->ne[0]; ++i0) w->at(i0, i1, i2, i3) *= s.at(i0 / bk, i1 / bm, i2, i3);
  return true;
}

// Makes input k: its leaf (placed, filled), the tensor the op sees, and the values it holds.
bool make_input(context& ctx, buffer_type* bt, const input& spec, std::mt19937_64& rng, std::vector<placed>* allocs,
                input_mem* m, darray* values, std::string* err) {
  if (is_block_quant(spec.type)) return make_block_input(ctx, bt, spec, rng, allocs, m, values, err);
  const size_t ts = elem_size(spec.type);
  const layout& l = spec.lay;
  int64_t ne_mem[4];
  for (int d = 0; d < 4; ++d) ne_mem[l.perm[d]] = spec.ne[d];
  size_t nb_mem[4];
  nb_mem[0] = ts;
  const int64_t pad[4] = {0, 3, 1, 2};  // extra elements per row, rows per plane, planes per volume
  for (int d = 1; d < 4; ++d) nb_mem[d] = nb_mem[d - 1] * size_t(ne_mem[d - 1] + (l.pad ? pad[d] : 0));
  const int64_t offset = l.pad ? l.offset : 0;
  const size_t span = l.pad ? size_t(offset) * ts + nb_mem[3] * size_t(ne_mem[3] + 1) : nb_mem[3] * size_t(ne_mem[3]);

  tensor* leaf = l.pad ? ctx.new_tensor(spec.type, {int64_t(span / ts)})
                       : ctx.new_tensor(spec.type, {ne_mem[0], ne_mem[1], ne_mem[2], ne_mem[3]});
  if (!leaf) {
    *err = "new_tensor failed: " + ctx.error();
    return false;
  }
  if (!place(ctx, bt, leaf, span, 0, allocs, err)) return false;

  m->leaf = leaf;
  m->span = span;
  m->offset = size_t(offset) * ts;
  for (int d = 0; d < 4; ++d) m->nb[d] = nb_mem[l.perm[d]];

  // The leaf image: random gap bytes, then the elements.
  std::vector<uint8_t> img(span);
  for (uint8_t& b : img) b = uint8_t(rng());
  std::vector<double> v(size_t(spec.ne[0] * spec.ne[1] * spec.ne[2] * spec.ne[3]));
  spec.fill(v, spec.ne, rng);
  size_t i = 0;
  for (int64_t i3 = 0; i3 < spec.ne[3]; ++i3)
    for (int64_t i2 = 0; i2 < spec.ne[2]; ++i2)
      for (int64_t i1 = 0; i1 < spec.ne[1]; ++i1)
        for (int64_t i0 = 0; i0 < spec.ne[0]; ++i0, ++i) {
          const size_t off = m->offset + i0 * m->nb[0] + i1 * m->nb[1] + i2 * m->nb[2] + i3 * m->nb[3];
          encode(spec.type, round_to(spec.type, v[i]), &img[off]);
        }
  allocs->back().buf->set(leaf, img.data(), 0, span);

  // The tensor the op sees.
  tensor* t = leaf;
  if (l.pad) {
    t = view(ctx, leaf, 4, ne_mem, nb_mem + 1, m->offset);  // nb of dims 1..3; dim 0 is packed
    if (!t) {
      *err = "view() of the padded input failed: " + ctx.error();
      return false;
    }
    for (int d = 0; d < 4; ++d)
      if (t->ne[d] != ne_mem[d] || (ne_mem[d] > 1 && t->nb[d] != nb_mem[d])) {
        *err = "view(ne, nb) did not make the strides asked for (harness passes nb[] as the strides of dims 1..n_dims-1): dim " +
               std::to_string(d) + " ne " + std::to_string(t->ne[d]) + " nb " + std::to_string(t->nb[d]) +
               ", wanted ne " + std::to_string(ne_mem[d]) + " nb " + std::to_string(nb_mem[d]);
        return false;
      }
  }
  if (l.perm[0] != 0 || l.perm[1] != 1 || l.perm[2] != 2 || l.perm[3] != 3) {
    t = permute(ctx, t, l.perm[0], l.perm[1], l.perm[2], l.perm[3]);
    if (!t) {
      *err = "permute() of the input failed: " + ctx.error();
      return false;
    }
  }
  for (int d = 0; d < 4; ++d)
    if (t->ne[d] != spec.ne[d] || (spec.ne[d] > 1 && t->nb[d] != m->nb[d])) {
      *err = std::string("input view of layout ") + l.name + " has ne " + shape_str(t->ne) + ", wanted " +
             shape_str(spec.ne) + " (dim " + std::to_string(d) + " nb " + std::to_string(t->nb[d]) + ", wanted " +
             std::to_string(m->nb[d]) + ")";
      return false;
    }
  m->op_input = t;

  // The values the kernel will see: read back through the buffer.
  m->before.resize(span);
  allocs->back().buf->get(leaf, m->before.data(), 0, span);
  *values = darray(spec.type, spec.ne);
  i = 0;
  for (int64_t i3 = 0; i3 < spec.ne[3]; ++i3)
    for (int64_t i2 = 0; i2 < spec.ne[2]; ++i2)
      for (int64_t i1 = 0; i1 < spec.ne[1]; ++i1)
        for (int64_t i0 = 0; i0 < spec.ne[0]; ++i0, ++i) {
          const size_t off = m->offset + i0 * m->nb[0] + i1 * m->nb[1] + i2 * m->nb[2] + i3 * m->nb[3];
          values->v[i] = decode(spec.type, &m->before[off]);
        }
  return true;
}

// Aliases take their data from the tensor they alias: build_graph does it for aliases whose
// source already has memory (every input leaf here is bound before the graph is built); an alias
// of a node placed after build_graph (a composite case's intermediate) is resolved here, as the
// allocator would. Data already set must agree with view_src->data + view_offs.
bool resolve_views(const graph& g, int* fixed, std::string* err) {
  for (tensor* n : g.nodes) {
    if (!n->view_src) continue;
    if (!n->view_src->data) {
      *err = std::string("alias '") + op_name(n->op) + "' reads a tensor without data";
      return false;
    }
    char* want = static_cast<char*>(n->view_src->data) + n->view_offs;
    if (!n->data) {
      n->data = want;
      n->buf = n->view_src->buf;
      ++*fixed;
    } else if (n->data != want) {
      *err = std::string("alias '") + op_name(n->op) + "' has data at view_src->data + " +
             std::to_string(static_cast<char*>(n->data) - static_cast<char*>(n->view_src->data)) +
             ", view_offs says " + std::to_string(n->view_offs);
      return false;
    }
  }
  return true;
}

struct leave_on_exit {
  const target& t;
  ~leave_on_exit() {
    if (t.leave) t.leave();
  }
};

}  // namespace

case_result run_case(const target& tg, const op_case& c, const run_hooks* hooks) {
  case_result res;
  auto fail = [&](const std::string& why) {
    res.status = outcome::fail;
    res.report = why;
    return res;
  };
  if (tg.enter) tg.enter();
  leave_on_exit leave{tg};

  context ctx;
  std::mt19937_64 rng(seed_of(c));
  buffer_type* bt = tg.dev->default_buffer_type();
  std::vector<placed> allocs;
  std::vector<input_mem> mems(c.inputs.size());
  op_args args = c.args;
  ref_in rin{args, {}, tg.mm_x_rounding};
  std::vector<tensor*> op_inputs;
  std::string err;
  for (size_t k = 0; k < c.inputs.size(); ++k) {
    darray vals;
    if (!make_input(ctx, bt, c.inputs[k], rng, &allocs, &mems[k], &vals, &err))
      return fail("input " + std::to_string(k) + ": " + err);
    rin.src.push_back(std::move(vals));
    op_inputs.push_back(mems[k].op_input);
  }
  const size_t n_input_allocs = allocs.size();
  for (size_t k = 0; k < c.inputs.size(); ++k) {
    const int si = c.inputs[k].scales_input;
    if (si < 0) continue;
    if (size_t(si) >= c.inputs.size() || size_t(si) == k) return fail("input " + std::to_string(k) + ": no such scales input");
    if (!attach_scales(c.inputs[k], op_inputs[k], mems[size_t(si)], rin.src[size_t(si)], &rin.src[k], &err))
      return fail("input " + std::to_string(k) + ": " + err);
  }

  tensor* out = c.build(ctx, op_inputs, args);
  if (!out) return fail("the constructor returned nullptr: " + ctx.error());
  if (out->op != c.op) return fail(std::string("the result node is '") + op_name(out->op) + "', expected '" + op_name(c.op) + "'");
  graph g;
  if (!build_graph(ctx, {out}, &g)) return fail("build_graph failed: " + ctx.error());

  for (tensor* n : g.nodes) {
    if (op_is_view(n->op) || tg.dev->supports_op(n)) continue;
    const std::string why = std::string(tg.dev->name()) + " does not support node '" + op_name(n->op) + "' " +
                            type_name(n->type) + " " + shape_str(n->ne);
    if (tg.must_support_all) return fail(why + " (this device must support every op)");
    res.status = outcome::unsupported;
    res.report = why;
    return res;
  }

  // Memory for computed nodes (the result, and intermediates of composite cases).
  for (tensor* n : g.nodes) {
    if (n->view_src || n->data) continue;
    if (!n->is_contiguous()) return fail(std::string("computed node '") + op_name(n->op) + "' is not contiguous");
    const size_t span = size_t(n->nelements()) * elem_size(n->type);
    if (span == 0) return fail(std::string("node '") + op_name(n->op) + "' of type " + type_name(n->type) + " has no size");
    if (!place(ctx, bt, n, span, 0xFF, &allocs, &err)) return fail("allocating a result: " + err);  // NaN / -1 fill
  }
  for (tensor* l : g.leafs)
    if (!l->data) return fail("graph leaf without data (harness bug)");
  int fixed = 0;
  if (!resolve_views(g, &fixed, &err)) return fail(err);
  for (size_t k = 0; k < mems.size(); ++k) {
    const char* want = static_cast<const char*>(mems[k].leaf->data) + mems[k].offset;
    if (static_cast<const char*>(mems[k].op_input->data) != want)
      return fail("input " + std::to_string(k) + " view data is not at leaf + " + std::to_string(mems[k].offset));
  }

  // Reference from the values read back, before compute (cpy / set_rows overwrite their input).
  ref_out want;
  if (c.ref_override) c.ref_override(rin, &want);
  else reference(c.op)(rin, &want);

  std::unique_ptr<stream> s = tg.dev->new_stream();
  if (!s->compute(g, &err)) return fail("compute failed: " + err);
  s->synchronize();

  std::ostringstream problems;
  if (c.post_check) {
    const std::string why = c.post_check();
    if (!why.empty()) problems << "\n  " << why;
  }
  run_state st{&ctx, out, &allocs};
  if (hooks && hooks->after_compute) hooks->after_compute(st);

  // Result shape and type.
  std::ostringstream shape_problems;
  if (out->type != want.type) shape_problems << "\n  result type " << type_name(out->type) << ", expected " << type_name(want.type);
  for (int d = 0; d < 4; ++d)
    if (out->ne[d] != want.ne[d]) {
      shape_problems << "\n  result shape " << shape_str(out->ne) << ", expected " << shape_str(want.ne);
      break;
    }
  if (!shape_problems.str().empty()) return fail("wrong result:" + shape_problems.str() + problems.str());

  // Read the result through its own strides from the memory that holds it.
  std::vector<double> got(size_t(want.n()));
  const size_t ts = elem_size(out->type);
  const tensor* holder = out->view_src ? out->base() : out;
  int aliased = -1;
  std::vector<uint8_t> img;
  for (size_t k = 0; k < mems.size(); ++k)
    if (mems[k].leaf == holder) aliased = int(k);
  size_t holder_span, base_off;
  if (aliased >= 0) {
    holder_span = mems[size_t(aliased)].span;
    base_off = size_t(static_cast<char*>(out->data) - static_cast<char*>(holder->data));
  } else if (!out->view_src) {
    holder_span = size_t(want.n()) * ts;
    base_off = 0;
  } else {
    return fail("the result aliases memory that is not one of the inputs");
  }
  img.resize(holder_span);
  holder->buf->get(holder, img.data(), 0, holder_span);
  {
    size_t i = 0;
    for (int64_t i3 = 0; i3 < want.ne[3]; ++i3)
      for (int64_t i2 = 0; i2 < want.ne[2]; ++i2)
        for (int64_t i1 = 0; i1 < want.ne[1]; ++i1)
          for (int64_t i0 = 0; i0 < want.ne[0]; ++i0, ++i) {
            const size_t off = base_off + i0 * out->nb[0] + i1 * out->nb[1] + i2 * out->nb[2] + i3 * out->nb[3];
            if (off + ts > holder_span) return fail("the result's strides reach past its memory");
            got[i] = decode(out->type, &img[off]);
          }
  }

  // Inputs: unchanged, except the view an op writes through (and only that view's elements).
  for (size_t k = 0; k < mems.size(); ++k) {
    const input_mem& m = mems[k];
    std::vector<uint8_t> now(m.span);
    allocs[k].buf->get(m.leaf, now.data(), 0, m.span);
    std::vector<bool> may_change(m.span, false);
    if (int(k) == c.writes_input) {
      const input& spec = c.inputs[k];
      const size_t ets = elem_size(spec.type);
      for (int64_t i3 = 0; i3 < spec.ne[3]; ++i3)
        for (int64_t i2 = 0; i2 < spec.ne[2]; ++i2)
          for (int64_t i1 = 0; i1 < spec.ne[1]; ++i1)
            for (int64_t i0 = 0; i0 < spec.ne[0]; ++i0) {
              const size_t off = m.offset + i0 * m.nb[0] + i1 * m.nb[1] + i2 * m.nb[2] + i3 * m.nb[3];
              std::fill(may_change.begin() + off, may_change.begin() + off + ets, true);
            }
    }
    int64_t changed = 0, first = -1;
    for (size_t b = 0; b < m.span; ++b)
      if (!may_change[b] && now[b] != m.before[b] && changed++ == 0) first = int64_t(b);
    if (changed)
      problems << "\n  input " << k << ": " << changed << " byte(s) of its leaf changed that the op may not write"
               << " (first at byte " << first << (int(k) == c.writes_input ? ", outside the destination view)" : ")");
  }

  // Guards of every allocation.
  for (size_t a = 0; a < allocs.size(); ++a) {
    std::vector<uint8_t> lo(kGuardBytes), hi(kGuardBytes);
    allocs[a].buf->get(allocs[a].guard_lo, lo.data(), 0, kGuardBytes);
    allocs[a].buf->get(allocs[a].guard_hi, hi.data(), 0, kGuardBytes);
    for (size_t i = 0; i < kGuardBytes; ++i)
      if (lo[i] != guard_byte(i) || hi[i] != guard_byte(i)) {
        problems << "\n  guard bytes " << (lo[i] != guard_byte(i) ? "before" : "after") << " "
                 << (a < n_input_allocs ? "input " + std::to_string(a) : std::string("a computed node")) << " overwritten"
                 << " (offset " << i << ")";
        break;
      }
  }

  std::string cmp;
  const bool values_ok = compare(want, got, &cmp, &res.worst);
  if (!values_ok) problems << "\n  " << cmp;
  if (!problems.str().empty()) return fail("failed:" + problems.str());
  res.status = outcome::pass;
  res.report = fixed ? std::to_string(fixed) + " view(s) given data by the harness" : "";
  return res;
}

std::vector<op_kind> ops_with_cases() {
  std::vector<op_kind> ops;
  for (const op_case& c : all_cases())
    if (std::find(ops.begin(), ops.end(), c.op) == ops.end()) ops.push_back(c.op);
  return ops;
}

}  // namespace v4::optest
