// v4 inspect FILE [--verify] [--json]: metadata, tensors and totals of a v4 model file.
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <unistd.h>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "model/v4file.h"
#include "tools/commands.h"

namespace v4::cli {

namespace {

using json = nlohmann::ordered_json;  // keeps the file's metadata order
using model::meta_type;
using model::meta_value;

constexpr size_t kShortString = 80;

std::string printable(std::string_view s, size_t max) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < max; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '\n') out += "\\n";
    else if (c < 32 || c == 127) out += '?';
    else out += char(c);
  }
  if (s.size() > max) out += "... (" + std::to_string(s.size()) + " bytes)";
  return out;
}

template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// One scalar element of type t at p, as JSON.
json scalar_json(meta_type t, const uint8_t* p) {
  switch (t) {
    case meta_type::u8: return p[0];
    case meta_type::i32: return load<int32_t>(p);
    case meta_type::u32: return load<uint32_t>(p);
    case meta_type::i64: return load<int64_t>(p);
    case meta_type::u64: return load<uint64_t>(p);
    case meta_type::f32: return load<float>(p);
    case meta_type::f64: return load<double>(p);
    case meta_type::boolean: return p[0] != 0;
    default: return nullptr;
  }
}

size_t elem_size(meta_type t) {
  switch (t) {
    case meta_type::u8: case meta_type::boolean: return 1;
    case meta_type::i32: case meta_type::u32: case meta_type::f32: return 4;
    default: return 8;
  }
}

// The value as JSON; `abbreviate` shortens long strings, blobs and arrays (text output).
json value_json(const meta_value& v, bool abbreviate) {
  const std::string_view bytes(reinterpret_cast<const char*>(v.bytes), size_t(v.size));
  switch (v.type) {
    case meta_type::string:
      if (!abbreviate) return std::string(bytes);  // invalid UTF-8 is replaced when dumped
      return printable(bytes, kShortString);
    case meta_type::blob:
      return "<blob " + std::to_string(v.size) + " bytes" +
             (abbreviate ? ": " + printable(bytes, 48) : std::string()) + ">";
    case meta_type::array: {
      json a = json::array();
      const uint64_t shown = abbreviate ? std::min<uint64_t>(v.count, 8) : v.count;
      if (v.elem_type == meta_type::string) {
        uint64_t p = 0;
        for (uint64_t i = 0; i < shown; ++i) {
          const uint64_t n = load<uint64_t>(v.bytes + p);
          const std::string_view s(reinterpret_cast<const char*>(v.bytes + p + 8), size_t(n));
          a.push_back(abbreviate ? printable(s, 32) : std::string(s));
          p += 8 + n;
        }
      } else {
        for (uint64_t i = 0; i < shown; ++i) a.push_back(scalar_json(v.elem_type, v.bytes + i * elem_size(v.elem_type)));
      }
      if (shown < v.count) a.push_back("... " + std::to_string(v.count) + " elements");
      return a;
    }
    default:
      if (v.type >= meta_type::u8 && v.type <= meta_type::boolean) return scalar_json(v.type, v.bytes);
      return "<unknown type " + std::to_string(uint32_t(v.type)) + ", " + std::to_string(v.size) + " bytes>";
  }
}

std::string shape_str(const model::tensor_desc& d) {
  std::string s = "[";
  for (int i = 0; i < d.n_dims; ++i) s += (i ? ", " : "") + std::to_string(d.ne[i]);
  return s + "]";
}

// The number after "layers." in a tensor name, or -1.
int layer_of(const std::string& name) {
  const size_t p = name.find("layers.");
  if (p == std::string::npos || (p > 0 && name[p - 1] != '.')) return -1;
  size_t i = p + 7;
  int n = 0, digits = 0;
  while (i < name.size() && name[i] >= '0' && name[i] <= '9' && digits < 9) n = n * 10 + (name[i++] - '0'), ++digits;
  return digits ? n : -1;
}

