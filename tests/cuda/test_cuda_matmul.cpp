// The CUDA matmuls (backends/cuda/ops_matmul.cu, ops_mma.cu) and quantize-on-write set_rows
// (ops_quant.cu) on shapes the op harness does not reach: 16-byte aligned rows long enough for
// the vectorised decode kernel and the tensor-core kernel, every weight type, decode and prefill
// row counts, expert matmuls, NaN codes and scales. Matmuls are checked against float64 products
// of the dequantized weights (quant/'s reference dequantizers) with the harness's bound
//   |y - ref| <= (x_rounding + (K + 2) * 2^-24) * sum_k |w x|
// where x_rounding is what the CUDA backend declares for the shape (cuda::matmul_x_rounding: 0 for
// the decode kernels, 2^-8 for the bf16 tensor cores). set_rows must match the CPU bit for bit.
// A timing test prints weight bandwidth against the measured device copy bandwidth.
// Without a usable GPU every test skips.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backends/backends.h"
#include "cuda/cuda_test.h"
#include "backends/cpu/cpu.h"
#include "backends/cpu/qmatmul.h"
#include "backends/cuda/cuda.h"
#include "backends/cuda/kernels.h"
#include "quant/quant.h"
#include "tensor/ops.h"

namespace v4 {
// Test hooks of the CUDA backend (not part of its API): ops_matmul.cu's weight prefetch before the
// PDL wait (bytes per warp, < 0 the default, 0 none) and cuda_device.cu's PDL switch.
namespace cuda {
void set_matmul_prefetch(int bytes_per_warp);
void set_matmul_cluster(int slices);  // cluster split-K: 0 automatic, 1 never, n >= 2 about n
void set_matmul_expert_pdl(bool on);  // true: gemv1 / the ring for matmul_id launched with PDL
void set_matmul_ring(int mode);  // streaming decode (ops_matmul_ring.cu): 0 automatic, 1 off, 2 forced
void set_matmul_ring_shape(int wg, int stages);  // its team size and stages (0: automatic)
void set_matmul_tc_decode(int mode);  // tensor-core decode (ops_matmul_tc.cu): 0 automatic, 1 off, 2 forced
long long matmul_tc_decode_calls();   // its launches so far
void set_matmul_tc_shape(int cluster, int kslices);  // its cluster size and k-slices (0: automatic)
void set_matmul_tc_xsplit(int on);  // 1 (default): x not FP8-exact as two f16 halves; 0: one f16
void set_matmul_tc_bf16x(int mode);  // x not FP8-exact (bf16) in the automatic choice: 0 automatic (on), 1 off, 2 on
bool pdl_enabled();
void set_pdl_enabled(bool on);
}  // namespace cuda
namespace {

using cuda_test::random_floats;

bool is_scaled(dtype t) { return t == dtype::fp8_e4m3 || t == dtype::mxfp4; }

// E weight matrices of M rows x K in the layout the kernels read; rows dequantized on demand.
struct host_weights {
  dtype type;
  int64_t K, M, E;
  cpu::qmm_layout lo;
  std::vector<uint8_t> data, scales;

  size_t matrix_bytes() const { return lo.row_bytes * size_t(M); }
  size_t scale_bytes() const { return lo.s_stride * size_t(lo.scale_rows); }

  // Row m of expert e through quant/'s reference dequantizers (f32 values, as the CPU's scalar
  // kernel sees them). Returns out.data().
  const float* row(int64_t e, int64_t m, std::vector<float>& out) const {
    out.resize(size_t(K));
    const uint8_t* r = data.data() + size_t(e) * matrix_bytes() + size_t(m) * lo.row_bytes;
    const uint8_t* srow = is_scaled(type) ? scales.data() + size_t(e) * scale_bytes() + size_t(m / lo.sb_m) * lo.s_stride
                                          : nullptr;
    if (type == dtype::fp8_e4m3) quant::dequantize_row_fp8(r, srow, int(lo.sb_k), out.data(), K);
    else if (type == dtype::mxfp4) quant::dequantize_row_mxfp4(r, srow, out.data(), K);
    else traits(type).to_f32(r, out.data(), K);
    return out.data();
  }
};

host_weights make_weights(dtype t, int64_t K, int64_t M, int64_t E, int64_t sb_k, int64_t sb_m, uint64_t seed) {
  cpu::qmm_layout lo;
  if (traits(t).is_float) lo.row_bytes = size_t(K) * traits(t).block_bytes;
  else lo = cpu::qmm_layout_of(t, M, K, sb_k, sb_m);
  host_weights h{t, K, M, E, lo, {}, {}};
  h.data.resize(h.matrix_bytes() * size_t(E));
  h.scales.resize(h.scale_bytes() * size_t(E));
  for (int64_t e = 0; e < E; ++e) {
    uint8_t* w = h.data.data() + size_t(e) * h.matrix_bytes();
    if (traits(t).is_float) {
      std::mt19937 rng(uint32_t(seed + e));
      std::uniform_real_distribution<float> d(-1, 1);
      std::vector<float> row(static_cast<size_t>(K));
      for (int64_t m = 0; m < M; ++m) {
        for (float& v : row) v = d(rng);
        traits(t).from_f32(row.data(), w + size_t(m) * h.lo.row_bytes, K);
      }
    } else {
      cpu::qmm_fill_random(t, h.lo, w, h.lo.row_bytes, h.scales.data() + size_t(e) * h.scale_bytes(), M, K, seed + e);
    }
  }
  return h;
}

// Tensors in GPU memory, one buffer each.
struct gpu_ctx {
  device* dev;
  context ctx;
  std::vector<std::unique_ptr<buffer>> bufs;
  explicit gpu_ctx(device* d) : dev(d) {}

