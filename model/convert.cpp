// Streaming conversion: checkpoint / model file -> planned jobs -> file_writer (see convert.h).
//
//   plan:   every output tensor becomes a job: a source view (pieces of mapped source tensors,
//           concatenated: experts are stacked, fused gate_up is split), a mode (copy bytes,
//           ids i64 -> i32, or requantize rows through f32) and the output description.
//   write:  jobs are streamed through file_writer::add_tensor(desc, producer); requantization
//           works on batches of row groups (one row, or one FP8 block row) on N threads.
#include "model/convert.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "model/hparams.h"
#include "model/names.h"
#include "model/safetensors.h"
#include "model/v4file.h"
#include "quant/quant.h"

#if __has_include("model/tokenizer.h")
#include "model/tokenizer.h"
#define V4_HAVE_TOKENIZER 1
#endif

namespace v4::model {

namespace {

using clock_type = std::chrono::steady_clock;
constexpr uint64_t kReleaseStep = 16u << 20;  // source pages are dropped in steps of this many bytes

// ---- source views ----------------------------------------------------------------------------

// A read-only mmap of a whole source file (base == nullptr: memory that is not a file mapping,
// whose pages must never be dropped).
struct mapping {
  const uint8_t* base = nullptr;
  uint64_t size = 0;
};

// Drops the mapped pages of [p, p + n) from this process; they stay in the page cache, and a
// later access maps them again. Keeps the resident set bounded while a large model is streamed.
void drop_pages(const mapping& m, const uint8_t* p, uint64_t n) {
  if (!m.base || n == 0) return;
  static const uint64_t page = uint64_t(::sysconf(_SC_PAGESIZE));
  const uint64_t begin = uint64_t(p - m.base) / page * page;
  const uint64_t end = std::min<uint64_t>(m.size, uint64_t(p - m.base) + n);
  if (end > begin) ::madvise(const_cast<uint8_t*>(m.base) + begin, size_t(end - begin), MADV_DONTNEED);
}

// The bytes of one output tensor: a concatenation of pieces of mapped source tensors.
struct byte_source {
  struct piece {
    const uint8_t* p;
    uint64_t n;
    mapping map;
  };
  std::vector<piece> pieces;
  std::vector<uint64_t> starts;
  uint64_t size = 0;
  mutable uint64_t released = 0;

  void add(const uint8_t* p, uint64_t n, mapping m) {
    pieces.push_back({p, n, m});
    starts.push_back(size);
    size += n;
  }
  size_t piece_at(uint64_t off) const {
    return size_t(std::upper_bound(starts.begin(), starts.end(), off) - starts.begin()) - 1;
  }
  // Pointer to [off, off + n) when it lies in one piece, else nullptr.
  const uint8_t* direct(uint64_t off, uint64_t n) const {
    if (pieces.empty()) return nullptr;
    const size_t i = piece_at(off);
    return off - starts[i] + n <= pieces[i].n ? pieces[i].p + (off - starts[i]) : nullptr;
  }
  void read(uint64_t off, void* dst, uint64_t n) const {
    uint8_t* d = static_cast<uint8_t*>(dst);
    while (n > 0) {
      const size_t i = piece_at(off);
      const uint64_t in = off - starts[i];
      const uint64_t k = std::min<uint64_t>(n, pieces[i].n - in);
      std::memcpy(d, pieces[i].p + in, size_t(k));
      d += k;
      off += k;
      n -= k;
    }
  }
  // Drops the pages of [released, end) once consumed: a multi-GiB stacked expert tensor then
  // costs a few MiB of resident memory, not its size.
  void release_upto(uint64_t end) const {
    if (end <= released || pieces.empty()) return;
    for (size_t i = piece_at(released); i < pieces.size() && starts[i] < end; ++i) {
      const uint64_t b = std::max(released, starts[i]) - starts[i];
      const uint64_t e = std::min(end, starts[i] + pieces[i].n) - starts[i];
      if (e > b) drop_pages(pieces[i].map, pieces[i].p + b, e - b);
    }
    released = end;
  }
  // After a tensor: drop every mapped page of the files it read. Whole files, because the
  // kernel's fault-around also maps neighbouring pages (other tensors') on each fault.
  void release() const {
    const uint8_t* last = nullptr;
    for (const piece& p : pieces)
      if (p.map.base && p.map.base != last) {
        drop_pages(p.map, p.map.base, p.map.size);
        last = p.map.base;
      }
  }
};

struct tensor_source {
  dtype type = dtype::f32;  // element type in our terms (i64 only for ids)
  int64_t ne[4] = {1, 1, 1, 1};
  byte_source data;
  byte_source scales;       // scaled types: e8m0 codes, one row of ceil(ne0/bk) per block row
  int32_t scale_block[2] = {0, 0};
  std::string origin;       // "'<source name>' in <file>" for messages
};

enum class job_mode { copy, ids, requant, scales_copy };

struct job {
  tensor_desc out;
  tensor_source src;
  job_mode mode = job_mode::copy;
  int64_t n_experts = 0;  // ids: values must lie in [0, n_experts)
};

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

bool fits(dtype t, int64_t ne0) {
  if (t == dtype::mxfp4) return ne0 % 2 == 0;
  return ne0 % traits(t).block_size == 0;
}

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
      for (int64_t i = 0; i < rows; ++i) traits(t).from_f32(x.data() + i * ne0_, q + i * out_row_, ne0_);
    }
  }

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

