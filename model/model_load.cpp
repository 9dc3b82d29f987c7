// Loading a model: hparams from the metadata, then every canonical tensor bound by name with
// its shape checked against the hparams (docs/FORMAT.md, "Canonical tensor names").
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <unordered_map>
#include <unordered_set>

#include "backends/backends.h"
#include "backends/cpu/cpu.h"
#include "model/model.h"
#include "tensor/ops.h"

namespace v4::model {
namespace {

std::string shape_str(int n, const int64_t* ne) {
  std::string s = "[";
  for (int i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

// What a tensor must look like. `small` parameters are read by elementwise ops and end up f32.
struct want {
  std::string name;
  std::vector<int64_t> ne;
  bool small = false;
};

class binder {
 public:
  binder(const model_file& f, context& ctx, buffer* mapped) : f_(f), ctx_(ctx), mapped_(mapped) {}

  // Binds a matmul-class weight (any registered type) or a small parameter (converted to f32
  // later). nullptr and error_ on a missing or misshaped tensor.
  tensor* get(const want& w) {
    if (!error_.empty()) return nullptr;
    const tensor_entry* e = f_.find(w.name);
    if (!e) {
      error_ = "tensor '" + w.name + "' is missing from the model file (expected shape " +
               shape_str(int(w.ne.size()), w.ne.data()) + "): the file does not match its config; re-convert it";
      return nullptr;
    }
    bool ok = true;
    for (int i = 0; i < kMaxDims; ++i) {
      const int64_t expect = i < int(w.ne.size()) ? w.ne[i] : 1;
      if (e->d.ne[i] != expect) ok = false;
    }
    if (!ok) {
      error_ = "tensor '" + w.name + "' has shape " + shape_str(e->d.n_dims, e->d.ne) + ", expected " +
               shape_str(int(w.ne.size()), w.ne.data()) + " for this config";
      return nullptr;
    }
    tensor* t = bind_entry(*e);
    if (t) all_.push_back(t);
    if (t && w.small) small_.push_back(t);
    return t;
  }
  tensor* opt(const want& w) { return f_.find(w.name) ? get(w) : nullptr; }

  const std::string& error() const { return error_; }
  std::vector<tensor*>& small() { return small_; }
  std::vector<tensor*>& all() { return all_; }

 private:
  tensor* bind_entry(const tensor_entry& e) {
    tensor* t = ctx_.new_tensor(e.d.type, kMaxDims, e.d.ne);
    t->set_name("%s", e.d.name.c_str());
    t->flags |= kFlagWeight;
    bind_tensor(t, mapped_, e.offset);
    if (e.scales) {
      tensor* s = ctx_.new_tensor(e.scales->d.type, kMaxDims, e.scales->d.ne);
      s->set_name("%s", e.scales->d.name.c_str());
      s->flags |= kFlagWeight;
      bind_tensor(s, mapped_, e.scales->offset);
      t->scales = s;
      t->scale_block[0] = e.d.scale_block[0];
      t->scale_block[1] = e.d.scale_block[1];
    }
    return t;
  }

  const model_file& f_;
  context& ctx_;
  buffer* mapped_;
  std::string error_;
  std::vector<tensor*> small_;
  std::vector<tensor*> all_;
};

}  // namespace

model::~model() = default;

std::unique_ptr<model> model::load(const std::string& path, const load_options& opt, std::string* error) {
  std::string err;
  std::unique_ptr<model_file> f = model_file::open(path, &err);
  if (!f) {
    *error = err;
    return nullptr;
  }
  return from_file(std::move(f), opt, error);
}

std::unique_ptr<model> model::from_file(std::unique_ptr<model_file> file, const load_options& opt,
                                        std::string* error) {
  std::unique_ptr<model> m(new model());
  m->file_ = std::move(file);
  if (!hparams_read(*m->file_, &m->hp_, error)) return nullptr;
  if (opt.verify) {
    std::string err;
    if (!m->file_->verify(&err, nullptr, [&](uint64_t d, uint64_t t) { if (opt.progress) opt.progress(d, t); })) {
      *error = err;
      return nullptr;
    }
  }
  if (!m->bind(opt, error)) return nullptr;
  return m;
}

bool model::bind(const load_options& opt, std::string* error) {
  const hparams& h = hp_;
  // Placement first: a bad override or device name is refused before any work.
  backends::init();
  placement pl;
  if (!pl.init(opt.place, h.n_layers, error)) return false;
  // Progress units: binding counts n_layers; with an accelerator, copying weights there counts
  // as many again (in proportion to bytes).
  const uint64_t units = uint64_t(h.n_layers) * (pl.accelerator() ? 2 : 1);
  mapped_ = cpu::wrap_host_memory(const_cast<uint8_t*>(file_->data()), file_->file_size());
  binder b(*file_, ctx_, mapped_.get());

  const int64_t D = h.hidden_size, V = h.vocab_size, HC = h.hc_mult, H = h.n_heads, HD = h.head_dim;
  const int64_t G = h.o_groups, E = h.n_experts, I = h.moe_inter, IH = h.index_n_heads, ID = h.index_head_dim;
  const int64_t n_mix = (2 + HC) * HC;
  embed = b.get({"embed.weight", {D, V}});
  head = b.get({"head.weight", {D, V}});
  norm = b.get({"norm.weight", {D}, true});
  hc_head_fn = b.get({"hc_head_fn", {HC * D, HC}, true});
  hc_head_base = b.get({"hc_head_base", {HC}, true});
  hc_head_scale = b.get({"hc_head_scale", {1}, true});

  layers.resize(static_cast<size_t>(h.n_layers));
  for (int64_t il = 0; il < h.n_layers; ++il) {
    layer_weights& L = layers[static_cast<size_t>(il)];
    const std::string p = "layers." + std::to_string(il) + ".";
    L.ratio = h.compress_ratio(il);
    L.hash = h.is_hash_layer(il);
    L.attn_norm = b.get({p + "attn_norm.weight", {D}, true});
    L.ffn_norm = b.get({p + "ffn_norm.weight", {D}, true});
    L.hc_attn_fn = b.get({p + "hc_attn_fn", {HC * D, n_mix}, true});
    L.hc_attn_base = b.get({p + "hc_attn_base", {n_mix}, true});
    L.hc_attn_scale = b.get({p + "hc_attn_scale", {3}, true});
    L.hc_ffn_fn = b.get({p + "hc_ffn_fn", {HC * D, n_mix}, true});
    L.hc_ffn_base = b.get({p + "hc_ffn_base", {n_mix}, true});
    L.hc_ffn_scale = b.get({p + "hc_ffn_scale", {3}, true});

    L.sink = b.get({p + "attn.attn_sink", {H}, true});
    L.wq_a = b.get({p + "attn.wq_a.weight", {D, h.q_lora_rank}});
    L.q_norm = b.get({p + "attn.q_norm.weight", {h.q_lora_rank}, true});
    L.wq_b = b.get({p + "attn.wq_b.weight", {h.q_lora_rank, H * HD}});
    L.wkv = b.get({p + "attn.wkv.weight", {D, HD}});
    L.kv_norm = b.get({p + "attn.kv_norm.weight", {HD}, true});
    L.wo_a = b.get({p + "attn.wo_a.weight", {H * HD / G, G * h.o_lora_rank}});
    L.wo_b = b.get({p + "attn.wo_b.weight", {G * h.o_lora_rank, D}});
    if (L.ratio != 0) {
      const int64_t c = L.ratio == 4 ? 2 : 1;
      const std::string q = p + "attn.compressor.";
      L.comp.ape = b.get({q + "ape", {c * HD, L.ratio}, true});
      L.comp.wkv = b.get({q + "wkv.weight", {D, c * HD}});
      L.comp.wgate = b.get({q + "wgate.weight", {D, c * HD}});
      L.comp.norm = b.get({q + "norm.weight", {HD}, true});
    }
    if (L.ratio == 4) {
      const std::string q = p + "attn.indexer.";
      L.idx_wq_b = b.get({q + "wq_b.weight", {h.q_lora_rank, IH * ID}});
      L.idx_weights = b.get({q + "weights_proj.weight", {D, IH}});
      L.idx_comp.ape = b.get({q + "compressor.ape", {2 * ID, 4}, true});
      L.idx_comp.wkv = b.get({q + "compressor.wkv.weight", {D, 2 * ID}});
      L.idx_comp.wgate = b.get({q + "compressor.wgate.weight", {D, 2 * ID}});
      L.idx_comp.norm = b.get({q + "compressor.norm.weight", {ID}, true});
    }

    L.gate = b.get({p + "ffn.gate.weight", {D, E}});
    if (L.hash) {
      const std::string name = p + "ffn.gate.tid2eid";
      const tensor_entry* e = file_->find(name);
      if (!e || e->d.type != dtype::i32 || e->d.ne[0] != h.n_experts_used || e->d.ne[1] != V || e->d.ne[2] != 1) {
        *error = "tensor '" + name + "' is missing or not i32 [" + std::to_string(h.n_experts_used) + ", " +
                 std::to_string(V) + "]: re-convert the model";
        return false;
      }
      L.tid2eid = reinterpret_cast<const int32_t*>(e->data);
      for (int64_t i = 0; i < V * h.n_experts_used; ++i) {
        if (L.tid2eid[i] < 0 || L.tid2eid[i] >= E) {
          *error = "tensor '" + name + "': expert id " + std::to_string(L.tid2eid[i]) + " at element " +
                   std::to_string(i) + " is outside [0, " + std::to_string(E) + ")";
          return false;
        }
      }
    } else {
      L.gate_bias = b.get({p + "ffn.gate.bias", {E}, true});
    }
    L.w1 = b.get({p + "ffn.experts.w1.weight", {D, I, E}});
    L.w3 = b.get({p + "ffn.experts.w3.weight", {D, I, E}});
    L.w2 = b.get({p + "ffn.experts.w2.weight", {I, D, E}});
    const int64_t IS = I * h.n_shared_experts;
    if (IS > 0) {
      L.sw1 = b.get({p + "ffn.shared_experts.w1.weight", {D, IS}});
      L.sw3 = b.get({p + "ffn.shared_experts.w3.weight", {D, IS}});
      L.sw2 = b.get({p + "ffn.shared_experts.w2.weight", {IS, D}});
    }
    if (!b.error().empty()) break;
    if (opt.progress && !opt.progress(uint64_t(il + 1), units)) {
      *error = "load cancelled";
      return false;
    }
  }
  if (!b.error().empty()) {
    *error = b.error();
    return false;
  }

  // Small parameters: f32 in place when stored so, else converted once into converted_.
  size_t bytes = 0;
  for (tensor* t : b.small())
    if (t->type != dtype::f32) bytes += size_t(t->nelements()) * sizeof(float) + 64;
  if (bytes) {
    converted_ = cpu::cpu_device()->default_buffer_type()->alloc(bytes, error);
    if (!converted_) return false;
  }
  size_t off = 0;
  for (tensor* t : b.small()) {
    if (t->type == dtype::f32) continue;
    const type_traits& tr = traits(t->type);
    if (!tr.to_f32 || tr.scaled || t->ne[0] % tr.block_size != 0) {
      *error = std::string("tensor '") + t->name + "' has type " + type_name(t->type) +
               ": norm weights, mHC parameters, sinks and biases must be f32, bf16 or f16";
      return false;
    }
    const void* src = t->data;
    const int64_t n = t->nelements();
    t->type = dtype::f32;
    set_contiguous_strides(t);
    bind_tensor(t, converted_.get(), off);
    tr.to_f32(src, static_cast<float*>(t->data), n);
    off += (size_t(n) * sizeof(float) + 63) / 64 * 64;
  }
  weights_ = std::move(b.all());
  return place_weights(pl, opt, units, error);
}

namespace {

size_t span(const tensor* t) { return (t->nbytes() + 255) / 256 * 256; }

// The projections of a layer that read one input, in the order their rows are laid out when
// combined (layer_weights::fused).
std::vector<std::vector<tensor*>> input_sets(const layer_weights& L) {
  return {{L.wq_a, L.wkv, L.comp.wkv, L.comp.wgate, L.idx_comp.wkv, L.idx_comp.wgate, L.idx_weights},
          {L.sw1, L.sw3},
          {L.w1, L.w3}};
}

// Whether t can follow `rows` rows of weights like `first` in one combined weight: the same type,
// K and expert count, the same scale layout, and t's first row starting a scale block (a block
// straddling two members would need scales of both).
bool can_follow(const tensor* first, int64_t rows, const tensor* t) {
  if (t->type != first->type || t->ne[0] != first->ne[0] || t->ne[2] != first->ne[2] || t->ne[3] != 1 ||
      first->ne[3] != 1 || !t->is_contiguous())
    return false;
  if (!t->scales != !first->scales) return false;
  if (!t->scales) return true;
  return t->scales->type == first->scales->type && t->scales->is_contiguous() &&
         t->scale_block[0] == first->scale_block[0] && t->scale_block[1] == first->scale_block[1] &&
         rows % first->scale_block[1] == 0;
}

// Bytes of a combined weight of these members (with its scales), each part 256-aligned.
size_t fused_bytes(const std::vector<tensor*>& ms) {
  int64_t rows = 0, srows = 0;
  for (const tensor* t : ms) rows += t->ne[1], srows += t->scales ? t->scales->ne[1] : 0;
  const tensor* a = ms[0];
  const auto round = [](size_t n) { return (n + 255) / 256 * 256; };
  size_t bytes = round(a->nb[1] * size_t(rows) * size_t(a->ne[2]));
  if (a->scales) bytes += round(a->scales->nb[1] * size_t(srows) * size_t(a->ne[2]));
  return bytes;
}

// Copies parts [K, M_i, E] (contiguous, in host memory) into c [K, sum M_i, E], each expert's
// parts one after another, and rebinds every part to its rows of c: the parts become aliases of c
// (strided over experts when E > 1).
void lay_out(tensor* c, const std::vector<tensor*>& parts) {
  const size_t rb = c->nb[1];
  const int64_t E = c->ne[2];
  int64_t r0 = 0;
  for (tensor* p : parts) {
    const char* src = static_cast<const char*>(p->data);
    const size_t bytes = size_t(p->ne[1]) * rb;  // one expert's rows of p
    for (int64_t e = 0; e < E; ++e) c->buf->set(c, src + size_t(e) * bytes, size_t(e) * c->nb[2] + size_t(r0) * rb, bytes);
    p->buf = c->buf;
    p->data = static_cast<char*>(c->data) + size_t(r0) * rb;
    if (E > 1) p->nb[2] = c->nb[2], p->nb[3] = c->nb[3];
    r0 += p->ne[1];
  }
}

}  // namespace

// Copies the weights the placement sends to other devices into one buffer per device and
// rebinds them there (scales with their weight). The CPU keeps reading the rest from the mapping.
// On an accelerator the projections of a layer that read one input are laid out as one weight
// (layer_weights::fused), so the forward pass computes them with one matmul.
bool model::place_weights(const placement& pl, const load_options& opt, uint64_t units, std::string* error) {
  std::unordered_map<const tensor*, device*> dev_of;
  for (tensor* t : weights_) {
    device* d = pl.device_for(t->name);
    dev_of[t] = d->kind() == device_kind::cpu ? cpu::cpu_device() : d;
  }
  // Combined weights: per input set, members grouped by device and layout (can_follow), in order.
  struct fused_plan {
    size_t layer;
    std::vector<tensor*> members;
    int64_t rows;  // the members' rows so far
  };
  std::vector<fused_plan> plans;
  std::unordered_map<const tensor*, size_t> plan_of;  // first member -> its plan
  std::unordered_set<const tensor*> combined;         // every member of a plan
  // V4_FUSED_WEIGHTS=0 keeps every weight apart (to measure what combining buys).
  const char* env = std::getenv("V4_FUSED_WEIGHTS");
  const bool combine = !(env && std::strcmp(env, "0") == 0);
  for (size_t il = 0; combine && il < layers.size(); ++il) {
    for (const std::vector<tensor*>& set : input_sets(layers[il])) {
      std::vector<fused_plan> open;
      for (tensor* t : set) {
        if (!t || dev_of[t] == cpu::cpu_device()) continue;
        auto joins = [&](const fused_plan& f) {
          return dev_of[f.members[0]] == dev_of[t] && can_follow(f.members[0], f.rows, t);
        };
        auto into = std::find_if(open.begin(), open.end(), joins);
        if (into != open.end()) into->members.push_back(t), into->rows += t->ne[1];
        else if (can_follow(t, 0, t)) open.push_back({il, {t}, t->ne[1]});
      }
      for (fused_plan& f : open) {
        if (f.members.size() < 2) continue;
        plan_of[f.members[0]] = plans.size();
        combined.insert(f.members.begin(), f.members.end());
        plans.push_back(std::move(f));
      }
    }
  }

  // Per device: what goes there, as units (one weight, or the members of one combined weight).
  struct group {
    device* dev;
    std::vector<std::vector<tensor*>> units;
    std::vector<const tensor*> ts;  // the file's tensors
    size_t bytes = 0;
  };
  std::vector<group> groups;  // [0] is the CPU
  groups.push_back({cpu::cpu_device(), {}, {}, 0});
  for (tensor* t : weights_) {
    device* d = dev_of[t];
    size_t gi = 0;
    while (gi < groups.size() && groups[gi].dev != d) ++gi;
    if (gi == groups.size()) groups.push_back({d, {}, {}, 0});
    group& g = groups[gi];
    g.ts.push_back(t);
    if (!combined.count(t)) {
      g.units.push_back({t});
      g.bytes += span(t) + (t->scales ? span(t->scales) : 0);
    } else if (plan_of.count(t)) {
      const fused_plan& f = plans[plan_of[t]];
      g.units.push_back(f.members);
      g.bytes += fused_bytes(f.members);
    }
  }
  size_t upload = 0, done = 0;
  for (size_t gi = 1; gi < groups.size(); ++gi) upload += groups[gi].bytes;
  const uint64_t half = uint64_t(hp_.n_layers);
  for (size_t gi = 1; gi < groups.size(); ++gi) {
    group& g = groups[gi];
    accel_ = g.dev;
    std::string err;
    std::unique_ptr<buffer> buf = g.dev->default_buffer_type()->alloc(g.bytes, &err);
    if (!buf) {
      *error = std::string("cannot place ") + std::to_string(g.bytes >> 20) + " MiB of weights on " + g.dev->name() +
               ": " + err + " (offload fewer layers: -ngl N, or keep experts on the CPU: --cpu-moe / --n-cpu-moe N)";
      return false;
    }
    size_t off = 0;
    auto move = [&](tensor* t) {
      const void* src = t->data;
      bind_tensor(t, buf.get(), off);
      buf->set(t, src, 0, t->nbytes());
      off += span(t);
      done += span(t);
    };
    // A new weight tensor [K, rows, E] of parts' type at off, holding the parts (lay_out).
    auto move_combined = [&](const std::vector<tensor*>& parts, const char* name) {
      int64_t rows = 0;
      for (const tensor* p : parts) rows += p->ne[1];
      const int64_t ne[3] = {parts[0]->ne[0], rows, parts[0]->ne[2]};
      tensor* c = ctx_.new_tensor(parts[0]->type, 3, ne);
      c->set_name("%s", name);
      c->flags |= kFlagWeight;
      bind_tensor(c, buf.get(), off);
      lay_out(c, parts);
      off += span(c);
      done += span(c);
      return c;
    };
    for (const std::vector<tensor*>& u : g.units) {
      if (u.size() == 1) {
        move(u[0]);
        if (u[0]->scales) move(u[0]->scales);
      } else {
        const fused_plan& f = plans[plan_of[u[0]]];
        // Named after its first member and how many follow (the whole list is in ->fused).
        const std::string name = std::string(u[0]->name) + "+" + std::to_string(u.size() - 1);
        fused_weight fw;
        fw.w = move_combined(u, name.c_str());
        if (u[0]->scales) {
          std::vector<tensor*> scales;
          for (tensor* t : u) scales.push_back(t->scales);
          fw.w->scales = move_combined(scales, (name + ".scales").c_str());
          fw.w->scale_block[0] = u[0]->scale_block[0];
          fw.w->scale_block[1] = u[0]->scale_block[1];
        }
        int64_t r0 = 0;
        for (const tensor* t : u) {
          fw.members.push_back(t);
          fw.row0.push_back(r0);
          r0 += t->ne[1];
        }
        layers[f.layer].fused.push_back(std::move(fw));
      }
      if (opt.progress && upload && !opt.progress(half + uint64_t(double(half) * double(done) / double(upload)), units)) {
        *error = "load cancelled";
        return false;
      }
    }
    device_bufs_.push_back(std::move(buf));
  }
  placed_.clear();
  weight_dev_.clear();
  fused_index_.clear();
  for (const group& g : groups) {
    placed_.push_back({g.dev, g.bytes, int(g.ts.size())});
    for (const tensor* t : g.ts) weight_dev_.emplace_back(t->name, g.dev);
  }
  std::sort(weight_dev_.begin(), weight_dev_.end());
  for (const layer_weights& L : layers)
    for (const fused_weight& f : L.fused)
      for (size_t i = 0; i < f.members.size(); ++i) fused_index_.push_back({f.members[i], {f.w, f.row0[i]}});
  std::sort(fused_index_.begin(), fused_index_.end(),
            [](const auto& a, const auto& b) { return std::less<const tensor*>()(a.first, b.first); });
  if (opt.progress && units > half && !opt.progress(units, units)) {
    *error = "load cancelled";
    return false;
  }
  return true;
}

model::fused_rows model::fused_of(const tensor* w) const {
  auto it = std::lower_bound(fused_index_.begin(), fused_index_.end(), w,
                             [](const std::pair<const tensor*, fused_rows>& e, const tensor* k) {
                               return std::less<const tensor*>()(e.first, k);
                             });
  return it != fused_index_.end() && it->first == w ? it->second : fused_rows{};
}

const device* model::weight_device(const std::string& name) const {
  auto it = std::lower_bound(weight_dev_.begin(), weight_dev_.end(), name,
                             [](const std::pair<std::string, const device*>& e, const std::string& n) { return e.first < n; });
  return it != weight_dev_.end() && it->first == name ? it->second : nullptr;
}

device* model::layer_device(int64_t il) const {
  const layer_weights& L = layers[size_t(il)];
  return L.wkv && L.wkv->buf ? L.wkv->buf->type()->dev() : cpu::cpu_device();
}

}  // namespace v4::model