  void bind(tensor* t) {
    std::string err;
    bufs.push_back(dev->default_buffer_type()->alloc(t->nbytes(), &err));
    ASSERT_TRUE(bufs.back()) << err;
    bind_tensor(t, bufs.back().get(), 0);
  }
  tensor* leaf(dtype type, std::initializer_list<int64_t> ne, const void* data) {
    tensor* t = ctx.new_tensor(type, ne);
    bind(t);
    if (data) t->buf->set(t, data, 0, t->nbytes());
    return t;
  }
  // The weight tensor [K, M, E] with its e8m0 scales attached.
  tensor* weights(const host_weights& h) {
    tensor* w = leaf(h.type, {h.K, h.M, h.E}, h.data.data());
    w->flags |= kFlagWeight;
    if (is_scaled(h.type)) {
      tensor* s = leaf(dtype::e8m0, {int64_t(h.lo.s_stride), h.lo.scale_rows, h.E}, h.scales.data());
      w->scales = s;
      w->scale_block[0] = int32_t(h.lo.sb_k);
      w->scale_block[1] = int32_t(h.lo.sb_m);
    }
    return w;
  }
  std::vector<float> run(tensor* y) {
    std::string err;
    graph g;
    EXPECT_TRUE(ctx.ok()) << ctx.error();
    EXPECT_TRUE(build_graph(ctx, {y}, &g));
    std::unique_ptr<stream> s = dev->new_stream();
    EXPECT_TRUE(s->compute(g, &err)) << err;
    std::vector<float> out(size_t(y->nelements()));
    y->buf->get(y, out.data(), 0, out.size() * sizeof(float));
    return out;
  }
};

// |got - ref| within factor * sum_k |w_k x_k| + extra, or both NaN. Returns |err| / bound.
double check_dot_within(const float* w, const float* x, int64_t K, double factor, float got, const std::string& where,
                        double extra = 0.0) {
  double ref = 0, mag = 0;
  for (int64_t k = 0; k < K; ++k) {
    const double p = double(w[k]) * double(x[k]);
    ref += p;
    mag += std::fabs(p);
  }
  if (std::isnan(ref)) {
    EXPECT_TRUE(std::isnan(got)) << where << ": expected NaN, got " << got;
    return 0;
  }
  const double bound = factor * mag + extra + 1e-300;
  const double err = std::fabs(double(got) - ref);
  EXPECT_LE(err, bound) << where << ": got " << got << ", float64 " << ref << ", |err| / sum|w x| "
                        << err / (mag + 1e-300) << ", factor " << factor;
  return err / bound;
}
// The f32 kernels' bound: x rounded with relative error xr, then K + 2 roundings of f32 sums.
double check_dot(const float* w, const float* x, int64_t K, double xr, float got, const std::string& where) {
  return check_dot_within(w, x, K, xr + double(K + 2) * 0x1p-24, got, where);
}

struct mm_case {
  dtype type;
  int64_t sb_k = 0, sb_m = 0;
};
std::string tag(const mm_case& c) {
  std::string s = type_name(c.type);
  if (c.type == dtype::fp8_e4m3) {  // appended piecewise: GCC 12 warns (-Wrestrict, falsely) on a + chain
    s += '{';
    s += std::to_string(c.sb_k);
    s += ',';
    s += std::to_string(c.sb_m);
    s += '}';
  }
  return s;
}

const std::vector<mm_case> kCases = {{dtype::f32},
                                     {dtype::f16},
                                     {dtype::bf16},
                                     {dtype::fp8_e4m3, 128, 128},
                                     {dtype::fp8_e4m3, 32, 32},
                                     {dtype::fp8_e4m3, 64, 3},
                                     {dtype::mxfp4, 32, 1},
                                     {dtype::q8_0}};

void run_matmul(device* gpu, const host_weights& h, int64_t N, const std::string& name) {
  gpu_ctx g(gpu);
  const std::vector<float> xv = random_floats(size_t(h.K * N), uint32_t(N * 7 + h.K));
  tensor* w = g.weights(h);
  tensor* x = g.leaf(dtype::f32, {h.K, N}, xv.data());
  tensor* y = matmul(g.ctx, w, x);
  ASSERT_TRUE(y) << g.ctx.error();
  ASSERT_TRUE(gpu->supports_op(y)) << name;
  g.bind(y);
  const std::vector<float> got = g.run(y);
  const double xr = cuda::matmul_x_rounding(h.type, h.M, N, h.K);
  double worst = 0;
  std::vector<float> wr;
  for (int64_t m = 0; m < h.M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      worst = std::max(worst, check_dot(h.row(0, m, wr), &xv[size_t(n * h.K)], h.K, xr, got[size_t(n * h.M + m)],
                                        name + " m " + std::to_string(m) + " n " + std::to_string(n)));
      if (::testing::Test::HasFailure()) return;
    }
  std::printf("  %-26s worst |err|/bound %.3f (x rounding %g)\n", name.c_str(), worst, xr);
}

// matmul_id(w, x [K, X1, T], ids [n_used, T]) on the GPU against float64: pair (i, t) multiplies
// expert ids[i + n_used t] by x row (i % X1, t). Prints and returns the worst |err|/bound.
double run_experts(device* gpu, const host_weights& h, const std::vector<int32_t>& ids, const std::vector<float>& xv,
                   int64_t X1, int64_t T, int64_t n_used, const std::string& name) {
  const int64_t K = h.K, M = h.M;
  gpu_ctx g(gpu);
  tensor* w = g.weights(h);
  tensor* x = g.leaf(dtype::f32, {K, X1, T}, xv.data());
  tensor* id = g.leaf(dtype::i32, {n_used, T}, ids.data());
  tensor* y = matmul_id(g.ctx, w, x, id);
  EXPECT_TRUE(y) << g.ctx.error();
  if (!y) return 0;
  EXPECT_TRUE(gpu->supports_op(y)) << name;
  g.bind(y);
  const std::vector<float> got = g.run(y);
  const double xr = cuda::matmul_x_rounding(h.type, M, n_used * T, K);
  double worst = 0;
  std::vector<float> wr;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < n_used; ++i)
      for (int64_t m = 0; m < M; ++m) {
        const int64_t e = ids[size_t(t * n_used + i)];
        worst = std::max(worst, check_dot(h.row(e, m, wr), &xv[size_t((t * X1 + i % X1) * K)], K, xr,
                                          got[size_t((t * n_used + i) * M + m)],
                                          name + " t " + std::to_string(t) + " i " + std::to_string(i) + " m " +
                                              std::to_string(m)));
        if (::testing::Test::HasFailure()) return worst;
      }
  std::printf("  %-34s worst |err|/bound %.3f (x rounding %g)\n", name.c_str(), worst, xr);
  return worst;
}

TEST(CudaMatmul, MatchesFloat64) {
  REQUIRE_GPU(gpu);
  for (const mm_case& c : kCases) {
    // Aligned (vectorised / tensor-core kernels; M not a multiple of any tile) and unaligned
    // (generic kernel) shapes.
    const int64_t odd_k = c.type == dtype::q8_0 ? 96 : c.type == dtype::mxfp4 ? 98 : c.type == dtype::f32 ? 33 : 100;
    for (auto [K, M] : {std::pair<int64_t, int64_t>{512, 300}, {odd_k, 37}}) {
      const host_weights h = make_weights(c.type, K, M, 1, c.sb_k, c.sb_m, uint64_t(K + M));
      for (int64_t N : {1, 5, 16, 64, 130}) {
        run_matmul(gpu, h, N, tag(c) + " K" + std::to_string(K) + " M" + std::to_string(M) + " N" + std::to_string(N));
        if (HasFailure()) return;
      }
    }
  }
}

// NaN scale codes and e4m3 NaN codes make exactly the outputs that use them NaN, in every kernel.
TEST(CudaMatmul, NaNCodesAndScalesPropagate) {
  REQUIRE_GPU(gpu);
  for (const mm_case& c : {mm_case{dtype::fp8_e4m3, 32, 32}, mm_case{dtype::mxfp4, 32, 1}}) {
    for (int64_t K : {256, 100, 2048}) {
      host_weights h = make_weights(c.type, K, 96, 1, c.sb_k, c.sb_m, 5);
      h.scales[size_t(1 * h.lo.s_stride + 1)] = 0xFF;  // fp8: rows 32..63; mxfp4: row 1
      if (c.type == dtype::fp8_e4m3) h.data[size_t(70 * h.lo.row_bytes + 5)] = 0x7F;
      for (int64_t N : {1, 64}) {
        run_matmul(gpu, h, N, tag(c) + " NaN K" + std::to_string(K) + " N" + std::to_string(N));
        if (HasFailure()) return;
      }
      if (K == 2048) {  // split-K decode (forced: 96 rows otherwise go to split_row), NaN in one slice
        cuda::set_matmul_split_k(4);
        run_matmul(gpu, h, 1, tag(c) + " NaN K2048 N1 split 4");
        cuda::set_matmul_split_k(0);
        if (HasFailure()) return;
      }
    }
  }
}

// ---- tensor-core decode (backends/cuda/ops_matmul_tc.cu) ---------------------------------------------
// x comes from fp8_roundtrip(x, 128) (or rms_norm_w with fp8 block 128) in the same graph, so the
// dispatch takes the tensor-core kernel (asserted through its launch counter), or (TcDecodeBf16X)
// is a plain leaf that the kernel rounds to bf16. With x as the kernel rounds it (bf16; FP8-exact x
// is unchanged) the products are exact; the roundings are the tensor core's f32 accumulation and
// the f32 sums (and the f16 staging of elements below 2^-32 of their block's largest: tc_x_extra,
// 0 for the data here unless made tiny). Bound, per output, with mag = sum_k |w_k xb_k|:
//   |y - ref| <= (290 + K / 128) * 2^-24 * mag
// One mma adds 16 exact products to its accumulator C; modelled as on A100 / H100 (products exact,
// the 17 addends aligned to the largest exponent and truncated to 24 bits, the sum normalised by
// truncation), its error is below 17 * 2^-23 * max|addend| + 2^-23 * |D| <= 36 * 2^-24 * (|C| + sum|p|).
// A 128-wide K block is a chain of 8 mma from C = 0, so sum_j (|C_j| + P_j) <= 8 * P_block: at most
// 288 * 2^-24 * P_block per block, 288 * 2^-24 * mag over the row after the exact power-of-two
// scaling. The K / 128 block partials are then added in f32 (round to nearest, at most K / 128
// additions with the k-slice reduction: (K / 128) * 2^-24 * mag to first order); 2 covers the
// second-order terms. (For K >= 300 this is tighter than the f32 kernels' (K + 2) * 2^-24.)
double tc_bound_factor(int64_t K) { return (290.0 + double(K / 128)) * 0x1p-24; }


// x rounded to bf16 (round to nearest even; NaN and +-inf kept), as the tensor-core decode does.
float bf16_rne(float v) {
  uint32_t u = 0;
  std::memcpy(&u, &v, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return v;
  u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  float r = 0;
  std::memcpy(&r, &u, 4);
  return r;
}

// The tensor-core decode's x: bf16-rounded in place, and the absolute error of its f16 staging for
// row w (ops_matmul_tc.cu, top): per 128-block, t = max(floor(log2 amax) - 15, -126) of the
// largest finite |x|; an x below 2^(t-17) may lose bits in f16 (|error| <= 2^(t-24) as two f16
// halves): the bound's extra term sum over those k of |w_k| 2^(t-24). (0 for FP8-exact x and for
// ordinary data.)
double tc_x_extra(const float* w, const float* xb, int64_t K) {
  double extra = 0;
  for (int64_t b = 0; b < K; b += 128) {
    float amax = 0;
    for (int64_t k = b; k < b + 128; ++k)
      if (std::isfinite(xb[k])) amax = std::max(amax, std::fabs(xb[k]));
    int e = 0;
    std::frexp(amax, &e);  // amax = f 2^e, f in [0.5, 1): floor(log2 amax) = e - 1
    const int t = amax > 0 ? std::max(e - 1 - 15, -126) : -126;
    for (int64_t k = b; k < b + 128; ++k)
      if (std::fabs(xb[k]) < std::ldexp(1.0, t - 17)) extra += std::fabs(double(w[k])) * std::ldexp(1.0, t - 24);
  }
  return extra;
}

// The tensor-core decode's bound (tc_bound_factor) for x as the kernel rounds it (xb: bf16).
double check_dot_tc(const float* w, const float* xb, int64_t K, float got, const std::string& where) {
  return check_dot_within(w, xb, K, tc_bound_factor(K), got, where, tc_x_extra(w, xb, K));
}

// Where x comes from in run_tc.
enum class tc_x { roundtrip, norm, plain };

// y = matmul(w, q(x)) with x [K, 1, B] and B weight matrices (B > 1: batched, one job per matrix),
// q = fp8_roundtrip(., 128), rms_norm_w(., 1 + small, eps, 128) (both FP8-exact) or none (plain:
// the leaf itself, which the tensor-core decode rounds to bf16). The rounded x is read back from
// the GPU for the reference (the round trips are bit-exact to the CPU, their own tests); where the
// tensor-core decode runs, the reference's x is that rounded to bf16 (nothing changes for FP8-exact
// x) and the bound is check_dot_tc's, so a wrong rounding of x (truncation: errors ~2^-9 |x|) fails.
// expect_tc: whether the tensor-core decode must have run. tiny: every 5th x scaled by 2^-45 (the
// f16 staging's small-element rounding).
void run_tc(device* gpu, const host_weights& h, tc_x src, bool expect_tc, const std::string& name, bool tiny = false) {
  const int64_t K = h.K, M = h.M, B = h.E;
  gpu_ctx g(gpu);
  std::vector<float> xv = random_floats(size_t(K * B), uint32_t(K + M + B));
  if (tiny)
    for (size_t i = 0; i < xv.size(); i += 5) xv[i] = std::ldexp(xv[i], -45);
  tensor* x0 = g.leaf(dtype::f32, {K, 1, B}, xv.data());
  tensor* xq = x0;
  if (src == tc_x::norm) {
    std::vector<float> nw(static_cast<size_t>(K));
    for (int64_t k = 0; k < K; ++k) nw[size_t(k)] = 1.0f + 0.001f * float(k % 17);
    xq = rms_norm_w(g.ctx, x0, g.leaf(dtype::f32, {K}, nw.data()), 1e-6f, 128);
  } else if (src == tc_x::roundtrip) {
    xq = fp8_roundtrip(g.ctx, x0, 128);
  }
  ASSERT_TRUE(xq) << g.ctx.error();
  if (xq != x0) g.bind(xq);  // (binding the plain leaf again would give it new, unfilled memory)
  tensor* y = matmul(g.ctx, g.weights(h), xq);
  ASSERT_TRUE(y) << g.ctx.error();
  ASSERT_TRUE(gpu->supports_op(y)) << name;
  g.bind(y);
  const long long calls0 = cuda::matmul_tc_decode_calls();
  const std::vector<float> got = g.run(y);
  const long long calls = cuda::matmul_tc_decode_calls() - calls0;
  if (expect_tc) EXPECT_EQ(calls, 1) << name << ": the tensor-core decode did not run";
  else EXPECT_EQ(calls, 0) << name << ": the tensor-core decode ran";
  std::vector<float> xr(size_t(K * B));
  xq->buf->get(xq, xr.data(), 0, xr.size() * sizeof(float));
  if (expect_tc)
    for (float& v : xr) v = bf16_rne(v);
  double worst = 0;
  std::vector<float> wr;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t m = 0; m < M; ++m) {
      const std::string where = name + " b " + std::to_string(b) + " m " + std::to_string(m);
      const float* w = h.row(b, m, wr);
      const float gv = got[size_t(b * M + m)];
      // (not taken: the f32 decode kernels' bound, as run_matmul)
      worst = std::max(worst, expect_tc ? check_dot_tc(w, &xr[size_t(b * K)], K, gv, where)
                                        : check_dot(w, &xr[size_t(b * K)], K, 0.0, gv, where));
      if (::testing::Test::HasFailure()) return;
    }
  std::printf("  %-40s worst |err|/bound %.3f\n", name.c_str(), worst);
}

TEST(CudaMatmul, TcDecodeMatchesFloat64) {
  REQUIRE_GPU(gpu);
  struct shape {
    int64_t K, M, B;
  };
  auto name_of = [](const std::string& what, const shape& sh) {
    return what + " K " + std::to_string(sh.K) + " M " + std::to_string(sh.M) +
           (sh.B > 1 ? " x" + std::to_string(sh.B) : "");
  };
  auto wts = [](const shape& sh) {
    return make_weights(dtype::fp8_e4m3, sh.K, sh.M, sh.B, 128, 128, uint64_t(sh.K + sh.M));
  };
  // Automatic (calls of at least 16 MiB): wq_b, wo_b (a cluster of 2: K >= 8192), the grouped wo_a,
  // the shared expert's w1 + w3; below: wq_a (the f32 kernels).
  for (const shape& sh : std::vector<shape>{{1024, 32768, 1}, {8192, 4096, 1}, {4096, 1024, 8}, {4096, 4096, 1}}) {
    run_tc(gpu, wts(sh), tc_x::roundtrip, true, name_of("tc fp8{128,128}", sh));
    if (HasFailure()) return;
  }
  run_tc(gpu, wts({4096, 1024, 1}), tc_x::roundtrip, false, "tc not taken (size) K 4096 M 1024");
  // Forced at every size: wkv, shared expert w1 / w3 / w2, odd M (a partial 16-row tile), K of one
  // and two 128-blocks (fewer k-slices than warps).
  cuda::set_matmul_tc_decode(2);
  for (const shape& sh : std::vector<shape>{{4096, 1024, 1}, {4096, 512, 1}, {4096, 2048, 1}, {2048, 4096, 1},
                                            {4096, 37, 1}, {1024, 37, 1}, {128, 300, 1}, {256, 45, 2}, {384, 100, 1}}) {
    run_tc(gpu, wts(sh), tc_x::roundtrip, true, name_of("tc forced fp8{128,128}", sh));
    if (HasFailure()) break;
  }
  // Forced cluster sizes and k-slices: K in two ranges over a cluster's 2 blocks (uneven: 3 and 5
  // blocks of 128), k-slices 1 and 2 (with and without the cluster).
  for (const auto& [cl, ks] : std::vector<std::pair<int, int>>{{2, 0}, {2, 1}, {2, 2}, {1, 1}, {1, 2}}) {
    if (HasFailure()) break;
    cuda::set_matmul_tc_shape(cl, ks);
    for (const shape& sh : std::vector<shape>{{4096, 512, 1}, {4096, 2048, 1}, {4096, 1024, 8}, {1024, 37, 1},
                                              {384, 100, 1}, {640, 300, 1}}) {
      run_tc(gpu, wts(sh), tc_x::roundtrip, true,
             name_of("tc CL " + std::to_string(cl) + " ks " + std::to_string(ks), sh));
      if (HasFailure()) break;
    }
    cuda::set_matmul_tc_shape(0, 0);
  }
  // x from rms_norm_w's fp8 option; weight scale blocks 256 x 64 (two x blocks per scale column).
  if (!HasFailure()) {
    run_tc(gpu, make_weights(dtype::fp8_e4m3, 4096, 1000, 1, 128, 128, 3), tc_x::norm, true, "tc from rms_norm_w");
    run_tc(gpu, make_weights(dtype::fp8_e4m3, 2048, 700, 1, 256, 64, 4), tc_x::roundtrip, true, "tc fp8{256,64}");
    // Not taken even when forced: scale blocks of 32 along K.
    run_tc(gpu, make_weights(dtype::fp8_e4m3, 1024, 256, 1, 32, 32, 5), tc_x::roundtrip, false,
           "tc not taken fp8{32,32}");
  }
  cuda::set_matmul_tc_decode(1);
  run_tc(gpu, wts({1024, 32768, 1}), tc_x::roundtrip, false, "tc hook off");
  cuda::set_matmul_tc_decode(0);
}

// x not FP8-exact: rounded to bf16 by the tensor-core decode (staged as two f16 halves), bound as
// check_dot_tc on the bf16 x. Automatic (unless set_matmul_tc_bf16x(1) / V4_CUDA_TC_BF16X=0)
// for calls of at least 16 MiB of matrices of at least 4096 x 1024 weights (the grouped wo_a);
// forced below that.
TEST(CudaMatmul, TcDecodeBf16XMatchesFloat64) {
  REQUIRE_GPU(gpu);
  auto wts = [](int64_t K, int64_t M, int64_t B) {
    return make_weights(dtype::fp8_e4m3, K, M, B, 128, 128, uint64_t(K + 3 * M + B));
  };
  // Off (V4_CUDA_TC_BF16X=0): the f32 kernels, x not rounded.
  cuda::set_matmul_tc_bf16x(1);
  run_tc(gpu, wts(4096, 1024, 8), tc_x::plain, false, "tc bf16 x off K 4096 M 1024 x8");
  EXPECT_EQ(cuda::matmul_x_rounding(dtype::fp8_e4m3, 1024, 1, 4096), 0.0);
  cuda::set_matmul_tc_bf16x(0);  // on by default
  run_tc(gpu, wts(4096, 1024, 8), tc_x::plain, true, "tc bf16 x K 4096 M 1024 x8 (wo_a)");
  run_tc(gpu, wts(4096, 4096, 1), tc_x::plain, true, "tc bf16 x K 4096 M 4096");
  run_tc(gpu, wts(8192, 4096, 1), tc_x::plain, true, "tc bf16 x K 8192 M 4096 (cluster)", true);
  // Below the size rules: the f32 kernels, x not rounded (matmul_x_rounding: 0 for K 1024 M 256).
  run_tc(gpu, wts(1024, 256, 1), tc_x::plain, false, "tc bf16 x not taken K 1024 M 256");
  run_tc(gpu, wts(4096, 1024, 1), tc_x::plain, false, "tc bf16 x not taken K 4096 M 1024");
  EXPECT_EQ(cuda::matmul_x_rounding(dtype::fp8_e4m3, 256, 1, 1024), 0.0);
  EXPECT_EQ(cuda::matmul_x_rounding(dtype::fp8_e4m3, 1024, 1, 4096), 0x1p-8);
  cuda::set_matmul_tc_bf16x(1);
  cuda::set_matmul_tc_decode(2);
  run_tc(gpu, wts(4096, 1024, 1), tc_x::plain, true, "tc bf16 x forced K 4096 M 1024 tiny x", true);
  run_tc(gpu, wts(4096, 37, 1), tc_x::plain, true, "tc bf16 x forced K 4096 M 37");
  run_tc(gpu, wts(384, 100, 2), tc_x::plain, true, "tc bf16 x forced K 384 M 100 x2", true);
  cuda::set_matmul_tc_shape(2, 0);
  run_tc(gpu, wts(640, 300, 1), tc_x::plain, true, "tc bf16 x forced CL 2 K 640 M 300");
  cuda::set_matmul_tc_shape(0, 0);
  cuda::set_matmul_tc_decode(0);
  cuda::set_matmul_tc_bf16x(0);
}

// A report, not a check: x that is not FP8-exact staged as one f16 (set_matmul_tc_xsplit(0): products
// of up to 4 + 8 significant bits; the backend stages two halves instead), each output's
// |err| / (tc_bound_factor * sum |w xb| + tc_x_extra) against the bf16-rounded x, worst and the
// number above 1 (device run 4 saw this staging fail TcDecodeBf16XMatchesFloat64; docs/CUDA.md
// "Fourth session"). Prints the same for the two halves for comparison.
TEST(CudaMatmul, TcDecodeOneF16Report) {
  REQUIRE_GPU(gpu);
  cuda::set_matmul_tc_decode(2);
  for (int split = 0; split < 2; ++split) {
    cuda::set_matmul_tc_xsplit(split);
    for (int tiny = 0; tiny < 2; ++tiny) {
      const int64_t K = 4096, M = 1024, B = 8;
      const host_weights h = make_weights(dtype::fp8_e4m3, K, M, B, 128, 128, 7);
      gpu_ctx g(gpu);
      std::vector<float> xv = random_floats(size_t(K * B), 11);
      if (tiny)
        for (size_t i = 0; i < xv.size(); i += 5) xv[i] = std::ldexp(xv[i], -45);
      tensor* y = matmul(g.ctx, g.weights(h), g.leaf(dtype::f32, {K, 1, B}, xv.data()));
      ASSERT_TRUE(y) << g.ctx.error();
      g.bind(y);
      const std::vector<float> got = g.run(y);
      for (float& v : xv) v = bf16_rne(v);
      double worst = 0, worst_rel = 0;
      int over = 0;
      std::vector<float> wr;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t m = 0; m < M; ++m) {
          const float* w = h.row(b, m, wr);
          const float* x = &xv[size_t(b * K)];
          double ref = 0, mag = 0;
          for (int64_t k = 0; k < K; ++k) {
            ref += double(w[k]) * double(x[k]);
            mag += std::fabs(double(w[k]) * double(x[k]));
          }
          const double err = std::fabs(double(got[size_t(b * M + m)]) - ref);
          const double r = err / (tc_bound_factor(K) * mag + tc_x_extra(w, x, K) + 1e-300);
          worst = std::max(worst, r);
          worst_rel = std::max(worst_rel, err / (mag + 1e-300));
          over += r > 1.0 ? 1 : 0;
        }
      std::printf("  tc %s x K 4096 M 1024 x8%s: worst |err|/bound %.3f, worst |err|/sum|w x| %.3g (2^%.1f), "
                  "%d of %d outputs above the bound\n",
                  split ? "two-f16-halves" : "one-f16", tiny ? " tiny" : "", worst, worst_rel,
                  std::log2(worst_rel + 1e-300), over, int(B * M));
    }
  }
  cuda::set_matmul_tc_xsplit(1);
  cuda::set_matmul_tc_decode(0);
}