bool read_file(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

bool file_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// ---- checkpoint planning -------------------------------------------------------------------------

std::string origin_of(const st_tensor* t) { return "'" + t->name + "' in " + t->file->path(); }

mapping map_of(const st_tensor* t) {
  return t->file->mapped() ? mapping{t->file->base(), t->file->size()} : mapping{};
}

// One source tensor (+ its e8m0 scales) as a view with the logical shape of one matrix.
bool make_source(const std::string& name, tensor_role role, const st_tensor* w, const st_tensor* s,
                 const hparams& hp, tensor_source* out, std::string* error) {
  auto fail = [&](const std::string& m) {
    *error = "tensor '" + name + "' (" + origin_of(w) + "): " + m;
    return false;
  };
  if (w->shape.size() > 4) return fail("has " + std::to_string(w->shape.size()) + " dims");
  tensor_source src;
  src.origin = origin_of(w);
  for (size_t i = 0; i < w->shape.size(); ++i) src.ne[i] = w->shape[w->shape.size() - 1 - i];
  switch (w->dtype) {
    case st_dtype::F32: src.type = dtype::f32; break;
    case st_dtype::BF16: src.type = dtype::bf16; break;
    case st_dtype::F16: src.type = dtype::f16; break;
    case st_dtype::F8_E4M3: src.type = dtype::fp8_e4m3; break;
    case st_dtype::I8:
    case st_dtype::U8:
      if (role != tensor_role::weight || !s)
        return fail(std::string("dtype ") + st_dtype_name(w->dtype) + " is only supported for MXFP4 weights with .scale");
      src.type = dtype::mxfp4;
      src.ne[0] *= 2;  // two e2m1 codes per byte, packed along the input dimension
      break;
    case st_dtype::I64: src.type = dtype::i64; break;
    case st_dtype::I32: src.type = dtype::i32; break;
    case st_dtype::F8_E8M0: return fail("dtype F8_E8M0 (scales) is not supported for this tensor");
  }
  const bool int_src = src.type == dtype::i64 || src.type == dtype::i32;
  if (role == tensor_role::ids && !int_src)
    return fail(std::string("dtype ") + st_dtype_name(w->dtype) + " is not supported for expert ids (need I64 or I32)");
  if (role != tensor_role::ids && int_src)
    return fail(std::string("dtype ") + st_dtype_name(w->dtype) + " is not supported for a float tensor");
  if (src.type == dtype::fp8_e4m3 && role != tensor_role::weight)
    return fail("dtype F8_E4M3 is only supported for matmul weights");
  const bool scaled = src.type == dtype::fp8_e4m3 || src.type == dtype::mxfp4;
  if (scaled) {
    if (!s) return fail(std::string(st_dtype_name(w->dtype)) + " weight without its scales tensor '" + scales_name(name) + "'");
    if (s->dtype != st_dtype::F8_E8M0)
      return fail("scales " + origin_of(s) + " have dtype " + st_dtype_name(s->dtype) + ", need F8_E8M0");
    if (src.type == dtype::fp8_e4m3) {
      src.scale_block[0] = hp.weight_block[0];
      src.scale_block[1] = hp.weight_block[1];
    } else {
      src.scale_block[0] = quant::kMxfp4Block;
      src.scale_block[1] = 1;
    }
    const std::vector<int64_t> want = {(src.ne[1] + src.scale_block[1] - 1) / src.scale_block[1],
                                       (src.ne[0] + src.scale_block[0] - 1) / src.scale_block[0]};
    if (w->shape.size() != 2 || s->shape != want)
      return fail("scales " + origin_of(s) + " have shape " + torch_shape_str(s->shape) + ", expected " +
                  torch_shape_str(want) + " (blocks of " + std::to_string(src.scale_block[1]) + " x " +
                  std::to_string(src.scale_block[0]) + "; quantization_config.weight_block_size)");
    src.scales.add(s->data, s->size, map_of(s));
  } else if (s) {
    return fail("has a scales tensor " + origin_of(s) + " but dtype " + st_dtype_name(w->dtype) + " takes none");
  }
  src.data.add(w->data, w->size, map_of(w));
  *out = std::move(src);
  return true;
}

bool same_ne(const int64_t* a, const int64_t* b) { return std::memcmp(a, b, 4 * sizeof(int64_t)) == 0; }

struct checkpoint_index {
  struct pair {
    const st_tensor* w = nullptr;
    const st_tensor* s = nullptr;
  };
  std::map<std::string, pair> plain;                    // canonical -> weight (+ scale)
  std::map<std::string, std::map<int64_t, pair>> experts;  // stacked canonical -> expert -> tensors
  std::map<std::string, const st_tensor*> gate_up;      // "layers.L.ffn.experts." -> fused [E, 2I, D]
  std::map<std::string, const st_tensor*> down;         // stacked w2 canonical -> fused [E, D, I]
  size_t dropped = 0;
  bool any_mtp = false;
};

bool index_checkpoint(const st_checkpoint& ck, checkpoint_index* ix, std::string* error) {
  for (const auto& [name, t] : ck.tensors()) {
    const source_name sn = map_source_name(name);
    auto dup = [&](const st_tensor* prev) {
      *error = "tensors " + origin_of(prev) + " and " + origin_of(t) + " both map to '" + sn.canonical +
               (sn.is_scale ? "' (scales)" : "'");
      return false;
    };
    if (sn.canonical.compare(0, 4, "mtp.") == 0) ix->any_mtp = true;
    switch (sn.kind) {
      case source_name::unknown:
        *error = "unexpected tensor " + origin_of(t) + ": not a DeepSeek-V4 tensor name";
        return false;
      case source_name::dropped:
        ++ix->dropped;
        break;
      case source_name::plain: {
        const st_tensor*& slot = sn.is_scale ? ix->plain[sn.canonical].s : ix->plain[sn.canonical].w;
        if (slot) return dup(slot);
        slot = t;
        break;
      }
      case source_name::expert: {
        auto& p = ix->experts[sn.canonical][sn.expert_index];
        const st_tensor*& slot = sn.is_scale ? p.s : p.w;
        if (slot) return dup(slot);
        slot = t;
        break;
      }
      case source_name::fused_gate_up:
        ix->gate_up[sn.canonical] = t;
        break;
      case source_name::fused_down:
        ix->down[sn.canonical] = t;
        break;
    }
  }
  return true;
}

// The stacked routed experts of one projection: from per-expert tensors or a fused tensor.
bool plan_experts(const expected_tensor& e, const hparams& hp, checkpoint_index& ix, std::set<const st_tensor*>* used,
                  tensor_source* out, std::string* error) {
  const int64_t E = hp.n_experts;
  const std::string layer = e.name.substr(0, e.name.size() - std::strlen("w1.weight"));  // "...ffn.experts."
  const bool is_w2 = e.name.compare(e.name.size() - 9, 9, "w2.weight") == 0;
  auto per = ix.experts.find(e.name);
  const st_tensor* fused = nullptr;
  if (is_w2) {
    auto it = ix.down.find(e.name);
    if (it != ix.down.end()) fused = it->second;
  } else {
    auto it = ix.gate_up.find(layer);
    if (it != ix.gate_up.end()) fused = it->second;
  }
  if (fused && per != ix.experts.end()) {
    *error = "tensor '" + e.name + "': both per-expert tensors and the fused " + origin_of(fused) + " are present";
    return false;
  }
  if (fused) {
    // transformers: gate_up_proj [E, 2I, D] (gate rows first, then up), down_proj [E, D, I].
    const int64_t D = hp.hidden_size, I = hp.moe_inter;
    const std::vector<int64_t> want = is_w2 ? std::vector<int64_t>{E, D, I} : std::vector<int64_t>{E, 2 * I, D};
    if (fused->shape != want) {
      *error = "tensor '" + e.name + "' (" + origin_of(fused) + "): shape " + torch_shape_str(fused->shape) +
               ", expected " + torch_shape_str(want);
      return false;
    }
    tensor_source src;
    if (!make_source(e.name, tensor_role::weight, fused, nullptr, hp, &src, error)) return false;
    if (!is_plain_float(src.type)) {
      *error = "tensor '" + e.name + "' (" + origin_of(fused) + "): fused experts must be F32, BF16 or F16";
      return false;
    }
    used->insert(fused);
    for (int i = 0; i < 4; ++i) src.ne[i] = e.ne[i];
    if (!is_w2) {
      const uint64_t es = row_size(src.type, D), mat = uint64_t(I) * es;
      const bool up = e.name.compare(e.name.size() - 9, 9, "w3.weight") == 0;
      src.data = byte_source();
      for (int64_t x = 0; x < E; ++x) src.data.add(fused->data + uint64_t(x) * 2 * mat + (up ? mat : 0), mat, map_of(fused));
    }
    *out = std::move(src);
    return true;
  }
  if (per == ix.experts.end()) {
    *error = "missing tensor '" + e.name + "': no routed experts (ffn.experts.{e}." + e.name.substr(e.name.size() - 9) +
             ") in the checkpoint";
    return false;
  }
  tensor_source all;
  for (int64_t x = 0; x < E; ++x) {
    auto it = per->second.find(x);
    const std::string ename = layer + std::to_string(x) + e.name.substr(e.name.size() - 10);
    if (it == per->second.end() || !it->second.w) {
      *error = "missing tensor '" + ename + "' (expert " + std::to_string(x) + " of " + std::to_string(E) + ")";
      return false;
    }
    tensor_source one;
    if (!make_source(ename, tensor_role::weight, it->second.w, it->second.s, hp, &one, error)) return false;
    if (one.ne[0] != e.ne[0] || one.ne[1] != e.ne[1] || one.ne[2] != 1) {
      *error = "tensor '" + ename + "' (" + one.origin + "): logical shape " + shape_str(one.ne, 2) + ", expected " +
               shape_str(e.ne, 2);
      return false;
    }
    if (x == 0) {
      all.type = one.type;
      all.scale_block[0] = one.scale_block[0];
      all.scale_block[1] = one.scale_block[1];
      all.origin = "'" + layer + "*' experts of " + it->second.w->file->path();
    } else if (one.type != all.type) {
      *error = "tensor '" + ename + "' (" + one.origin + "): type " + type_name(one.type) + " differs from expert 0 (" +
               type_name(all.type) + ")";
      return false;
    }
    for (const auto& p : one.data.pieces) all.data.add(p.p, p.n, p.map);
    for (const auto& p : one.scales.pieces) all.scales.add(p.p, p.n, p.map);
    used->insert(it->second.w);
    if (it->second.s) used->insert(it->second.s);
  }
  for (const auto& [x, p] : per->second)
    if (x < 0 || x >= E) {
      const st_tensor* t = p.w ? p.w : p.s;
      *error = "unexpected tensor " + origin_of(t) + ": expert " + std::to_string(x) + " but n_routed_experts = " +
               std::to_string(E);
      return false;
    }
  for (int i = 0; i < 4; ++i) all.ne[i] = e.ne[i];
  *out = std::move(all);
  return true;
}

}  // namespace