std::string human(uint64_t b) {
  char buf[32];
  if (b >= (uint64_t(1) << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", b / 1073741824.0);
  else if (b >= (uint64_t(1) << 20)) std::snprintf(buf, sizeof buf, "%.2f MiB", b / 1048576.0);
  else if (b >= 1024) std::snprintf(buf, sizeof buf, "%.2f KiB", b / 1024.0);
  else std::snprintf(buf, sizeof buf, "%" PRIu64 " B", b);
  return buf;
}

struct totals {
  uint64_t count = 0, bytes = 0, elements = 0;
};

int run(const std::string& path, bool verify, bool as_json) {
  std::string err;
  std::unique_ptr<model::model_file> f = model::model_file::open(path, &err);
  if (!f) {
    std::fprintf(stderr, "v4 inspect: %s\n", err.c_str());
    return 1;
  }
  std::map<std::string, totals> per_type;
  std::map<int, totals> per_layer;
  totals all;
  for (const model::tensor_entry& t : f->tensors()) {
    const uint64_t n = uint64_t(t.d.ne[0]) * t.d.ne[1] * t.d.ne[2] * t.d.ne[3];
    for (totals* x : {&per_type[type_name(t.d.type)], &per_layer[layer_of(t.d.name)], &all}) {
      ++x->count;
      x->bytes += t.size;
      x->elements += n;
    }
  }

  json out;
  if (as_json) {
    out["file"] = path;
    out["version"] = f->version();
    out["alignment"] = f->alignment();
    out["file_size"] = f->file_size();
    json meta = json::object();
    for (const auto& [k, v] : f->metadata())
      meta[k] = {{"type", model::meta_type_name(v.type)}, {"value", value_json(v, false)}};
    out["metadata"] = meta;
    json ts = json::array();
    for (const model::tensor_entry& t : f->tensors()) {
      json j = {{"name", t.d.name}, {"type", type_name(t.d.type)},
                          {"shape", std::vector<int64_t>(t.d.ne, t.d.ne + t.d.n_dims)},
                          {"offset", t.offset}, {"bytes", t.size}};
      char h[17];
      std::snprintf(h, sizeof h, "%016" PRIx64, t.xxh3);
      j["xxh3"] = h;
      if (t.scales) j["scales"] = {{"tensor", t.d.scales}, {"block", {t.d.scale_block[0], t.d.scale_block[1]}}};
      ts.push_back(j);
    }
    out["tensors"] = ts;
    for (const auto& [k, v] : per_type)
      out["totals"]["per_type"][k] = {{"tensors", v.count}, {"elements", v.elements}, {"bytes", v.bytes}};
    for (const auto& [k, v] : per_layer)
      out["totals"]["per_layer"][k < 0 ? std::string("none") : std::to_string(k)] = {
          {"tensors", v.count}, {"elements", v.elements}, {"bytes", v.bytes}};
    out["totals"]["all"] = {{"tensors", all.count}, {"elements", all.elements}, {"bytes", all.bytes}};
  } else {
    std::printf("%s: v4 model file version %u, %s, tensor alignment %u\n", path.c_str(), f->version(),
                human(f->file_size()).c_str(), f->alignment());
    std::printf("\nmetadata (%zu keys)\n", f->metadata().size());
    for (const auto& [k, v] : f->metadata()) {
      const json j = value_json(v, true);
      std::printf("  %-40s %-7s %s\n", printable(k, 64).c_str(), model::meta_type_name(v.type),
                  j.is_string() ? j.get<std::string>().c_str() : j.dump().c_str());
    }
    std::printf("\ntensors (%zu)\n", f->tensors().size());
    for (const model::tensor_entry& t : f->tensors()) {
      std::printf("  %-48s %-9s %-28s %12" PRIu64 " B", printable(t.d.name, 64).c_str(), type_name(t.d.type),
                  shape_str(t.d).c_str(), t.size);
      if (t.scales) std::printf("  scales %s {%d, %d}", t.d.scales.c_str(), t.d.scale_block[0], t.d.scale_block[1]);
      std::printf("\n");
    }
    std::printf("\nper type\n");
    for (const auto& [k, v] : per_type)
      std::printf("  %-10s %8" PRIu64 " tensors %16" PRIu64 " elements %12s\n", k.c_str(), v.count, v.elements,
                  human(v.bytes).c_str());
    std::printf("\nper layer\n");
    for (const auto& [k, v] : per_layer)
      std::printf("  %-10s %8" PRIu64 " tensors %16" PRIu64 " elements %12s\n",
                  k < 0 ? "(none)" : std::to_string(k).c_str(), v.count, v.elements, human(v.bytes).c_str());
    std::printf("\ntotal      %8" PRIu64 " tensors %16" PRIu64 " elements %12s\n", all.count, all.elements,
                human(all.bytes).c_str());
  }

  int rc = 0;
  if (verify) {
    model::verify_stats st;
    const bool tty = isatty(fileno(stderr));
    const bool ok = f->verify(&err, &st, [&](uint64_t done, uint64_t total) {
      if (tty) std::fprintf(stderr, "\rverifying: %s of %s", human(done).c_str(), human(total).c_str());
    });
    if (tty) std::fprintf(stderr, "\n");
    const double gbs = st.bytes_per_second() / 1e9;
    if (as_json) {
      out["verify"] = {{"ok", ok}, {"bytes", st.bytes}, {"seconds", st.seconds}, {"gb_per_s", gbs}};
      if (!ok) out["verify"]["error"] = err;
    } else if (ok) {
      std::printf("\nverify: all %zu checksums match (%s in %.3f s, %.2f GB/s)\n", f->tensors().size(),
                  human(st.bytes).c_str(), st.seconds, gbs);
    }
    if (!ok) {
      std::fprintf(stderr, "v4 inspect: %s: %s\n", path.c_str(), err.c_str());
      rc = 1;
    }
  }
  if (as_json) std::printf("%s\n", out.dump(2, ' ', false, json::error_handler_t::replace).c_str());
  return rc;
}

}  // namespace

static void add_inspect(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("inspect", "Print a model file's metadata, tensors and totals");
  auto path = std::make_shared<std::string>();
  auto verify = std::make_shared<bool>(false);
  auto as_json = std::make_shared<bool>(false);
  cmd->add_option("file", *path, "v4 model file")->required();
  cmd->add_flag("--verify", *verify, "Recompute every tensor checksum (xxh3) and report GB/s");
  cmd->add_flag("--json", *as_json, "Print one JSON object");
  cmd->callback([=] {
    const int rc = run(*path, *verify, *as_json);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

V4_COMMAND(add_inspect, 11);

}  // namespace v4::cli