TEST(CudaMatmul, TcDecodeNaNCodesAndScalesPropagate) {
  REQUIRE_GPU(gpu);
  for (int64_t K : {1024, 4096}) {
    host_weights h = make_weights(dtype::fp8_e4m3, K, 300, 1, 128, 128, 9);
    h.scales[size_t(1 * h.lo.s_stride + 1)] = 0xFF;  // rows 128..255, k 128..255
    h.data[size_t(70 * h.lo.row_bytes + 5)] = 0x7F;   // row 70
    h.data[size_t(290 * h.lo.row_bytes + K - 1)] = 0xFF;  // row 290 (the last, partial tile), last k
    cuda::set_matmul_tc_decode(2);  // (below the size rule)
    run_tc(gpu, h, tc_x::roundtrip, true, "tc NaN K " + std::to_string(K));
    cuda::set_matmul_tc_shape(2, 0);  // NaN through the cluster's sums
    if (!HasFailure()) run_tc(gpu, h, tc_x::roundtrip, true, "tc NaN CL 2 K " + std::to_string(K));
    cuda::set_matmul_tc_shape(0, 0);
    cuda::set_matmul_tc_decode(0);
    if (HasFailure()) return;
  }
}

TEST(CudaMatmul, ExpertMatmulMatchesFloat64) {
  REQUIRE_GPU(gpu);
  const int64_t K = 256, M = 200, E = 8, n_used = 3;
  for (const mm_case& c : kCases) {
    if (c.type == dtype::f16 || (c.type == dtype::fp8_e4m3 && c.sb_k == 32)) continue;
    const host_weights h = make_weights(c.type, K, M, E, c.sb_k, c.sb_m, 11);
    // T = 1, 5: one job per pair; 24: grouped by expert, decode kernels, expert 0 in every token
    // (more rows than one pass of the tensor-core decode kernel); 64: grouped, prefill kernels.
    for (int64_t T : {1, 5, 24, 64})
      for (int64_t X1 : {int64_t(1), n_used}) {
        std::mt19937 rng(uint32_t(T * 3 + X1));
        std::vector<int32_t> ids(size_t(n_used * T));
        for (int32_t& i : ids) i = int32_t(rng() % E);  // repeats within a token allowed
        if (T == 24)
          for (int64_t t = 0; t < T; ++t) ids[size_t(t * n_used)] = 0;
        const std::vector<float> xv = random_floats(size_t(K * X1 * T), uint32_t(T + 100 * X1));
        run_experts(gpu, h, ids, xv, X1, T, n_used,
                    "matmul_id " + tag(c) + " T" + std::to_string(T) + " X1 " + std::to_string(X1));
        if (HasFailure()) return;
      }
  }
}

// Decode (one x row) at V4-like sizes: the streaming fp8 / mxfp4 kernel with several tiles per
// row, several row groups per warp, a row count that is not a multiple of the group, an x row of
// 64 KiB (K 16384: more than the default 48 KiB of shared memory), and expert calls (one job per
// pair).
TEST(CudaMatmul, DecodeMatchesFloat64) {
  REQUIRE_GPU(gpu);
  struct dec_case {
    mm_case c;
    int64_t K, M;
  };
  for (const dec_case& d : {dec_case{{dtype::fp8_e4m3, 128, 128}, 4096, 2501}, dec_case{{dtype::fp8_e4m3, 128, 128}, 16384, 301},
                            dec_case{{dtype::fp8_e4m3, 32, 32}, 1536, 777}, dec_case{{dtype::mxfp4, 32, 1}, 4096, 2501},
                            dec_case{{dtype::mxfp4, 32, 1}, 2048, 1001}, dec_case{{dtype::mxfp4, 32, 1}, 3072, 33}}) {
    const host_weights h = make_weights(d.c.type, d.K, d.M, 1, d.c.sb_k, d.c.sb_m, uint64_t(d.K + d.M));
    run_matmul(gpu, h, 1, tag(d.c) + " K" + std::to_string(d.K) + " M" + std::to_string(d.M) + " N1");
    if (HasFailure()) return;
  }
  // Experts: 6 of 16, one token (one job per pair), repeats allowed.
  for (const mm_case& c : {mm_case{dtype::fp8_e4m3, 128, 128}, mm_case{dtype::mxfp4, 32, 1}}) {
    const int64_t K = 2048, M = 1100, E = 16, n_used = 6;
    const host_weights h = make_weights(c.type, K, M, E, c.sb_k, c.sb_m, 21);
    run_experts(gpu, h, {3, 15, 0, 3, 7, 9}, random_floats(size_t(K), 31), 1, 1, n_used, "matmul_id decode " + tag(c));
    if (HasFailure()) return;
  }
}