std::string progress_line(const convert_progress& p) {
  const double frac = p.bytes_total ? double(p.bytes_done) / double(p.bytes_total) : 1.0;
  const double rate = p.seconds > 0 ? double(p.bytes_done) / p.seconds : 0;
  const double eta = rate > 0 ? double(p.bytes_total - p.bytes_done) / rate : 0;
  char buf[160];
  std::snprintf(buf, sizeof buf, "%5.1f%% %s / %s  %.0f MB/s  ETA %.0f s  [%zu/%zu] ", 100.0 * frac,
                human(p.bytes_done).c_str(), human(p.bytes_total).c_str(), rate / 1e6, eta, p.tensor_index + 1,
                p.n_tensors);
  return buf + p.tensor;
}

const std::vector<std::string>& quantize_type_names() {
  static const std::vector<std::string> t = {"f32", "bf16", "f16", "q8_0", "q4_k", "q3_k", "q2_k", "fp8_e4m3", "mxfp4"};
  return t;
}

bool convert_checkpoint(const std::string& dir, const std::string& out_path, const convert_options& opt,
                        convert_stats* stats, std::string* error) {
  quant::register_types();
  convert_stats local;
  if (!stats) stats = &local;
  *stats = convert_stats();
  auto note = [&](const std::string& m) {
    if (opt.note) opt.note(m);
  };
  if (!valid_type(opt.type, true)) {
    *error = "unknown --type '" + opt.type + "' (one of: " + type_list(true) + ")";
    return false;
  }
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    *error = dir + ": no such checkpoint directory";
    return false;
  }
  const std::string cfg_path = dir + "/config.json";
  std::string cfg_text;
  if (!file_exists(cfg_path) || !read_file(cfg_path, &cfg_text)) {
    *error = cfg_path + ": missing (a checkpoint directory needs config.json)";
    return false;
  }
  hparams hp;
  std::string err;
  if (!hparams_from_config_json(cfg_text, &hp, &err)) {
    *error = dir + "/" + err;
    return false;
  }
  if (hp.name.empty()) {
    std::string d = dir;
    while (d.size() > 1 && d.back() == '/') d.pop_back();
    const size_t slash = d.find_last_of('/');
    hp.name = slash == std::string::npos ? d : d.substr(slash + 1);
  }
  std::unique_ptr<st_checkpoint> ck = st_checkpoint::open(dir, error);
  if (!ck) return false;

  checkpoint_index ix;
  if (!index_checkpoint(*ck, &ix, error)) return false;
  if (hp.n_mtp_layers > 0 && !ix.any_mtp) {
    note("config.json has " + std::to_string(hp.n_mtp_layers) +
         " MTP layer(s) but the checkpoint has no mtp.* tensors: converting without MTP");
    hp.n_mtp_layers = 0;
    hp.mtp_compress_ratios.clear();
  }

  // Plan every output tensor, checking names, shapes and dtypes before anything is written.
  std::vector<job> jobs;
  std::set<const st_tensor*> used;
  std::map<std::string, int> fallbacks;
  for (const expected_tensor& e : expected_tensors(hp)) {
    tensor_source src;
    const bool stacked = e.name.find(".ffn.experts.w") != std::string::npos;
    if (stacked) {
      if (!plan_experts(e, hp, ix, &used, &src, error)) return false;
    } else {
      auto it = ix.plain.find(e.name);
      if (it == ix.plain.end() || !it->second.w) {
        *error = "missing tensor '" + e.name + "' (expected " + role_name(e.role) + " of shape " +
                 shape_str(e.ne, e.n_dims) + ") in " + dir;
        if (it != ix.plain.end() && it->second.s) *error += " (only its scales " + origin_of(it->second.s) + " are there)";
        return false;
      }
      if (!make_source(e.name, e.role, it->second.w, it->second.s, hp, &src, error)) return false;
      if (!same_ne(src.ne, e.ne)) {
        *error = "tensor '" + e.name + "' (" + src.origin + "): shape " + torch_shape_str(it->second.w->shape) +
                 " (logical " + shape_str(src.ne, 4) + "), expected logical " + shape_str(e.ne, e.n_dims);
        return false;
      }
      used.insert(it->second.w);
      if (it->second.s) used.insert(it->second.s);
    }
    std::string fb;
    dtype target = src.type;
    if (e.role == tensor_role::weight) {
      target = choose_type(e.role, src.type, opt.type, e.ne[0], &fb);
    } else if (e.role == tensor_role::ids) {
      target = dtype::i32;
    } else if (!is_plain_float(src.type)) {
      target = dtype::f32;  // a param stored scaled: dequantize
    }
    if (!fb.empty()) ++fallbacks[fb];
    plan_output(e.name, e.role, e.n_dims, std::move(src), target, hp.weight_block, hp.n_experts, &jobs);
  }
  if (hp.tie_embeddings) {
    auto it = ix.plain.find("head.weight");
    if (it != ix.plain.end()) {
      used.insert(it->second.w);
      if (it->second.s) used.insert(it->second.s);
      note("tie_word_embeddings: head.weight is ignored (the runtime uses embed.weight)");
    }
  }
  for (const auto& [name, t] : ck->tensors()) {
    const source_name sn = map_source_name(name);
    if (sn.kind != source_name::dropped && !used.count(t)) {
      *error = "unexpected tensor " + origin_of(t) + " (maps to '" + sn.canonical + (sn.is_scale ? "' scales" : "'") +
               ", which this config does not use)";
      return false;
    }
  }
  if (ix.dropped) note("dropped " + std::to_string(ix.dropped) + " mtp.* embedding/head tensors (shared with the main model)");
  for (const auto& [what, n] : fallbacks) note("type fallback " + what + ": " + std::to_string(n) + " tensor(s)");

  // Tokenizer (optional).
  std::string tok_json, tok_cfg;
  const bool have_tok = read_file(dir + "/tokenizer.json", &tok_json);
  if (have_tok) read_file(dir + "/tokenizer_config.json", &tok_cfg);
  else note("no tokenizer.json: the model will run on token ids only");
