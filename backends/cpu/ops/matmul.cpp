// MATMUL and MATMUL_ID: batch / expert bookkeeping around the matmul kernels (backends/cpu/matmul.h).
#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "backends/cpu/matmul.h"
#include "backends/cpu/ops/common.h"

namespace v4::cpu {

namespace {
// The scales of weight matrix (i2, i3) of w, for scaled types.
void set_scales(const tensor* w, int64_t i2, int64_t i3, mm_problem* p) {
  if (!w->scales) return;
  p->scales = reinterpret_cast<const uint8_t*>(at(w->scales, 0, 0, i2, i3));
  p->s_stride = w->scales->nb[1];
  p->sb_k = w->scale_block[0];
  p->sb_m = w->scale_block[1];
}
}  // namespace

void kernel_MATMUL(const exec& ex, tensor* dst) {
  const tensor* w = dst->src[0];
  const tensor* x = dst->src[1];
  const int64_t r2 = x->ne[2] / w->ne[2], r3 = x->ne[3] / w->ne[3];  // broadcast ratios
  for (int64_t b3 = 0; b3 < x->ne[3]; ++b3)
    for (int64_t b2 = 0; b2 < x->ne[2]; ++b2) {
      mm_problem p;
      p.wtype = w->type;
      p.w = at(w, 0, 0, b2 / r2, b3 / r3);
      p.w_stride = w->nb[1];
      p.x = reinterpret_cast<const float*>(at(x, 0, 0, b2, b3));
      p.x_stride = x->nb[1];
      p.y = reinterpret_cast<float*>(at(dst, 0, 0, b2, b3));
      p.y_stride = dst->nb[1];
      p.M = w->ne[1];
      p.N = x->ne[1];
      p.K = w->ne[0];
      set_scales(w, b2 / r2, b3 / r3, &p);
      matmul(p, ex.n_threads);
    }
}

namespace {
// Decode with fewer selected experts than threads (one token, 6 experts, 16 threads): each
// expert's weight rows are cut into pieces that the threads take one at a time, so every thread
// streams weights. A piece starts at a multiple of the weights' scale rows (fp8: 128) and of 16;
// each output row is still one kernel call's row over all of K, so the result does not depend on
// the number of threads.
void run_split_experts(const exec& ex, tensor* dst, const std::vector<std::vector<int64_t>>& by_expert,
                       const std::vector<int64_t>& active) {
  const tensor* w = dst->src[0];
  const tensor* x = dst->src[1];
  const int64_t K = w->ne[0], M = w->ne[1], n_used = dst->src[2]->ne[0];
  const int64_t A = int64_t(active.size());
  std::vector<size_t> first(size_t(A) + 1, 0);  // row offset of each active expert's block
  for (int64_t a = 0; a < A; ++a) first[size_t(a) + 1] = first[size_t(a)] + by_expert[size_t(active[a])].size();
  std::vector<float> xin(first.back() * size_t(K)), yout(first.back() * size_t(M));
  for (int64_t a = 0; a < A; ++a) {
    const std::vector<int64_t>& rows = by_expert[size_t(active[a])];
    for (size_t j = 0; j < rows.size(); ++j) {
      const int64_t i = rows[j] % n_used, t = rows[j] / n_used;
      std::memcpy(&xin[(first[size_t(a)] + j) * size_t(K)], at(x, 0, i % x->ne[1], t, 0), size_t(K) * sizeof(float));
    }
  }
  const int64_t align = w->scales && w->scale_block[1] > 0 ? std::lcm<int64_t>(w->scale_block[1], 16) : 16;
  // Pieces per expert: at least two per thread in all, and where one exists nearby, a count whose
  // total is a multiple of the threads (6 experts on 16 threads: 8 pieces, 48 items = 3 full
  // rounds, instead of 6 pieces = 36 items, whose last round keeps 4 of 16 threads busy).
  const int64_t n = ex.n_threads, least = std::max<int64_t>(1, (2 * n + A - 1) / A);
  int64_t pieces = least;
  while (pieces < 2 * least && (A * pieces) % n != 0) ++pieces;
  if ((A * pieces) % n != 0) pieces = least;
  const int64_t step = std::max<int64_t>(align, ((M + pieces - 1) / pieces + align - 1) / align * align);
  const int64_t per_expert = (M + step - 1) / step;
#pragma omp parallel for num_threads(ex.n_threads) schedule(dynamic, 1)
  for (int64_t item = 0; item < A * per_expert; ++item) {
    const int64_t a = item / per_expert, m0 = (item % per_expert) * step;
    const int64_t e = active[size_t(a)];
    mm_problem p;
    p.wtype = w->type;
    p.w = at(w, 0, m0, e, 0);
    p.w_stride = w->nb[1];
    p.x = &xin[first[size_t(a)] * size_t(K)];
    p.x_stride = K * sizeof(float);
    p.y = &yout[first[size_t(a)] * size_t(M) + size_t(m0)];
    p.y_stride = M * sizeof(float);
    p.M = std::min(step, M - m0);
    p.N = int64_t(first[size_t(a) + 1] - first[size_t(a)]);
    p.K = K;
    set_scales(w, e, 0, &p);
    if (p.scales) p.scales += (m0 / p.sb_m) * int64_t(p.s_stride);
    matmul(p, 1);
  }
  for (int64_t a = 0; a < A; ++a) {
    const std::vector<int64_t>& rows = by_expert[size_t(active[a])];
    for (size_t j = 0; j < rows.size(); ++j) {
      const int64_t i = rows[j] % n_used, t = rows[j] / n_used;
      std::memcpy(at(dst, 0, i, t, 0), &yout[(first[size_t(a)] + j) * size_t(M)], size_t(M) * sizeof(float));
    }
  }
}
}  // namespace

// Groups the (slot, token) pairs by expert, gathers their inputs into one block per expert,
// multiplies once per expert (so each expert's weights are read once), scatters the results.
void kernel_MATMUL_ID(const exec& ex, tensor* dst) {
  const tensor* w = dst->src[0];
  const tensor* x = dst->src[1];
  const tensor* ids = dst->src[2];
  const int64_t K = w->ne[0], M = w->ne[1], E = w->ne[2];
  const int64_t n_used = ids->ne[0], n_tok = ids->ne[1];
  std::vector<std::vector<int64_t>> by_expert(static_cast<size_t>(E));  // entries: slot + n_used * token
  for (int64_t t = 0; t < n_tok; ++t)
    for (int64_t i = 0; i < n_used; ++i) {
      const int32_t e = *reinterpret_cast<const int32_t*>(at(ids, i, t, 0, 0));
      by_expert[size_t(e)].push_back(i + n_used * t);
    }
  // One expert's block: gather its rows of x, multiply, scatter into y (rows of distinct experts
  // never overlap, so experts can run concurrently).
  auto run_expert = [&](int64_t e, int threads) {
    const std::vector<int64_t>& rows = by_expert[size_t(e)];
    if (rows.empty()) return;
    const int64_t n = int64_t(rows.size());
    thread_local std::vector<float> xin, yout;
    xin.resize(size_t(n * K));
    yout.resize(size_t(n * M));
    for (int64_t j = 0; j < n; ++j) {
      const int64_t i = rows[j] % n_used, t = rows[j] / n_used;
      std::memcpy(&xin[j * K], at(x, 0, i % x->ne[1], t, 0), size_t(K) * sizeof(float));
    }
    mm_problem p;
    p.wtype = w->type;
    p.w = at(w, 0, 0, e, 0);
    p.w_stride = w->nb[1];
    p.x = xin.data();
    p.x_stride = K * sizeof(float);
    p.y = yout.data();
    p.y_stride = M * sizeof(float);
    p.M = M;
    p.N = n;
    p.K = K;
    set_scales(w, e, 0, &p);
    matmul(p, threads);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t i = rows[j] % n_used, t = rows[j] / n_used;
      std::memcpy(at(dst, 0, i, t, 0), &yout[j * M], size_t(M) * sizeof(float));
    }
  };
  // Decode-sized groups (few rows per expert): one parallel region over the experts, each
  // multiplied on one thread. A region per expert would pay a thread wake-up (and, when another
  // process holds a core, a scheduler slice) per expert. Kernels never split K, so the result
  // does not depend on the thread count.
  size_t most_rows = 0;
  std::vector<int64_t> active;
  for (int64_t e = 0; e < E; ++e) {
    most_rows = std::max(most_rows, by_expert[size_t(e)].size());
    if (!by_expert[size_t(e)].empty()) active.push_back(e);
  }
  if (most_rows <= 16 && ex.n_threads > int(active.size())) {
    run_split_experts(ex, dst, by_expert, active);
  } else if (most_rows <= 16 && ex.n_threads > 1) {
#pragma omp parallel for num_threads(ex.n_threads) schedule(dynamic, 1)
    for (int64_t e = 0; e < E; ++e) run_expert(e, 1);
  } else {
    for (int64_t e = 0; e < E; ++e) run_expert(e, ex.n_threads);
  }
}

}  // namespace v4::cpu