// Split-K decode (one x row: gemv_x1 over K slices, partials summed in slice order): odd M, K not
// a multiple of the slice (the last slice shorter), every weight type, expert calls with a
// repeated expert. Forced slice counts (3: uneven; 1000: as many 32-chunk slices as K allows) run
// every case through split-K (ahead of the cluster split and split_row, which take these shapes
// otherwise); 0 is the automatic choice (since 2026-11-28 the cluster split for the fp8 / bf16
// cases with few rows, ClusterSplitMatchesFloat64; split-K for fp8 K >= 16384 over many rows).
// The bound is the one of the unsplit kernels.
TEST(CudaMatmul, SplitKMatchesFloat64) {
  REQUIRE_GPU(gpu);
  struct sk_case {
    mm_case c;
    int64_t K, M;
  };
  const std::vector<sk_case> cases = {
      {{dtype::fp8_e4m3, 128, 128}, 4096, 301}, {{dtype::fp8_e4m3, 32, 32}, 1552, 37},  // 97 chunks
      {{dtype::fp8_e4m3, 64, 3}, 2000, 50},     {{dtype::mxfp4, 32, 1}, 3104, 33},     // 97 chunks
      {{dtype::bf16}, 4096, 256},               {{dtype::f32}, 4096, 255},
      {{dtype::f32}, 1028, 19},                 {{dtype::f16}, 1544, 55},
      {{dtype::fp8_e4m3, 128, 128}, 16384, 300}};  // automatic: 19 blocks of 16 rows -> cluster split, 8 slices
  for (int force : {0, 3, 1000}) {
    cuda::set_matmul_split_k(force);
    for (const sk_case& d : cases) {
      const host_weights h = make_weights(d.c.type, d.K, d.M, 1, d.c.sb_k, d.c.sb_m, uint64_t(d.K * 3 + d.M));
      const std::string shape = " K" + std::to_string(d.K) + " M" + std::to_string(d.M);
      run_matmul(gpu, h, 1, "split " + std::to_string(force) + " " + tag(d.c) + shape);
      if (HasFailure()) break;
    }
    // Experts: 6 of 16, one token, expert 3 twice (one job per pair; each pair its partials).
    for (const mm_case& c : {mm_case{dtype::fp8_e4m3, 128, 128}, mm_case{dtype::mxfp4, 32, 1}, mm_case{dtype::bf16}}) {
      if (HasFailure()) break;
      const int64_t K = 2080, M = 101, E = 16, n_used = 6;  // fp8 130 chunks, mxfp4 65, bf16 260
      const host_weights h = make_weights(c.type, K, M, E, c.sb_k, c.sb_m, 41);
      run_experts(gpu, h, {3, 15, 0, 3, 7, 9}, random_floats(size_t(K), 43), 1, 1, n_used,
                  "split " + std::to_string(force) + " matmul_id " + tag(c));
    }
    if (HasFailure()) break;
  }
  cuda::set_matmul_split_k(0);
}

// Cluster split-K (gemv_x1_kernel<CL>: the CL blocks of a cluster take K slices of the same rows,
// rank 0 adds the partials in rank order through distributed shared memory): fp8 and bf16 one-row
// matmuls forced to 2, 4 and 8 slices and automatic, with a partial last row block (M 301, 37),
// slices whose last one is shorter (fp8 {32,32} K 1552: 97 chunks), a NaN scale and an e4m3 NaN
// code (NaN exactly where float64 has it). Same bound as the unsplit kernels; on GPUs without
// clusters (below sm_90) the calls take the other kernels and the test checks those.
TEST(CudaMatmul, ClusterSplitMatchesFloat64) {
  REQUIRE_GPU(gpu);
  struct cl_case {
    mm_case c;
    int64_t K, M;
  };
  const std::vector<cl_case> cases = {{{dtype::fp8_e4m3, 128, 128}, 4096, 1024}, {{dtype::fp8_e4m3, 128, 128}, 4096, 301},
                                      {{dtype::fp8_e4m3, 32, 32}, 1552, 37},     {{dtype::fp8_e4m3, 64, 3}, 8192, 50},
                                      {{dtype::bf16}, 4096, 256},                {{dtype::bf16}, 4096, 1000},
                                      {{dtype::bf16}, 1544, 33}};
  for (int force : {2, 4, 8, 0}) {
    cuda::set_matmul_cluster(force);
    for (const cl_case& d : cases) {
      const host_weights h = make_weights(d.c.type, d.K, d.M, 1, d.c.sb_k, d.c.sb_m, uint64_t(d.K * 5 + d.M));
      run_matmul(gpu, h, 1, "cluster " + std::to_string(force) + " " + tag(d.c) + " K" + std::to_string(d.K) + " M" +
                                std::to_string(d.M));
      if (HasFailure()) break;
    }
    // NaN: one scale code 0xFF (a 128 x 128 block) and one e4m3 NaN code.
    if (!HasFailure()) {
      host_weights h = make_weights(dtype::fp8_e4m3, 4096, 300, 1, 128, 128, 77);
      h.scales[size_t(h.lo.s_stride) * 1 + 5] = 0xFF;      // rows 128..255, k 640..767
      h.data[size_t(h.lo.row_bytes) * 17 + 3000] = 0x7F;   // row 17, k 3000: e4m3 NaN
      run_matmul(gpu, h, 1, "cluster " + std::to_string(force) + " fp8 NaN K4096 M300");
    }
    if (HasFailure()) break;
  }
  cuda::set_matmul_cluster(0);
}

// Batched one-row matmul: w [K, M, B] x [K, 1, B] -> y [M, 1, B] (V4's grouped wo_a), each slice
// against float64. Prints and returns the worst |err|/bound.
double run_batched(device* gpu, const host_weights& h, const std::string& name) {
  const int64_t K = h.K, M = h.M, B = h.E;
  gpu_ctx g(gpu);
  const std::vector<float> xv = random_floats(size_t(K * B), uint32_t(K + B));
  tensor* w = g.weights(h);
  tensor* x = g.leaf(dtype::f32, {K, 1, B}, xv.data());
  tensor* y = matmul(g.ctx, w, x);
  EXPECT_TRUE(y) << g.ctx.error();
  if (!y) return 0;
  EXPECT_TRUE(gpu->supports_op(y)) << name;
  g.bind(y);
  const std::vector<float> got = g.run(y);
  const double xr = cuda::matmul_x_rounding(h.type, M, 1, K);
  double worst = 0;
  std::vector<float> wr;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t m = 0; m < M; ++m) {
      worst = std::max(worst, check_dot(h.row(b, m, wr), &xv[size_t(b * K)], K, xr, got[size_t(b * M + m)],
                                        name + " b " + std::to_string(b) + " m " + std::to_string(m)));
      if (::testing::Test::HasFailure()) return worst;
    }
  std::printf("  %-34s worst |err|/bound %.3f (x rounding %g)\n", name.c_str(), worst, xr);
  return worst;
}

// The streaming decode kernel (ops_matmul_ring.cu: per-warp shared-memory rings filled by bulk
// copies, teams of warps sharing a row group's tiles), forced for every call that fits: fp8 /
// mxfp4 / bf16 one-row calls with a
// partial last row group (M not a multiple of 4), a short last tile (fp8 {32,32} K 1552: 97 chunks,
// mxfp4 K 2560: 80 chunks, bf16 K 1544: 193 chunks), fp8 {64,3} scale tiles, an x row of 64 KiB (K
// 16384: two stages fit), a batched call (8 weight matrices, V4's grouped wo_a), expert calls (6 of
// 16, one expert twice; X1 6: each pair its own x row) and NaN scales / codes; each with the team
// size and stage count automatic and forced (team sizes past the tiles per row leave warps idle).
// Same bound as every decode kernel (x not rounded). On GPUs below sm_90 the calls take the other
// kernels and the test checks those.
TEST(CudaMatmul, RingMatchesFloat64) {
  REQUIRE_GPU(gpu);
  struct ring_case {
    mm_case c;
    int64_t K, M;
  };
  const std::vector<ring_case> cases = {
      {{dtype::fp8_e4m3, 128, 128}, 4096, 301}, {{dtype::fp8_e4m3, 128, 128}, 1024, 2050},
      {{dtype::fp8_e4m3, 32, 32}, 1552, 37},    {{dtype::fp8_e4m3, 64, 3}, 2000, 50},
      {{dtype::fp8_e4m3, 128, 128}, 16384, 129}, {{dtype::mxfp4, 32, 1}, 4096, 301},
      {{dtype::mxfp4, 32, 1}, 2560, 77},        {{dtype::bf16}, 4096, 300},
      {{dtype::bf16}, 1544, 33}};
  cuda::set_matmul_ring(2);  // every call that fits (automatically only a few shapes take it)
  const std::vector<std::pair<int, int>> shapes = {{0, 0}, {0, 3}, {1, 2}, {2, 3}, {4, 4}, {8, 2}};
  for (const auto& [wg, stages] : shapes) {
    cuda::set_matmul_ring_shape(wg, stages);
    const std::string how = "ring wg " + std::to_string(wg) + " S " + std::to_string(stages) + " ";
    for (const ring_case& d : cases) {
      const host_weights h = make_weights(d.c.type, d.K, d.M, 1, d.c.sb_k, d.c.sb_m, uint64_t(d.K * 7 + d.M));
      run_matmul(gpu, h, 1, how + tag(d.c) + " K" + std::to_string(d.K) + " M" + std::to_string(d.M));
      if (HasFailure()) break;
    }
    for (const mm_case& c : {mm_case{dtype::fp8_e4m3, 128, 128}, mm_case{dtype::mxfp4, 32, 1}, mm_case{dtype::bf16}}) {
      if (HasFailure()) break;
      run_batched(gpu, make_weights(c.type, 2048, 203, 8, c.sb_k, c.sb_m, 51), how + "batched 8 " + tag(c));
      const host_weights h = make_weights(c.type, 2048, 301, 16, c.sb_k, c.sb_m, 53);
      for (int64_t X1 : {int64_t(1), int64_t(6)}) {
        if (HasFailure()) break;
        run_experts(gpu, h, {3, 15, 0, 3, 7, 9}, random_floats(size_t(2048 * X1), 57), X1, 1, 6,
                    how + "matmul_id X1 " + std::to_string(X1) + " " + tag(c));
      }
    }
    // NaN: an fp8 scale block and e4m3 code; an mxfp4 scale code.
    if (!HasFailure()) {
      host_weights h = make_weights(dtype::fp8_e4m3, 4096, 300, 1, 128, 128, 77);
      h.scales[size_t(h.lo.s_stride) * 1 + 5] = 0xFF;     // rows 128..255, k 640..767
      h.data[size_t(h.lo.row_bytes) * 17 + 3000] = 0x7F;  // row 17, k 3000: e4m3 NaN
      run_matmul(gpu, h, 1, how + "fp8 NaN K4096 M300");
    }
    if (!HasFailure()) {
      host_weights h = make_weights(dtype::mxfp4, 4096, 90, 1, 32, 1, 79);
      h.scales[size_t(h.lo.s_stride) * 33 + 70] = 0xFF;  // row 33, k 2240..2271
      run_matmul(gpu, h, 1, how + "mxfp4 NaN K4096 M90");
    }
    if (HasFailure()) break;
  }
  cuda::set_matmul_ring_shape(0, 0);
  cuda::set_matmul_ring(0);
}

