// Streaming half of the conversion engine: job sources, the type policy, requantization and the
// file writing loop (see convert_stream.h).
#include "model/convert_stream.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <thread>

#include "quant/quant.h"

namespace v4::model {

namespace convert_detail {

namespace {

using clock_type = std::chrono::steady_clock;
constexpr uint64_t kReleaseStep = 16u << 20;  // source pages are dropped in steps of this many bytes

bool fits(dtype t, int64_t ne0) {
  if (t == dtype::mxfp4) return ne0 % 2 == 0;
  return ne0 % traits(t).block_size == 0;
}

// ---- requantization ----------------------------------------------------------------------------

// Produces the output bytes of a requant job in order, a batch of row groups at a time.
class requantizer {
 public:
  requantizer(const job& j, int threads, std::vector<uint8_t>* scales_out)
      : j_(j), threads_(std::max(1, threads)), scales_out_(scales_out) {
    const tensor_desc& d = j.out;
    ne0_ = d.ne[0];
    ne1_ = d.ne[1];
    n_mat_ = d.ne[2] * d.ne[3];
    out_row_ = row_size(d.type, ne0_);
    in_row_ = row_size(j.src.type, ne0_);
    group_rows_ = d.type == dtype::fp8_e4m3 ? d.scale_block[1] : 1;
    groups_per_mat_ = (ne1_ + group_rows_ - 1) / group_rows_;
    if (d.type == dtype::fp8_e4m3) scale_row_ = quant::fp8_scale_cols(ne0_, d.scale_block[0]);
    if (d.type == dtype::mxfp4) scale_row_ = (ne0_ + quant::kMxfp4Block - 1) / quant::kMxfp4Block;
    if (scales_out_) {
      const int64_t srows = d.type == dtype::fp8_e4m3 ? groups_per_mat_ : ne1_;
      scales_out_->assign(size_t(srows * n_mat_ * scale_row_), 0);
    }
    const uint64_t target = 8u << 20;
    batch_groups_ = std::max<int64_t>(1, int64_t(target / std::max<uint64_t>(1, group_rows_ * out_row_)));
  }

  bool produce(uint64_t off, void* dst, size_t n) {
    uint8_t* d = static_cast<uint8_t*>(dst);
    while (n > 0) {
      if (off < buf_start_ || off >= buf_start_ + buf_.size()) {
        if (next_group_ >= groups_per_mat_ * n_mat_) return false;  // asked past the end
        compute_batch();
        if (overflow_row_ >= 0) return false;
        if (off < buf_start_ || off >= buf_start_ + buf_.size()) return false;  // not sequential
      }
      const uint64_t in = off - buf_start_;
      const uint64_t k = std::min<uint64_t>(n, buf_.size() - in);
      std::memcpy(d, buf_.data() + in, size_t(k));
      d += k;
      off += k;
      n -= k;
    }
    return true;
  }

 private:
  // Output byte offset and row count of group g (groups do not cross matrices).
  void group_extent(int64_t g, int64_t* first_row, int64_t* rows) const {
    const int64_t m = g / groups_per_mat_, j = g % groups_per_mat_;
    *first_row = m * ne1_ + j * group_rows_;
    *rows = std::min<int64_t>(group_rows_, ne1_ - j * group_rows_);
  }

  void compute_batch() {
    const int64_t g0 = next_group_;
    const int64_t g1 = std::min<int64_t>(g0 + batch_groups_, groups_per_mat_ * n_mat_);
    int64_t r0 = 0, rows = 0, rl = 0, nl = 0;
    group_extent(g0, &r0, &rows);
    group_extent(g1 - 1, &rl, &nl);
    buf_start_ = uint64_t(r0) * out_row_;
    buf_.resize(size_t(uint64_t(rl + nl - r0) * out_row_));
    const int nt = int(std::min<int64_t>(threads_, g1 - g0));
    auto work = [&](int t) {
      std::vector<float> x;
      std::vector<uint8_t> tmp, srow;
      for (int64_t g = g0 + t; g < g1; g += nt) run_group(g, r0, x, tmp, srow);
    };
    if (nt <= 1) {
      work(0);
    } else {
      std::vector<std::thread> pool;
      for (int t = 0; t < nt; ++t) pool.emplace_back(work, t);
      for (std::thread& th : pool) th.join();
    }
    next_group_ = g1;
    j_.src.data.release_upto(uint64_t(rl + nl) * in_row_);
  }