#ifndef V4_HAVE_TOKENIZER
  if (have_tok) note("this build has no tokenizer support yet: tokenizer.json is not stored");
#endif

  auto write_meta = [&](file_writer& w, std::string* e) {
    if (!hparams_write(hp, w, e)) return false;
#ifdef V4_HAVE_TOKENIZER
    if (have_tok && !tokenizer_to_metadata(tok_json, tok_cfg, w, e)) {
      *e = dir + "/tokenizer.json: " + *e;
      return false;
    }
#endif
    return true;
  };
  return write_all(out_path, opt.force, jobs, write_meta, opt.threads, opt.progress, stats, error);
}

// ---- quantize ------------------------------------------------------------------------------------

bool parse_quantize_rule(const std::string& text, quantize_rule* rule, std::string* error) {
  const size_t eq = text.rfind('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == text.size()) {
    *error = "--rule '" + text + "': expected REGEX=TYPE";
    return false;
  }
  quantize_rule r{text.substr(0, eq), text.substr(eq + 1)};
  if (r.type != "keep" && !valid_type(r.type, false)) {
    *error = "--rule '" + text + "': unknown type '" + r.type + "' (one of: keep, " + type_list(false) + ")";
    return false;
  }
  try {
    std::regex re(r.pattern);
  } catch (const std::regex_error& e) {
    *error = "--rule '" + text + "': bad regular expression: " + e.what();
    return false;
  }
  *rule = r;
  return true;
}