// Quantize-on-write into fp8 / mxfp4 rows: the same codes and scales as the CPU backend, with
// duplicate ids (the last write wins) and hard values (zeros, tiny, huge, NaN, inf).
TEST(CudaMatmul, SetRowsQuantizesLikeTheCpu) {
  REQUIRE_GPU(gpu);
  device* cpu = cpu::cpu_device();
  struct sr_case {
    dtype type;
    int64_t K;
    int32_t block;
  };
  for (const sr_case& c : {sr_case{dtype::fp8_e4m3, 512, 64}, sr_case{dtype::fp8_e4m3, 448, 128},
                           sr_case{dtype::fp8_e4m3, 100, 32}, sr_case{dtype::mxfp4, 512, 32}, sr_case{dtype::mxfp4, 100, 32}}) {
    const int64_t R = 10, N = 6, B = 2;
    std::vector<float> src = random_floats(size_t(c.K * N * B), uint32_t(c.K));
    std::mt19937 rng(3);
    for (size_t i = 0; i < src.size(); ++i) {
      switch (rng() % 16) {
        case 0: src[i] = 0.0f; break;
        case 1: src[i] *= 1e-30f; break;
        case 2: src[i] *= 1e30f; break;
        case 3: src[i] = std::nanf(""); break;
        case 4: src[i] = -INFINITY; break;
        case 5: src[i] *= 1e-42f; break;  // f32 subnormal
        default: break;
      }
    }
    for (int64_t k = 0; k < c.K; ++k) src[size_t(c.K + k)] = 0.0f;  // an all-zero row
    const std::vector<int32_t> ids = {3, 7, 3, 0, 9, 3, 1, 1, 2, 5, 8, 1};
    auto run_on = [&](device* d, std::vector<uint8_t>* q, std::vector<uint8_t>* s) {
      context ctx;
      std::vector<std::unique_ptr<buffer>> bufs;
      std::string err;
      auto place = [&](tensor* t, const void* data) {
        bufs.push_back(d->default_buffer_type()->alloc(t->nbytes(), &err));
        bind_tensor(t, bufs.back().get(), 0);
        if (data) t->buf->set(t, data, 0, t->nbytes());
        else bufs.back()->clear(0xAB);
      };
      tensor* dst = ctx.new_tensor(c.type, {c.K, R, B});
      tensor* sc = ctx.new_tensor(dtype::e8m0, {(c.K + c.block - 1) / c.block, R, B});
      place(dst, nullptr);
      place(sc, nullptr);
      dst->scales = sc;
      dst->scale_block[0] = c.block;
      dst->scale_block[1] = 1;
      tensor* sv = ctx.new_tensor(dtype::f32, {c.K, N, B});
      tensor* iv = ctx.new_tensor(dtype::i32, {N, B});
      place(sv, src.data());
      place(iv, ids.data());
      tensor* out = set_rows(ctx, dst, sv, iv);
      ASSERT_TRUE(out) << ctx.error();
      ASSERT_TRUE(d->supports_op(out)) << d->name();
      graph g;
      ASSERT_TRUE(build_graph(ctx, {out}, &g));
      std::unique_ptr<stream> st = d->new_stream();
      ASSERT_TRUE(st->compute(g, &err)) << err;
      q->resize(dst->nbytes());
      s->resize(sc->nbytes());
      dst->buf->get(dst, q->data(), 0, q->size());
      sc->buf->get(sc, s->data(), 0, s->size());
    };
    std::vector<uint8_t> q_gpu, s_gpu, q_cpu, s_cpu;
    run_on(gpu, &q_gpu, &s_gpu);
    run_on(cpu, &q_cpu, &s_cpu);
    const std::string name = std::string(type_name(c.type)) + " K" + std::to_string(c.K) + " block " + std::to_string(c.block);
    ASSERT_EQ(s_gpu, s_cpu) << name << ": scales differ";
    ASSERT_EQ(q_gpu, q_cpu) << name << ": codes differ";
  }
}

// ---- timing (prints; never fails on time) ----------------------------------------------------------------
// Kernel time per call from CUDA events over back-to-back launches (no host sync in between),
// rotating over enough weight copies / experts that the 60 MB L2 cannot hold them.
// Seconds per run of `body` (stream work, no host sync): one warm-up run, then `reps` back to back
// between two events.
template <typename F>
double event_seconds(cudaStream_t s, int reps, F&& body) {
  body();
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  cudaEventRecord(e0, s);
  for (int r = 0; r < reps; ++r) body();
  cudaEventRecord(e1, s);
  cudaEventSynchronize(e1);
  float ms = 0;
  cudaEventElapsedTime(&ms, e0, e1);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return ms * 1e-3 / reps;
}

double copy_bandwidth(cudaStream_t s) {
  const size_t n = size_t(1) << 30;
  void *a = nullptr, *b = nullptr;
  if (cudaMalloc(&a, n) != cudaSuccess || cudaMalloc(&b, n) != cudaSuccess) return 0;
  const double sec = event_seconds(s, 10, [&] { cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, s); });
  cudaFree(a);
  cudaFree(b);
  return 2.0 * double(n) / sec;  // bytes read + written per second
}

// Times `nodes` (launched in turn by launch) and returns seconds per call.
template <typename F>
double time_calls(cudaStream_t s, int n_nodes, F&& launch) {
  return event_seconds(s, 10, [&] {
           for (int i = 0; i < n_nodes; ++i) launch(i);
         }) /
         n_nodes;
}

// Times matmul / matmul_id calls and prints one line per call.
struct bench {
  device* gpu = nullptr;
  cudaStream_t s = nullptr;
  double copy_bw = 0;
  std::string err;
  const char* mark = "";  // appended to each line
  std::vector<int> splits = {0};  // cuda::set_matmul_split_k settings, each timed (0: automatic)

  // " split S" when a sweep forces the slices ("" for the automatic choice outside a sweep).
  std::string split_tag(int split) const {
    if (splits.size() == 1 && split == 0) return "";
    return split == 0 ? "  split auto" : split == 1 ? "  split off" : "  split " + std::to_string(split);
  }

  // Copies of the weights that rotate so that the 60 MB L2 holds none of them between calls.
  static int copies_for(double bytes, int at_least) {
    const int c = int(std::ceil(256e6 / bytes));
    return std::max(at_least, std::min(c, 64));
  }
  // Dense: weight matrices [K, M] (one per node), x [K, N].
  void dense(dtype t, int64_t K, int64_t M, int64_t N, int at_least = 1) {
    const host_weights h = make_weights(t, K, M, 1, 0, 0, 1);
    const int copies = copies_for(double(h.matrix_bytes()), at_least);
    gpu_ctx g(gpu);
    const std::vector<float> xv = random_floats(size_t(K * N), 2);
    tensor* x = g.leaf(dtype::f32, {K, N}, xv.data());
    std::vector<tensor*> ys;
    for (int c = 0; c < copies; ++c) {
      tensor* y = matmul(g.ctx, g.weights(h), x);
      ASSERT_TRUE(y) << g.ctx.error();
      g.bind(y);
      ys.push_back(y);
    }
    for (int split : splits) {
      cuda::set_matmul_split_k(split);
      const double sec = time_calls(s, copies, [&](int i) { cuda::launch_matmul(s, ys[size_t(i)], &err); });
      cuda::set_matmul_split_k(0);
      ASSERT_EQ(cudaGetLastError(), cudaSuccess);
      // Spot check of the last call's results.
      cudaStreamSynchronize(s);
      std::vector<float> got(size_t(M * N));
      ys.back()->buf->get(ys.back(), got.data(), 0, got.size() * 4);
      const double xr = cuda::matmul_x_rounding(t, M, N, K);
      std::vector<float> wr;
      for (int64_t n = 0; n < N; n += 7)
        for (int64_t m = 0; m < M; m += 211)
          check_dot(h.row(0, m, wr), &xv[size_t(n * K)], K, xr, got[size_t(n * M + m)], "timing");
      const double bytes = double(h.matrix_bytes() + h.scale_bytes());
      std::printf("matmul    %-8s K=%-5lld M=%-6lld N=%-4lld %8.1f us  %6.0f GB/s  %5.1f%% of copy  %7.1f TFLOP/s%s%s\n",
                  type_name(t), (long long)K, (long long)M, (long long)N, sec * 1e6, bytes / sec * 1e-9,
                  100.0 * bytes / sec / copy_bw, 2.0 * K * M * N / sec * 1e-12, mark, split_tag(split).c_str());
    }
  }

  // Experts: w [K, M, E], T tokens choosing n_used distinct experts each; `sets` id sets rotate
  // over the experts so that consecutive calls read different ones.
  void experts(dtype t, int64_t K, int64_t M, int64_t E, int64_t n_used, int64_t T, int sets) {
    const host_weights h = make_weights(t, K, M, E, 0, 0, 3);
    gpu_ctx g(gpu);
    const std::vector<float> xv = random_floats(size_t(K * T), 4);
    tensor* w = g.weights(h);
    tensor* x = g.leaf(dtype::f32, {K, 1, T}, xv.data());
    std::vector<tensor*> ys;
    std::vector<std::vector<int32_t>> all_ids;
    std::mt19937 rng(9);
    for (int c = 0; c < sets; ++c) {
      std::vector<int32_t> ids(size_t(n_used * T));
      for (int64_t tk = 0; tk < T; ++tk) {
        std::vector<int32_t> perm(static_cast<size_t>(E));
        for (int64_t e = 0; e < E; ++e) perm[size_t(e)] = int32_t(e);
        std::shuffle(perm.begin(), perm.end(), rng);
        for (int64_t i = 0; i < n_used; ++i) ids[size_t(tk * n_used + i)] = perm[size_t(i)];
      }
      tensor* id = g.leaf(dtype::i32, {n_used, T}, ids.data());
      tensor* y = matmul_id(g.ctx, w, x, id);
      ASSERT_TRUE(y) << g.ctx.error();
      g.bind(y);
      ys.push_back(y);
      all_ids.push_back(ids);
    }
    for (int split : splits) {
      cuda::set_matmul_split_k(split);
      const double sec = time_calls(s, sets, [&](int i) { cuda::launch_matmul_id(s, ys[size_t(i)], &err); });
      cuda::set_matmul_split_k(0);
      ASSERT_EQ(cudaGetLastError(), cudaSuccess) << err;
      cudaStreamSynchronize(s);
      std::vector<float> got(size_t(M * n_used * T));
      ys.back()->buf->get(ys.back(), got.data(), 0, got.size() * 4);
      const double xr = cuda::matmul_x_rounding(t, M, n_used * T, K);
      const std::vector<int32_t>& ids = all_ids.back();
      std::vector<float> wr;
      for (int64_t p = 0; p < n_used * T; p += 5)
        for (int64_t m = 0; m < M; m += 97)
          check_dot(h.row(ids[size_t(p)], m, wr), &xv[size_t((p / n_used) * K)], K, xr, got[size_t(p * M + m)],
                    "timing matmul_id");
      // Bytes: each distinct expert of a call read once (decode: n_used * T distinct).
      size_t distinct = 0;
      {
        std::vector<bool> seen(size_t(E), false);
        for (int32_t e : ids) distinct += seen[size_t(e)] ? 0 : 1, seen[size_t(e)] = true;
      }
      const double bytes = double(distinct) * double(h.matrix_bytes() + h.scale_bytes());
      std::printf(
          "matmul_id %-8s K=%-5lld M=%-6lld T=%-4lld x%lld of %lld experts %8.1f us  %6.0f GB/s  %5.1f%% of copy  %7.1f TFLOP/s%s%s\n",
          type_name(t), (long long)K, (long long)M, (long long)T, (long long)n_used, (long long)E, sec * 1e6,
          bytes / sec * 1e-9, 100.0 * bytes / sec / copy_bw, 2.0 * K * M * n_used * T / sec * 1e-12, mark,
          split_tag(split).c_str());
    }
  }

  // Under the model's conditions: `copies` links of (a small kernel, then the matmul that reads
  // its result), launched through the kernel table and captured in one CUDA graph, replayed 10
  // times after a warm-up replay; per link: the graph's time / links. The small kernel is scale
  // (x * 1: 16 blocks) into the matmul's x, as the rms_norm / elementwise op before each decode
  // matmul. The same graph of the small kernels alone gives their share; "matmul" = link - small.
  // Each setting is its own capture (the launchers read the switches when they launch), all with
  // the model's defaults otherwise (PDL, automatic prefetch and cluster split): "before" with the
  // streaming kernel off (the kernels of 767b323), "after" with its automatic choice, and the ring
  // forced; `sweep` adds the forced ring with its team size or stage count forced; matmul_id adds
  // the forced ring launched with PDL.
  bool sweep = false;
  double graph_seconds(const std::vector<tensor*>& small, const std::vector<tensor*>& mm) {
    auto launch_all = [&]() {
      for (size_t i = 0; i < small.size(); ++i) {
        EXPECT_TRUE(small[i]->op == op_kind::FP8_ROUNDTRIP ? cuda::launch_fp8_roundtrip(s, small[i], &err)
                                                            : cuda::launch_unary(s, small[i], &err))
            << err;
        if (!mm.empty()) {
          EXPECT_TRUE(mm[i]->op == op_kind::MATMUL ? cuda::launch_matmul(s, mm[i], &err)
                                                   : cuda::launch_matmul_id(s, mm[i], &err))
              << err;
        }
      }
    };
    launch_all();  // outside the capture: scratch memory (split-K) is allocated here
    EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    EXPECT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    launch_all();
    EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
    EXPECT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    const double sec = event_seconds(s, 10, [&] { cudaGraphLaunch(exec, s); });
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    EXPECT_EQ(cudaGetLastError(), cudaSuccess);
    return sec / double(small.size());
  }