  // Source row r as f32 (scaled types: times their e8m0 block scale).
  void load_row(int64_t r, float* y, std::vector<uint8_t>& tmp, std::vector<uint8_t>& srow) const {
    const tensor_source& s = j_.src;
    const uint64_t off = uint64_t(r) * in_row_;
    const uint8_t* p = s.data.direct(off, in_row_);
    if (!p) {
      tmp.resize(in_row_);
      s.data.read(off, tmp.data(), in_row_);
      p = tmp.data();
    }
    traits(s.type).to_f32(p, y, ne0_);
    if (!traits(s.type).scaled) return;
    const int64_t bk = s.scale_block[0], br = s.scale_block[1];
    const int64_t scols = (ne0_ + bk - 1) / bk, srows_per_mat = (ne1_ + br - 1) / br;
    const int64_t m = r / ne1_, i1 = r % ne1_;
    srow.resize(size_t(scols));
    s.scales.read(uint64_t((m * srows_per_mat + i1 / br) * scols), srow.data(), uint64_t(scols));
    for (int64_t k = 0; k < ne0_; ++k) y[k] *= quant::e8m0_to_f32(srow[size_t(k / bk)]);
  }

  void run_group(int64_t g, int64_t batch_row0, std::vector<float>& x, std::vector<uint8_t>& tmp,
                 std::vector<uint8_t>& srow) {
    int64_t r0 = 0, rows = 0;
    group_extent(g, &r0, &rows);
    x.resize(size_t(rows * ne0_));
    for (int64_t i = 0; i < rows; ++i) load_row(r0 + i, x.data() + i * ne0_, tmp, srow);
    uint8_t* q = buf_.data() + uint64_t(r0 - batch_row0) * out_row_;
    const dtype t = j_.out.type;
    if (t == dtype::fp8_e4m3) {
      uint8_t* sc = scales_out_->data() + size_t(g * scale_row_);
      quant::quantize_fp8_blocks(x.data(), rows, ne0_, j_.out.scale_block[0], j_.out.scale_block[1], q, sc);
    } else if (t == dtype::mxfp4) {
      for (int64_t i = 0; i < rows; ++i)
        quant::quantize_row_mxfp4(x.data() + i * ne0_, q + i * out_row_, scales_out_->data() + size_t((r0 + i) * scale_row_),
                                  ne0_);
    } else {
      if (t == dtype::f16) check_f16_range(x, r0);
      for (int64_t i = 0; i < rows; ++i) traits(t).from_f32(x.data() + i * ne0_, q + i * out_row_, ne0_);
    }
  }

  // f16 tops out at 65504: a larger finite weight would silently become inf.
  void check_f16_range(const std::vector<float>& x, int64_t row0) {
    for (size_t i = 0; i < x.size(); ++i)
      if (std::isfinite(x[i]) && std::fabs(x[i]) > 65504.0f) {
        std::lock_guard<std::mutex> lock(mu_);
        if (overflow_row_ < 0) {
          overflow_row_ = row0 + int64_t(i) / ne0_;
          overflow_value_ = x[i];
        }
        return;
      }
  }

 public:
  // Set when produce() failed because a value does not fit the target type.
  std::string failure() const {
    if (overflow_row_ < 0) return "";
    return "value " + std::to_string(overflow_value_) + " in row " + std::to_string(overflow_row_) +
           " exceeds the f16 range (+-65504): use bf16";
  }

 private:
  std::mutex mu_;
  int64_t overflow_row_ = -1;
  float overflow_value_ = 0;