bool quantize_model(const std::string& in_path, const std::string& out_path, const quantize_options& opt,
                    convert_stats* stats, std::string* error) {
  quant::register_types();
  convert_stats local;
  if (!stats) stats = &local;
  *stats = convert_stats();
  if (!valid_type(opt.type, false)) {
    *error = "unknown --type '" + opt.type + "' (one of: " + type_list(false) + ")";
    return false;
  }
  std::vector<std::pair<std::regex, std::string>> rules;
  for (const quantize_rule& r : opt.rules) {
    quantize_rule checked;
    if (!parse_quantize_rule(r.pattern + "=" + r.type, &checked, error)) return false;
    rules.emplace_back(std::regex(r.pattern), r.type);
  }
  if (in_path == out_path) {
    *error = out_path + ": the output must differ from the input";
    return false;
  }
  std::unique_ptr<model_file> f = model_file::open(in_path, error);
  if (!f) return false;
  int32_t fp8_block[2] = {128, 128};
  {
    std::vector<uint8_t> raw;
    uint64_t n = 0;
    std::string ignore;
    if (f->get_array("deepseek_v4.weight_block", meta_type::i32, &raw, &n, &ignore) && n == 2)
      std::memcpy(fp8_block, raw.data(), 8);
    if (fp8_block[0] < 1 || fp8_block[1] < 1) fp8_block[0] = fp8_block[1] = 128;
  }

  // model_file::open maps the whole file; its first tensor's offset finds the mapping's base.
  mapping file_map;
  if (!f->tensors().empty()) {
    const tensor_entry& t0 = f->tensors()[0];
    file_map = {t0.data - t0.offset, f->file_size()};
  }
  std::set<std::string> scale_names;
  for (const tensor_entry& t : f->tensors())
    if (t.scales) scale_names.insert(t.d.scales);

  std::vector<job> jobs;
  std::map<std::string, int> fallbacks;
  for (const tensor_entry& t : f->tensors()) {
    if (scale_names.count(t.d.name)) continue;  // written with its weight
    tensor_source src;
    src.type = t.d.type;
    for (int i = 0; i < 4; ++i) src.ne[i] = t.d.ne[i];
    src.data.add(t.data, t.size, file_map);
    src.origin = "'" + t.d.name + "' in " + in_path;
    if (t.scales) {
      src.scales.add(t.scales->data, t.scales->size, file_map);
      src.scale_block[0] = t.d.scale_block[0];
      src.scale_block[1] = t.d.scale_block[1];
    }
    tensor_role role = role_of(t.d.name);
    const bool convertible = traits(t.d.type).to_f32 && t.d.type != dtype::e8m0 && !traits(t.d.type).is_int;
    if (role == tensor_role::ids || !convertible) {
      job j;  // ids (already i32), integer or e8m0 tensors: copied
      j.out = t.d;
      j.src = std::move(src);
      j.mode = job_mode::copy;
      jobs.push_back(std::move(j));
      continue;
    }
    std::string requested = role == tensor_role::weight ? opt.type : "keep";
    for (const auto& [re, type] : rules)
      if (std::regex_search(t.d.name, re)) {
        requested = type;
        break;
      }
    std::string fb;
    const dtype target = choose_type(tensor_role::weight, t.d.type, requested, t.d.ne[0], &fb);
    if (!fb.empty()) ++fallbacks[fb];
    plan_output(t.d.name, role, t.d.n_dims, std::move(src), target, fp8_block, 0, &jobs);
  }
  for (const auto& [what, n] : fallbacks)
    if (opt.note) opt.note("type fallback " + what + ": " + std::to_string(n) + " tensor(s)");

  // Metadata is copied unchanged (arrays need their 12-byte element head back).
  auto write_meta = [&](file_writer& w, std::string* e) {
    for (const auto& [key, v] : f->metadata()) {
      bool ok;
      if (v.type == meta_type::array) {
        std::vector<uint8_t> raw(12 + size_t(v.size));
        const uint32_t et = uint32_t(v.elem_type);
        std::memcpy(raw.data(), &et, 4);
        std::memcpy(raw.data() + 4, &v.count, 8);
        if (v.size) std::memcpy(raw.data() + 12, v.bytes, size_t(v.size));
        ok = w.set_raw(key, uint32_t(v.type), raw.data(), raw.size());
      } else {
        ok = w.set_raw(key, uint32_t(v.type), v.bytes, v.size);
      }
      if (!ok) {
        *e = w.error();
        return false;
      }
    }
    return true;
  };
  return write_all(out_path, opt.force, jobs, write_meta, opt.threads, opt.progress, stats, error);
}

}  // namespace v4::model