  // One decode call in a graph chain (see graph_seconds): dense (E = 0; B > 1: a batched matmul of
  // B weight matrices [K, M, B] x [K, 1, B]) or matmul_id with n_used of E experts for one token.
  // qx: x from fp8_roundtrip(x, 128) instead of a scale (FP8-exact), timed with the tensor-core
  // decode off, forced at each cluster size and automatic; tc_plain: the same settings with x from
  // the scale (the tensor-core decode rounds it to bf16).
  void chain(dtype t, int64_t K, int64_t M, int64_t E = 0, int64_t n_used = 0, int64_t B = 1, bool qx = false,
             bool tc_plain = false) {
    const int64_t mats = E > 0 ? E : B;
    const host_weights h = make_weights(t, K, M, mats, 0, 0, 1);
    const double bytes = double(h.matrix_bytes() + h.scale_bytes()) * double(E > 0 ? n_used : B);
    const int copies = E > 0 ? 16 : copies_for(bytes, 1);
    const int64_t outs = E > 0 ? n_used : B;  // y rows of M per call
    gpu_ctx g(gpu);
    std::vector<float> xv = random_floats(size_t(K * B), 2);
    tensor* x0 = E > 0 ? g.leaf(dtype::f32, {K, 1, 1}, xv.data()) : g.leaf(dtype::f32, {K, 1, B}, xv.data());
    tensor* w_shared = E > 0 ? g.weights(h) : nullptr;
    std::vector<tensor*> small, mm;
    std::vector<std::vector<int32_t>> all_ids;
    std::mt19937 rng(5);
    for (int c = 0; c < copies; ++c) {
      tensor* xs = qx ? fp8_roundtrip(g.ctx, x0, 128) : scale(g.ctx, x0, 1.0f);
      ASSERT_TRUE(xs) << g.ctx.error();
      g.bind(xs);
      tensor* y = nullptr;
      if (E > 0) {
        std::vector<int32_t> perm(static_cast<size_t>(E));
        for (int64_t e = 0; e < E; ++e) perm[size_t(e)] = int32_t(e);
        std::shuffle(perm.begin(), perm.end(), rng);
        perm.resize(size_t(n_used));
        y = matmul_id(g.ctx, w_shared, xs, g.leaf(dtype::i32, {n_used, 1}, perm.data()));
        all_ids.push_back(perm);
      } else {
        y = matmul(g.ctx, g.weights(h), xs);
      }
      ASSERT_TRUE(y) << g.ctx.error();
      g.bind(y);
      small.push_back(xs);
      mm.push_back(y);
    }
    if (qx)  // the reference's x: the round trip (bit-exact on the GPU), per row of K
      for (int64_t b = 0; b < B; ++b) quant::fp8_roundtrip_row(&xv[size_t(b * K)], &xv[size_t(b * K)], K, 128);
    const double small_sec = graph_seconds(small, {});
    std::string shape = (E > 0 ? "matmul_id " : "matmul ") + std::string(type_name(t)) + " K=" + std::to_string(K) +
                        " M=" + std::to_string(M);
    if (E > 0) shape += " x" + std::to_string(n_used) + " of " + std::to_string(E);
    if (B > 1) shape += " x" + std::to_string(B) + " batched";
    if (qx) shape += " fp8 x";
    if (tc_plain) shape += " tc";
    std::printf("chain %-36s small kernel alone %5.2f us per link\n", shape.c_str(), small_sec * 1e6);
    const bool pdl_was = cuda::pdl_enabled();
    struct setting {
      std::string what;
      int ring;            // set_matmul_ring: 0 automatic, 1 off
      int wg = 0, st = 0;  // set_matmul_ring_shape
      bool expert_pdl = false;
      int tc = 0;  // set_matmul_tc_decode: 0 automatic, 1 off, 2 forced
      int tc_cl = 0;  // set_matmul_tc_shape's cluster size (0: automatic)
      int xsplit = 1;  // set_matmul_tc_xsplit
    };
    std::vector<setting> settings = {{"before (ring off)", 1}, {"after (automatic)", 0}, {"ring forced", 2}};
    if (qx || tc_plain) {
      settings = {{"tc decode off", 0, 0, 0, false, 1}};
      for (int cl : {1, 2})
        settings.push_back({"tc forced CL " + std::to_string(cl), 0, 0, 0, false, 2, cl});
      if (tc_plain) settings.push_back({"tc forced one f16 x", 0, 0, 0, false, 2, 0, 0});
      settings.push_back({"tc decode (automatic)", 0});
      if (tc_plain) settings.back().what = "tc decode (automatic, bf16 x on)";
    }
    if (sweep)
      for (const auto& [wg, st] : std::vector<std::pair<int, int>>{{0, 3}, {1, 0}, {2, 0}, {4, 0}})
        settings.push_back({"ring wg " + std::to_string(wg) + " S " + std::to_string(st), 2, wg, st});
    if (E > 0) settings.push_back({"ring forced, expert pdl", 2, 0, 0, true});
    for (const setting& st : settings) {
      cuda::set_matmul_ring(st.ring);
      cuda::set_matmul_ring_shape(st.wg, st.st);
      cuda::set_matmul_expert_pdl(st.expert_pdl);
      cuda::set_matmul_tc_decode(st.tc);
      cuda::set_matmul_tc_shape(st.tc_cl, 0);
      cuda::set_matmul_tc_xsplit(st.xsplit);
      cuda::set_matmul_tc_bf16x(tc_plain ? 2 : 1);
      const long long tc0 = cuda::matmul_tc_decode_calls();
      const double sec = graph_seconds(small, mm);
      const bool tc_ran = cuda::matmul_tc_decode_calls() > tc0;
      cuda::set_matmul_tc_decode(0);
      cuda::set_matmul_tc_shape(0, 0);
      cuda::set_matmul_tc_xsplit(1);
      cuda::set_matmul_tc_bf16x(0);
      cuda::set_matmul_expert_pdl(false);
      cuda::set_matmul_ring_shape(0, 0);
      cuda::set_matmul_ring(0);
      // Spot check of the last link's results (the graph ran them last).
      cudaStreamSynchronize(s);
      std::vector<float> got(size_t(M * outs));
      mm.back()->buf->get(mm.back(), got.data(), 0, got.size() * 4);
      std::vector<float> wr;
      for (int64_t p = 0; p < outs; ++p)
        for (int64_t m = 0; m < M; m += 97)
          if (tc_ran && qx)  // (FP8-exact x: bf16 rounding changes nothing)
            check_dot_tc(h.row(p, m, wr), &xv[size_t(p * K)], K, got[size_t(p * M + m)],
                         "graph chain " + shape + " " + st.what);
          else if (tc_ran)  // x rounded to bf16 (matmul_x_rounding)
            check_dot(h.row(p, m, wr), &xv[size_t(p * K)], K, 0x1p-8, got[size_t(p * M + m)],
                      "graph chain " + shape + " " + st.what);
          else
            check_dot(h.row(E > 0 ? all_ids.back()[size_t(p)] : p, m, wr), &xv[size_t(E > 0 ? 0 : p * K)], K, 0.0,
                      got[size_t(p * M + m)], "graph chain " + shape + " " + st.what);
      const double mm_sec = sec - small_sec;
      std::printf("chain %-36s %-24s link %6.2f us  matmul %6.2f us  %6.0f GB/s  %5.1f%% of copy%s%s\n",
                  shape.c_str(), st.what.c_str(), sec * 1e6, mm_sec * 1e6, bytes / mm_sec * 1e-9,
                  100.0 * bytes / mm_sec / copy_bw, pdl_was ? "" : " (no PDL)", tc_ran ? " [tc]" : "");
    }
  }

  // Decode at the V4-Flash shapes.
  void decode() {
    dense(dtype::fp8_e4m3, 4096, 16384, 1);
    dense(dtype::fp8_e4m3, 16384, 4096, 1);
    dense(dtype::fp8_e4m3, 4096, 1024, 1);
    dense(dtype::fp8_e4m3, 4096, 2048, 1);
    dense(dtype::fp8_e4m3, 4096, 32768, 1);
    dense(dtype::mxfp4, 4096, 16384, 1);
    experts(dtype::mxfp4, 4096, 2048, 256, 6, 1, 16);
    experts(dtype::mxfp4, 2048, 4096, 256, 6, 1, 16);
    experts(dtype::fp8_e4m3, 4096, 2048, 64, 6, 1, 8);
  }
};

bench make_bench(device* gpu) {
  bench b;
  b.gpu = gpu;
  EXPECT_EQ(cudaStreamCreate(&b.s), cudaSuccess);
  b.copy_bw = copy_bandwidth(b.s);
  std::printf("device copy bandwidth (cudaMemcpy D2D, 1 GiB, read + write): %.0f GB/s\n", b.copy_bw * 1e-9);
  return b;
}

// The decode calls of Timing alone, first with the gemv that one-row fp8 / mxfp4 calls used
// before (lines marked "gemv"), then with the decode kernels.
TEST(CudaMatmul, DecodeTiming) {
  REQUIRE_GPU(gpu);
  bench b = make_bench(gpu);
  cuda::set_decode_kernels_off(true);
  b.mark = " gemv";
  b.decode();
  cuda::set_decode_kernels_off(false);
  b.mark = "";
  b.decode();
  cudaStreamDestroy(b.s);
}

// Split-K before / after at the small decode shapes: each call timed with the split off (the
// kernels before it: gemv_x1, gemv1, split_row for M <= 256), forced to about S slices, and
// automatic (docs/CUDA.md "Split-K decode").
TEST(CudaMatmul, SplitKTiming) {
  REQUIRE_GPU(gpu);
  bench b = make_bench(gpu);
  b.splits = {1, 2, 4, 8, 0};
  b.dense(dtype::fp8_e4m3, 4096, 512, 1);
  b.dense(dtype::fp8_e4m3, 4096, 1024, 1);
  b.dense(dtype::fp8_e4m3, 4096, 2048, 1);
  b.dense(dtype::mxfp4, 4096, 1024, 1);
  b.splits = {1, 2, 4, 0};
  b.dense(dtype::fp8_e4m3, 16384, 4096, 1);
  b.experts(dtype::mxfp4, 4096, 2048, 64, 6, 1, 16);
  b.experts(dtype::mxfp4, 2048, 4096, 64, 6, 1, 16);
  b.experts(dtype::fp8_e4m3, 4096, 2048, 64, 6, 1, 8);
  b.splits = {1, 4, 8, 16, 0};
  b.dense(dtype::bf16, 4096, 256, 1);
  b.splits = {1, 8, 16, 32, 0};
  b.dense(dtype::f32, 4096, 256, 1);
  cudaStreamDestroy(b.s);
}

// The decode matmuls of a V4-Flash step as the model runs them (bench::chain: each after a small
// kernel, in a replayed CUDA graph, PDL on where the GPU has it), before (the streaming kernel off),
// after (its automatic choice) and with it forced (docs/CUDA.md "Third session: streaming decode
// GEMVs"). V4_GRAPH_SWEEP=1 adds two larger shapes and the ring's forced team sizes and stages.
void chain_all(bench& b);