  const job& j_;
  int threads_;
  std::vector<uint8_t>* scales_out_;
  int64_t ne0_ = 0, ne1_ = 0, n_mat_ = 0, group_rows_ = 1, groups_per_mat_ = 0, scale_row_ = 0, batch_groups_ = 1;
  uint64_t out_row_ = 0, in_row_ = 0;
  int64_t next_group_ = 0;
  uint64_t buf_start_ = 0;
  std::vector<uint8_t> buf_;
};

// ---- writing -----------------------------------------------------------------------------------

struct write_ctx {
  file_writer* w;
  int threads;
  const std::function<void(const convert_progress&)>* progress;
  convert_progress prog;
  clock_type::time_point t0;
  convert_stats* stats;
};

void account(write_ctx& c, const tensor_desc& d, uint64_t bytes) {
  type_total& t = c.stats->per_type[type_name(d.type)];
  ++t.tensors;
  t.bytes += bytes;
  c.stats->bytes_out += bytes;
  ++c.stats->tensors;
}

void tick(write_ctx& c, uint64_t bytes) {
  c.prog.bytes_done += bytes;
  c.prog.seconds = std::chrono::duration<double>(clock_type::now() - c.t0).count();
  if (*c.progress) (*c.progress)(c.prog);
}

bool add_counted(write_ctx& c, const tensor_desc& d, const file_writer::producer& p, std::string* error) {
  uint64_t n = 0;
  if (!tensor_nbytes(d, &n, error)) return false;
  const bool ok = c.w->add_tensor(d, [&](uint64_t off, void* dst, size_t len) {
    if (!p(off, dst, len)) return false;
    tick(c, len);
    return true;
  });
  if (!ok) return false;
  account(c, d, n);
  return true;
}

bool write_job(write_ctx& c, const job& j, std::string* error) {
  error->clear();
  c.prog.tensor = j.out.name;
  std::string perr;
  bool ok = true;
  switch (j.mode) {
    case job_mode::copy:
    case job_mode::scales_copy:
      ok = add_counted(c, j.out, [&](uint64_t off, void* dst, size_t n) {
        j.src.data.read(off, dst, n);
        j.src.data.release_upto(off / kReleaseStep * kReleaseStep);
        return true;
      }, error);
      break;
    case job_mode::ids:
      ok = add_counted(c, j.out, [&](uint64_t off, void* dst, size_t n) {
        const bool wide = j.src.type == dtype::i64;
        int32_t* o = static_cast<int32_t*>(dst);
        for (size_t i = 0; i < n / 4; ++i) {
          const uint64_t e = off / 4 + i;
          int64_t v = 0;
          if (wide) j.src.data.read(e * 8, &v, 8);
          else {
            int32_t v32 = 0;
            j.src.data.read(e * 4, &v32, 4);
            v = v32;
          }
          if (v < 0 || v >= j.n_experts) {
            perr = "tensor '" + j.out.name + "' (" + j.src.origin + "): expert id " + std::to_string(v) + " at element " +
                   std::to_string(e) + " is outside [0, " + std::to_string(j.n_experts) + ")";
            return false;
          }
          o[i] = int32_t(v);
        }
        return true;
      }, error);
      break;
    case job_mode::requant: {
      const bool scaled = traits(j.out.type).scaled;
      std::vector<uint8_t> scales;
      requantizer rq(j, c.threads, scaled ? &scales : nullptr);
      ok = add_counted(c, j.out, [&](uint64_t off, void* dst, size_t n) { return rq.produce(off, dst, n); }, error);
      if (!ok && !rq.failure().empty()) perr = "tensor '" + j.out.name + "' (" + j.src.origin + "): " + rq.failure();
      if (ok && scaled) {
        tensor_desc sd;
        sd.name = j.out.scales;
        sd.type = dtype::e8m0;
        sd.n_dims = j.out.n_dims;
        for (int i = 0; i < 4; ++i) sd.ne[i] = j.out.ne[i];
        sd.ne[0] = (j.out.ne[0] + j.out.scale_block[0] - 1) / j.out.scale_block[0];
        sd.ne[1] = (j.out.ne[1] + j.out.scale_block[1] - 1) / j.out.scale_block[1];
        ok = add_counted(c, sd, [&](uint64_t off, void* dst, size_t n) {
          std::memcpy(dst, scales.data() + off, n);
          return true;
        }, error);
      }
      break;
    }
  }
  c.stats->bytes_in += j.src.data.size + j.src.scales.size;
  j.src.data.release();
  j.src.scales.release();
  if (!ok) {
    if (!perr.empty()) *error = perr;
    else if (error->empty()) *error = c.w->error();
  }
  return ok;
}

}  // namespace

// Drops the mapped pages of [p, p + n) from this process; they stay in the page cache, and a
// later access maps them again. Keeps the resident set bounded while a large model is streamed.
void drop_pages(const mapping& m, const uint8_t* p, uint64_t n) {
  if (!m.base || n == 0) return;
  static const uint64_t page = uint64_t(::sysconf(_SC_PAGESIZE));
  const uint64_t begin = uint64_t(p - m.base) / page * page;
  const uint64_t end = std::min<uint64_t>(m.size, uint64_t(p - m.base) + n);
  if (end > begin) ::madvise(const_cast<uint8_t*>(m.base) + begin, size_t(end - begin), MADV_DONTNEED);
}

std::string shape_str(const int64_t* ne, int n) {
  std::string s = "{";
  for (int i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "}";
}

std::string torch_shape_str(const std::vector<int64_t>& sh) {
  std::string s = "[";
  for (size_t i = 0; i < sh.size(); ++i) s += (i ? ", " : "") + std::to_string(sh[i]);
  return s + "]";
}

std::string human(uint64_t b) {
  char buf[32];
  if (b >= (uint64_t(1) << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", b / 1073741824.0);
  else if (b >= (uint64_t(1) << 20)) std::snprintf(buf, sizeof buf, "%.2f MiB", b / 1048576.0);
  else std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024.0);
  return buf;
}

bool is_plain_float(dtype t) { return t == dtype::f32 || t == dtype::bf16 || t == dtype::f16; }

// ---- type policy -----------------------------------------------------------------------------

// The output type of a tensor of role `role`, stored as `src`, when `requested` is asked for
// ("native"/"keep" = as stored). `fallback` says why a smaller type was not possible.
dtype choose_type(tensor_role role, dtype src, const std::string& requested, int64_t ne0, std::string* fallback) {
  if (role == tensor_role::ids) return dtype::i32;
  if (requested == "native" || requested == "keep") {
    return src;
  }
  dtype want = dtype::f32;
  type_from_name(requested, &want);
  if (fits(want, ne0)) return want;
  dtype got = dtype::bf16;
  if (want != dtype::q8_0 && fits(dtype::q8_0, ne0)) got = dtype::q8_0;
  *fallback = std::string(type_name(want)) + " -> " + type_name(got) + " (ne0 = " + std::to_string(ne0) + ")";
  return got;
}

// Builds the output job(s) of a tensor from its source and the target type.
void plan_output(const std::string& name, tensor_role role, int n_dims, tensor_source src, dtype target,
                 const int32_t fp8_block[2], int64_t n_experts, std::vector<job>* jobs) {
  job j;
  j.out.name = name;
  j.out.n_dims = n_dims;
  for (int i = 0; i < 4; ++i) j.out.ne[i] = src.ne[i];
  j.out.type = target;
  const bool src_scaled = traits(src.type).scaled;
  if (role == tensor_role::ids) {
    j.mode = job_mode::ids;
    j.n_experts = n_experts;
    j.src = std::move(src);
    jobs->push_back(std::move(j));
    return;
  }
  if (traits(target).scaled) {
    j.out.scales = scales_name(name);
    if (target == dtype::mxfp4) {
      j.out.scale_block[0] = quant::kMxfp4Block;
      j.out.scale_block[1] = 1;
    } else {
      j.out.scale_block[0] = fp8_block[0];
      j.out.scale_block[1] = fp8_block[1];
    }
  }
  const bool same = target == src.type && (!src_scaled || (src.scale_block[0] == j.out.scale_block[0] &&
                                                           src.scale_block[1] == j.out.scale_block[1]));
  if (same) {
    j.mode = job_mode::copy;
    if (src_scaled) {
      job s;
      s.out.name = j.out.scales;
      s.out.type = dtype::e8m0;
      s.out.n_dims = n_dims;
      for (int i = 0; i < 4; ++i) s.out.ne[i] = src.ne[i];
      s.out.ne[0] = (src.ne[0] + src.scale_block[0] - 1) / src.scale_block[0];
      s.out.ne[1] = (src.ne[1] + src.scale_block[1] - 1) / src.scale_block[1];
      s.mode = job_mode::scales_copy;
      s.src.type = dtype::e8m0;
      s.src.data = src.scales;
      s.src.origin = src.origin;
      j.src = std::move(src);
      jobs->push_back(std::move(j));
      jobs->push_back(std::move(s));
      return;
    }
  } else {
    j.mode = job_mode::requant;
  }
  j.src = std::move(src);
  jobs->push_back(std::move(j));
}

bool write_all(const std::string& out_path, bool force, const std::vector<job>& jobs,
               const std::function<bool(file_writer&, std::string*)>& write_meta, int threads,
               const std::function<void(const convert_progress&)>& progress, convert_stats* stats,
               std::string* error) {
  struct stat st;
  if (::stat(out_path.c_str(), &st) == 0 && !force) {
    *error = out_path + ": already exists (use --force to overwrite)";
    return false;
  }
  const std::string tmp = out_path + ".tmp";
  file_writer w;
  auto abort_write = [&](const std::string& m) {
    *error = m;
    std::remove(tmp.c_str());
    return false;
  };
  if (!w.open(tmp)) return abort_write(w.error());
  std::string err;
  if (!write_meta(w, &err)) return abort_write(err);

  write_ctx c{&w, threads, &progress, {}, clock_type::now(), stats};
  c.prog.n_tensors = jobs.size();
  for (const job& j : jobs) {
    uint64_t n = 0;
    if (!tensor_nbytes(j.out, &n, &err)) return abort_write(err);
    c.prog.bytes_total += n;
    if (traits(j.out.type).scaled && j.mode == job_mode::requant) {
      c.prog.bytes_total += uint64_t((j.out.ne[0] + j.out.scale_block[0] - 1) / j.out.scale_block[0]) *
                            uint64_t((j.out.ne[1] + j.out.scale_block[1] - 1) / j.out.scale_block[1]) *
                            uint64_t(j.out.ne[2] * j.out.ne[3]);
    }
  }
  for (size_t i = 0; i < jobs.size(); ++i) {
    c.prog.tensor_index = i;
    if (!write_job(c, jobs[i], &err)) return abort_write(out_path + ": " + err);
  }
  if (!w.finish()) return abort_write(out_path + ": " + w.error());
  if (std::rename(tmp.c_str(), out_path.c_str()) != 0)
    return abort_write(out_path + ": cannot rename " + tmp + ": " + std::strerror(errno));
  stats->seconds = std::chrono::duration<double>(clock_type::now() - c.t0).count();
  if (::stat(out_path.c_str(), &st) == 0) stats->file_size = uint64_t(st.st_size);
  return true;
}

bool valid_type(const std::string& t, bool allow_native) {
  if (allow_native && t == "native") return true;
  const auto& n = quantize_type_names();
  return std::find(n.begin(), n.end(), t) != n.end();
}

std::string type_list(bool with_native) {
  std::string s = with_native ? "native" : "";
  for (const std::string& t : quantize_type_names()) s += (s.empty() ? "" : ", ") + t;
  return s;
}

}  // namespace convert_detail

std::string progress_line(const convert_progress& p) {
  const double frac = p.bytes_total ? double(p.bytes_done) / double(p.bytes_total) : 1.0;
  const double rate = p.seconds > 0 ? double(p.bytes_done) / p.seconds : 0;
  const double eta = rate > 0 ? double(p.bytes_total - p.bytes_done) / rate : 0;
  char buf[160];
  using convert_detail::human;
  std::snprintf(buf, sizeof buf, "%5.1f%% %s / %s  %.0f MB/s  ETA %.0f s  [%zu/%zu] ", 100.0 * frac,
                human(p.bytes_done).c_str(), human(p.bytes_total).c_str(), rate / 1e6, eta, p.tensor_index + 1,
                p.n_tensors);
  return buf + p.tensor;
}

const std::vector<std::string>& quantize_type_names() {
  static const std::vector<std::string> t = {"f32", "bf16", "f16", "q8_0", "q4_k", "q3_k", "q2_k", "fp8_e4m3", "mxfp4"};
  return t;
}

}  // namespace v4::model