TEST(CudaMatmul, GraphChainTiming) {
  REQUIRE_GPU(gpu);
  bench b = make_bench(gpu);
  if (!cuda::pdl_enabled()) std::printf("PDL is off (GPU below sm_90 or V4_CUDA_PDL=0)\n");
  const char* sweep = std::getenv("V4_GRAPH_SWEEP");
  b.sweep = sweep && std::string(sweep) == "1";
  const char* tc_only = std::getenv("V4_GRAPH_TC_ONLY");  // 1: only the FP8-exact x chains (below)
  if (!(tc_only && std::string(tc_only) == "1")) chain_all(b);
  // x FP8-exact (QAT's activation quantization): the tensor-core decode against the f32 kernels.
  b.chain(dtype::fp8_e4m3, 1024, 32768, 0, 0, 1, true);  // wq_b
  b.chain(dtype::fp8_e4m3, 4096, 1024, 0, 0, 8, true);   // grouped wo_a
  b.chain(dtype::fp8_e4m3, 8192, 4096, 0, 0, 1, true);   // wo_b
  b.chain(dtype::fp8_e4m3, 4096, 4096, 0, 0, 1, true);   // shared expert sw1 + sw3 combined (16 MiB)
  b.chain(dtype::fp8_e4m3, 4096, 2048, 0, 0, 1, true);   // shared expert sw1 / sw3
  b.chain(dtype::fp8_e4m3, 2048, 4096, 0, 0, 1, true);   // shared expert sw2
  b.chain(dtype::fp8_e4m3, 4096, 1024, 0, 0, 1, true);   // wq_a
  b.chain(dtype::fp8_e4m3, 4096, 512, 0, 0, 1, true);    // wkv
  b.chain(dtype::fp8_e4m3, 16384, 4096, 0, 0, 1, true);
  // x not FP8-exact (rounded to bf16 by the tensor-core decode): the grouped wo_a, and shapes below
  // the size rule.
  b.chain(dtype::fp8_e4m3, 4096, 1024, 0, 0, 8, false, true);  // grouped wo_a
  b.chain(dtype::fp8_e4m3, 4096, 2048, 0, 0, 1, false, true);
  b.chain(dtype::fp8_e4m3, 4096, 512, 0, 0, 1, false, true);
  cudaStreamDestroy(b.s);
}

// GraphChainTiming's chains of the f32 kernels (x from a scale kernel).
void chain_all(bench& b) {
  b.chain(dtype::fp8_e4m3, 1024, 32768);             // wq_b (32 MiB)
  if (b.sweep) {  // the streaming rate past the fixed cost: the same rows, 4x the bytes
    b.chain(dtype::fp8_e4m3, 1024, 131072);
    b.chain(dtype::fp8_e4m3, 4096, 16384);
  }
  b.chain(dtype::fp8_e4m3, 4096, 1024, 0, 0, 8);     // grouped wo_a: 8 x [4096, 1024] (32 MiB)
  b.chain(dtype::fp8_e4m3, 8192, 4096);              // wo_b (32 MiB)
  b.chain(dtype::mxfp4, 4096, 2048, 256, 6);         // routed experts w1 / w3 (6 x 4 MiB)
  b.chain(dtype::mxfp4, 2048, 4096, 256, 6);         // routed experts w2
  b.chain(dtype::fp8_e4m3, 4096, 2048);              // shared expert sw1 / sw3 (8 MiB)
  b.chain(dtype::fp8_e4m3, 2048, 4096);              // shared expert sw2
  b.chain(dtype::fp8_e4m3, 4096, 1024);              // wq_a
  b.chain(dtype::fp8_e4m3, 4096, 512);               // wkv
  b.chain(dtype::bf16, 4096, 1024);                  // compressor wkv + wgate
  b.chain(dtype::bf16, 4096, 512);
  b.chain(dtype::bf16, 4096, 256);                   // router gate
  b.chain(dtype::mxfp4, 4096, 1024);                 // dense mxfp4
  b.chain(dtype::fp8_e4m3, 16384, 4096);             // (K 16384: x 64 KiB, two stages)
  b.chain(dtype::f32, 16384, 24);                    // mHC pre mix (split_row; not the ring)
}

TEST(CudaMatmul, Timing) {
  REQUIRE_GPU(gpu);
  bench b = make_bench(gpu);
  b.decode();
  b.dense(dtype::bf16, 4096, 16384, 1, 4);
  b.dense(dtype::f16, 4096, 16384, 1, 4);
  b.dense(dtype::f32, 4096, 16384, 1, 2);
  b.dense(dtype::q8_0, 4096, 16384, 1, 4);
  for (int64_t N : {2, 4, 8, 16, 17, 64}) b.dense(dtype::fp8_e4m3, 4096, 16384, N, 4);
  for (int64_t N : {2, 4, 8, 16, 17}) b.dense(dtype::mxfp4, 4096, 16384, N, 4);
  // Prefill.
  b.dense(dtype::fp8_e4m3, 4096, 16384, 512, 1);
  b.dense(dtype::bf16, 4096, 16384, 512, 1);
  b.dense(dtype::mxfp4, 4096, 16384, 512, 1);
  b.experts(dtype::mxfp4, 4096, 2048, 256, 6, 4096, 1);
  cudaStreamDestroy(b.s);
}

}  // namespace

// ---- tensor-core decode of the routed experts (backends/cuda/ops_matmul_tc4.cu) -----------------------
namespace cuda {
void set_matmul_tc_id(int mode);  // 0 automatic (off: measured no faster), 1 off, 2 on
long long matmul_tc_id_calls();    // its launches so far
// units in flight per warp (0: default), k-slices (0: automatic), their order (0 default, 1 contiguous, 2 interleaved)
void set_matmul_tc_id_shape(int stages, int ks, int il);
}  // namespace cuda
namespace {

// matmul_id(w mxfp4, q(x), ids) for the decode (at most 16 (slot, token) pairs: one job per pair),
// x [K, X1, T] rounded in the same graph by fp8_roundtrip(., 128) (the FFN input's activation
// quantization) or by swiglu's fp8 option (w2's input), so that the dispatch takes the tensor-core
// kernel (asserted through its launch counter). Bound per output, with mag = sum_k |w_k x_k|:
//   |y - ref| <= (306 + K / 32) * 2^-24 * mag
// x / 2^t and the e2m1 values (times 2^-14) are exact in f16 and their products in f32. Each
// 32-k group's sum is a chain of 8 mma from 0, each adding the group's 4 products of one lane (the
// other 12 addends of the column are 0): with tc_bound_factor's model of one mma, at most
// 288 * 2^-24 times the group's sum of |products|. The group's sum is scaled by powers of two
// (exact) and added to a lane's f32 sum: K / 32 roundings over a row; then the two lanes' sums of
// each k-slice (at most 8 additions) and the k-slices (at most 7): each rounding at most
// 2^-24 * mag to first order; 2 more cover the second-order terms. (For K >= 320 this is tighter
// than the f32 kernels' (K + 2) * 2^-24.)
double tc4_bound_factor(int64_t K) { return (306.0 + double(K / 32)) * 0x1p-24; }

// The kernel is taken only when asked (set_matmul_tc_id(2) or V4_CUDA_TC_ID=1): on for a scope.
struct tc4_on {
  tc4_on() { cuda::set_matmul_tc_id(2); }
  ~tc4_on() { cuda::set_matmul_tc_id(0); }
};

// h's experts placed at experts `at` of E (the others zero weights with scale 1): the model's
// expert strides without filling 256 experts.
host_weights spread_experts(const host_weights& h, int64_t E, const std::vector<int32_t>& at) {
  host_weights s = h;
  s.E = E;
  s.data.assign(h.matrix_bytes() * size_t(E), 0);
  s.scales.assign(h.scale_bytes() * size_t(E), 127);
  for (size_t j = 0; j < at.size() && int64_t(j) < h.E; ++j) {
    const size_t e = size_t(at[j]);
    std::memcpy(s.data.data() + e * h.matrix_bytes(), h.data.data() + j * h.matrix_bytes(), h.matrix_bytes());
    std::memcpy(s.scales.data() + e * h.scale_bytes(), h.scales.data() + j * h.scale_bytes(), h.scale_bytes());
  }
  return s;
}

enum class x_src { plain, roundtrip, swiglu };

// y = matmul_id(w, x, ids) with ids [n_used, T] and x [K, X1, T] from xv: plain, fp8_roundtrip(xv,
// 128), or swiglu(g = xv, u = a second random set, no limit, fp8 block 128). The x the matmul read
// is read back from the GPU for the float64 reference (the round trips are bit-exact to the CPU,
// their own tests). expect_tc: whether the tensor-core kernel must have run (else: the f32 / tcv
// kernels' bound, as run_experts).
void run_tc4(device* gpu, const host_weights& h, const std::vector<int32_t>& ids, const std::vector<float>& xv,
             int64_t X1, int64_t T, x_src src, bool expect_tc, const std::string& name) {
  const int64_t K = h.K, M = h.M, n_used = int64_t(ids.size()) / T;
  gpu_ctx g(gpu);
  tensor* x0 = g.leaf(dtype::f32, {K, X1, T}, xv.data());
  tensor* x = x0;
  if (src == x_src::roundtrip) {
    x = fp8_roundtrip(g.ctx, x0, 128);
  } else if (src == x_src::swiglu) {
    const std::vector<float> uv = random_floats(size_t(K * X1 * T), uint32_t(K + 77));
    x = swiglu(g.ctx, x0, g.leaf(dtype::f32, {K, X1, T}, uv.data()), 0.0f, nullptr, 128);
  }
  ASSERT_TRUE(x) << g.ctx.error();
  if (x != x0) g.bind(x);
  tensor* y = matmul_id(g.ctx, g.weights(h), x, g.leaf(dtype::i32, {n_used, T}, ids.data()));
  ASSERT_TRUE(y) << g.ctx.error();
  ASSERT_TRUE(gpu->supports_op(y)) << name;
  g.bind(y);
  const long long calls0 = cuda::matmul_tc_id_calls();
  const std::vector<float> got = g.run(y);
  const long long calls = cuda::matmul_tc_id_calls() - calls0;
  if (expect_tc) EXPECT_EQ(calls, 1) << name << ": the tensor-core decode of the experts did not run";
  else EXPECT_EQ(calls, 0) << name << ": the tensor-core decode of the experts ran";
  std::vector<float> xr(size_t(K * X1 * T));
  x->buf->get(x, xr.data(), 0, xr.size() * sizeof(float));
  const double x_rounding = cuda::matmul_x_rounding(h.type, M, n_used * T, K);
  double worst = 0;
  std::vector<float> wr;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < n_used; ++i)
      for (int64_t m = 0; m < M; ++m) {
        const std::string where =
            name + " t " + std::to_string(t) + " i " + std::to_string(i) + " m " + std::to_string(m);
        const float* w = h.row(ids[size_t(t * n_used + i)], m, wr);
        const float* xrow = &xr[size_t((t * X1 + i % X1) * K)];
        const float gv = got[size_t((t * n_used + i) * M + m)];
        worst = std::max(worst, expect_tc ? check_dot_within(w, xrow, K, tc4_bound_factor(K), gv, where)
                                          : check_dot(w, xrow, K, x_rounding, gv, where));
        if (::testing::Test::HasFailure()) return;
      }
  std::printf("  %-44s worst |err|/bound %.3f\n", name.c_str(), worst);
}

TEST(CudaMatmul, TcIdMatchesFloat64) {
  REQUIRE_GPU(gpu);
  const tc4_on on;
  const std::vector<int32_t> top6 = {255, 3, 17, 128, 64, 200};
  // The model's calls: w1 + w3 combined ([D 4096, 2I 4096], x the FFN input) and w2 ([I 2048, D
  // 4096], x swiglu's output, one row per slot), 6 of 256 experts (the first and last included).
  run_tc4(gpu, spread_experts(make_weights(dtype::mxfp4, 4096, 4096, 6, 32, 1, 41), 256, top6), top6,
          random_floats(4096, 42), 1, 1, x_src::roundtrip, true, "tc4 w1+w3 K 4096 M 4096 6 of 256");
  if (HasFailure()) return;
  run_tc4(gpu, spread_experts(make_weights(dtype::mxfp4, 2048, 4096, 6, 32, 1, 43), 256, top6), top6,
          random_floats(2048 * 6, 44), 6, 1, x_src::swiglu, true, "tc4 w2 K 2048 M 4096 6 of 256 (swiglu x)");
  if (HasFailure()) return;
  struct odd {
    int64_t K, M, E;
    std::vector<int32_t> ids;
    int64_t X1, T;
    std::string what;
  };
  for (const odd& o : std::vector<odd>{
           {4096, 37, 8, {1, 1, 7, 0, 1, 5}, 1, 1, "M 37 (a partial tile), repeated expert"},
           {128, 300, 4, {2, 0}, 2, 1, "K 128 (one k-slice), 2 slots"},
           {384, 100, 3, {0, 2, 2, 1, 0, 1}, 6, 1, "K 384 (uneven k-slices), X1 6"},
           {1024, 200, 16, {3, 9, 15, 0, 3, 4, 8, 8, 1, 2, 11, 6}, 1, 2, "2 tokens x 6 slots"},
           {2048, 1100, 16, {3, 15, 0, 3, 7, 9}, 1, 1, "K 2048 M 1100"},
           {256, 45, 2, {1}, 1, 1, "one pair"}}) {
    const host_weights h = make_weights(dtype::mxfp4, o.K, o.M, o.E, 32, 1, uint64_t(o.K + o.M));
    run_tc4(gpu, h, o.ids, random_floats(size_t(o.K * o.X1 * o.T), uint32_t(o.M)), o.X1, o.T, x_src::roundtrip, true,
            "tc4 K " + std::to_string(o.K) + " M " + std::to_string(o.M) + ": " + o.what);
    if (HasFailure()) return;
  }
  // Not taken: x not FP8-exact, the hook off, by default (unless V4_CUDA_TC_ID asks), more than
  // 16 pairs (grouped by expert).
  const host_weights h = make_weights(dtype::mxfp4, 1024, 300, 8, 32, 1, 45);
  const std::vector<int32_t> ids = {1, 4, 7, 0, 2, 5};
  run_tc4(gpu, h, ids, random_floats(1024, 46), 1, 1, x_src::plain, false, "tc4 not taken: plain x");
  cuda::set_matmul_tc_id(1);
  run_tc4(gpu, h, ids, random_floats(1024, 47), 1, 1, x_src::roundtrip, false, "tc4 not taken: hook off");
  if (!std::getenv("V4_CUDA_TC_ID")) {
    cuda::set_matmul_tc_id(0);
    run_tc4(gpu, h, ids, random_floats(1024, 47), 1, 1, x_src::roundtrip, false, "tc4 not taken: default");
  }
  cuda::set_matmul_tc_id(2);
  std::vector<int32_t> ids18;
  for (int i = 0; i < 18; ++i) ids18.push_back(int32_t(i % 8));
  run_tc4(gpu, h, ids18, random_floats(1024 * 3, 48), 1, 3, x_src::roundtrip, false, "tc4 not taken: 18 pairs");
}

// The kernel's other shapes (set_matmul_tc_id_shape: units in flight per warp, k-slices per
// block), each on the model's w1 + w3 call and odd shapes, with the same bound.
TEST(CudaMatmul, TcIdShapesMatchFloat64) {
  REQUIRE_GPU(gpu);
  const tc4_on on;
  const std::vector<int32_t> top6 = {255, 3, 17, 128, 64, 200};
  const host_weights big = spread_experts(make_weights(dtype::mxfp4, 4096, 4096, 6, 32, 1, 41), 256, top6);
  const host_weights odd = make_weights(dtype::mxfp4, 384, 100, 3, 32, 1, 53);
  const host_weights w2 = make_weights(dtype::mxfp4, 2048, 1100, 16, 32, 1, 54);
  struct shape {
    int stages, ks, il;
  };
  for (const shape& sh : std::vector<shape>{{2, 0, 1}, {6, 0, 1}, {8, 0, 1}, {4, 4, 1}, {4, 2, 1}, {4, 1, 1}, {8, 2, 1},
                                            {4, 0, 2}, {8, 0, 2}, {6, 4, 2}, {4, 2, 2}}) {
    cuda::set_matmul_tc_id_shape(sh.stages, sh.ks, sh.il);
    const std::string tag = " S " + std::to_string(sh.stages) + " ks " + std::to_string(sh.ks) +
                            (sh.il == 2 ? " interleaved" : "");
    run_tc4(gpu, big, top6, random_floats(4096, 42), 1, 1, x_src::roundtrip, true, "tc4 w1+w3" + tag);
    run_tc4(gpu, odd, {0, 2, 2, 1, 0, 1}, random_floats(384 * 6, 55), 6, 1, x_src::roundtrip, true, "tc4 K 384" + tag);
    run_tc4(gpu, w2, {3, 15, 0, 3, 7, 9}, random_floats(2048 * 6, 56), 6, 1, x_src::swiglu, true, "tc4 K 2048" + tag);
    cuda::set_matmul_tc_id_shape(0, 0, 0);
    if (HasFailure()) return;
  }
}

// e8m0 NaN scales make exactly the outputs of their rows NaN (e2m1 has no NaN code), and a NaN
// element of x (passed through by the round trip) the outputs of the slots that read that row.
TEST(CudaMatmul, TcIdNaNScalesAndXPropagate) {
  REQUIRE_GPU(gpu);
  const tc4_on on;
  for (int64_t K : {1024, 4096}) {
    host_weights h = make_weights(dtype::mxfp4, K, 300, 4, 32, 1, 49);
    h.scales[size_t(3 * h.scale_bytes() + 70 * h.lo.s_stride + 5)] = 0xFF;  // expert 3, row 70, k 160..191
    // expert 1, row 290 (the last, partial tile), the last group
    h.scales[size_t(1 * h.scale_bytes() + 290 * h.lo.s_stride + size_t(K / 32 - 1))] = 0xFF;
    const std::vector<int32_t> ids = {3, 1, 3};
    run_tc4(gpu, h, ids, random_floats(size_t(K * 3), 50), 3, 1, x_src::roundtrip, true,
            "tc4 NaN scales K " + std::to_string(K));
    if (HasFailure()) return;
    std::vector<float> xv = random_floats(size_t(K * 3), 51);
    xv[size_t(K + 17)] = std::nanf("");  // x row 1: slot 1's outputs
    run_tc4(gpu, make_weights(dtype::mxfp4, K, 300, 4, 32, 1, 52), ids, xv, 3, 1, x_src::roundtrip, true,
            "tc4 NaN x K " + std::to_string(K));
    if (HasFailure()) return;
  }
}

// The routed experts' decode calls as the model runs them (bench::graph_seconds: each after its
// x's fp8_roundtrip in a replayed CUDA graph), with the tensor-core kernel off (gemv1) and on, in the
// same run: 16 links, 6 of 64 experts each (a fresh permutation per link; 64 x 8 MiB do not fit L2).
void chain_tc4(bench& b, int64_t K, int64_t M, int64_t X1, const char* what) {
  const int64_t E = 64, n_used = 6, links = 16;
  const host_weights h = make_weights(dtype::mxfp4, K, M, E, 32, 1, 7);
  const double bytes = double(h.matrix_bytes() + h.scale_bytes()) * double(n_used);
  gpu_ctx g(b.gpu);
  std::vector<float> xv = random_floats(size_t(K * X1), 8);
  tensor* x0 = g.leaf(dtype::f32, {K, X1, 1}, xv.data());
  tensor* w = g.weights(h);
  std::vector<tensor*> small, mm;
  std::vector<std::vector<int32_t>> all_ids;
  std::mt19937 rng(5);
  for (int64_t l = 0; l < links; ++l) {
    tensor* xs = fp8_roundtrip(g.ctx, x0, 128);
    ASSERT_TRUE(xs) << g.ctx.error();
    g.bind(xs);
    std::vector<int32_t> perm(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e) perm[size_t(e)] = int32_t(e);
    std::shuffle(perm.begin(), perm.end(), rng);
    perm.resize(size_t(n_used));
    tensor* y = matmul_id(g.ctx, w, xs, g.leaf(dtype::i32, {n_used, 1}, perm.data()));
    ASSERT_TRUE(y) << g.ctx.error();
    g.bind(y);
    small.push_back(xs);
    mm.push_back(y);
    all_ids.push_back(perm);
  }
  for (int64_t r = 0; r < X1; ++r) quant::fp8_roundtrip_row(&xv[size_t(r * K)], &xv[size_t(r * K)], K, 128);
  const double small_sec = b.graph_seconds(small, {});
  char shape[96];
  std::snprintf(shape, sizeof shape, "matmul_id mxfp4 K=%lld M=%lld x6 of 64 fp8 x", (long long)K, (long long)M);
  std::printf("chain %-44s (%s) small kernel alone %5.2f us per link\n", shape, what, small_sec * 1e6);
  struct setting {
    std::string what;
    int off, stages, ks, il;
    bool pdl;
  };
  // Off (gemv1, the default), on, then (a sweep) other units in flight per warp, fewer k-slices, interleaved
  // k-slices, PDL.
  const std::vector<setting> settings = {
      {"tc4 off (gemv1)", 1, 0, 0, 0, false}, {"tc4 (default shape)", 0, 0, 0, 0, false},
      {"tc4 S 2", 0, 2, 0, 1, false},         {"tc4 S 6", 0, 6, 0, 1, false},
      {"tc4 S 8", 0, 8, 0, 1, false},         {"tc4 ks 4", 0, 0, 4, 1, false},
      {"tc4 ks 2", 0, 0, 2, 1, false},        {"tc4 ks 1", 0, 0, 1, 1, false},
      {"tc4 S 8 ks 2", 0, 8, 2, 1, false},    {"tc4 il", 0, 4, 0, 2, false},
      {"tc4 il S 6", 0, 6, 0, 2, false},      {"tc4 il S 8", 0, 8, 0, 2, false},
      {"tc4 il S 6 ks 4", 0, 6, 4, 2, false}, {"tc4 il S 8 ks 4", 0, 8, 4, 2, false},
      {"tc4 with PDL", 0, 0, 0, 0, true},     {"tc4 il S 6 with PDL", 0, 6, 0, 2, true},
      {"gemv1 with PDL", 1, 0, 0, 0, true}};
  for (const setting& st : settings) {
    cuda::set_matmul_tc_id(st.off ? 1 : 2);
    cuda::set_matmul_tc_id_shape(st.stages, st.ks, st.il);
    cuda::set_matmul_expert_pdl(st.pdl);
    const long long calls0 = cuda::matmul_tc_id_calls();
    const double sec = b.graph_seconds(small, mm);
    const bool tc_ran = cuda::matmul_tc_id_calls() > calls0;
    cuda::set_matmul_expert_pdl(false);
    cuda::set_matmul_tc_id_shape(0, 0, 0);
    cuda::set_matmul_tc_id(0);
    cudaStreamSynchronize(b.s);
    std::vector<float> got(size_t(M * n_used));
    mm.back()->buf->get(mm.back(), got.data(), 0, got.size() * 4);
    std::vector<float> wr;
    for (int64_t p = 0; p < n_used; ++p)
      for (int64_t m = 0; m < M; m += 97) {
        const float* wrow = h.row(all_ids.back()[size_t(p)], m, wr);
        const float* xrow = &xv[size_t((p % X1) * K)];
        if (tc_ran) check_dot_within(wrow, xrow, K, tc4_bound_factor(K), got[size_t(p * M + m)], "chain tc4");
        else check_dot(wrow, xrow, K, 0.0, got[size_t(p * M + m)], "chain tc4 off");
      }
    const double mm_sec = sec - small_sec;
    std::printf("chain %-44s %-22s link %6.2f us  matmul %6.2f us  %6.0f GB/s  %5.1f%% of copy%s\n", shape,
                st.what.c_str(), sec * 1e6, mm_sec * 1e6, bytes / mm_sec * 1e-9,
                100.0 * bytes / mm_sec / b.copy_bw, tc_ran ? " [tc4]" : "");
  }
}

TEST(CudaMatmul, TcIdGraphChainTiming) {
  REQUIRE_GPU(gpu);
  bench b = make_bench(gpu);
  if (!cuda::pdl_enabled()) std::printf("PDL is off (GPU below sm_90 or V4_CUDA_PDL=0)\n");
  chain_tc4(b, 4096, 4096, 1, "routed w1 + w3");
  chain_tc4(b, 2048, 4096, 6, "routed w2");
  chain_tc4(b, 4096, 2048, 1, "w1 or w3 alone");
  cudaStreamDestroy(b.s);
}

}  // namespace
}  // namespace v4
