// Weight placement rules (placement.h).
#include "model/placement.h"

#include <cstdlib>
#include <regex>

namespace v4::model {

struct placement::rule {
  std::string text;
  std::regex re;
  device* dev;
};

placement::placement() = default;
placement::~placement() = default;
placement::placement(placement&&) noexcept = default;
placement& placement::operator=(placement&&) noexcept = default;

namespace {

// "layers.N." -> N, else -1.
int64_t layer_of(const std::string& name) {
  static const std::string prefix = "layers.";
  if (name.compare(0, prefix.size(), prefix) != 0) return -1;
  const char* p = name.c_str() + prefix.size();
  char* end = nullptr;
  const long long n = std::strtoll(p, &end, 10);
  return end != p && *end == '.' ? n : -1;
}

bool host_read(const std::string& name) {  // scalars the graph builder reads on the host
  return name.find("hc_") != std::string::npos && name.size() >= 6 && name.compare(name.size() - 6, 6, "_scale") == 0;
}

std::string device_list() {
  std::string s;
  for (device* d : devices()) s += (s.empty() ? "" : ", ") + std::string(d->name());
  return s;
}

}  // namespace

std::vector<std::string> split_overrides(const std::string& list) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {
    const size_t comma = list.find(',', start);
    const std::string item = list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!item.empty()) out.push_back(item);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

bool placement::init(const placement_options& opt, int64_t n_layers, std::string* error) {
  opt_ = opt;
  n_layers_ = n_layers;
  rules_.clear();
  cpu_ = nullptr;
  accel_ = nullptr;
  for (device* d : devices()) {
    if (d->kind() == device_kind::cpu) {
      if (!cpu_) cpu_ = d;
    } else if (!accel_ && opt.accelerator.empty()) {
      accel_ = d;
    }
  }
  if (!cpu_) {
    *error = "placement: no CPU device is registered";
    return false;
  }
  if (!opt.accelerator.empty()) {
    accel_ = find_device(opt.accelerator);
    if (!accel_) {
      *error = "device '" + opt.accelerator + "' is not available (devices here: " + device_list() + ")";
      return false;
    }
    if (accel_ == cpu_) accel_ = nullptr;
  }
  for (const std::string& o : opt.overrides) {
    const size_t eq = o.rfind('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == o.size()) {
      *error = "tensor override '" + o + "' is not REGEX=DEVICE (e.g. 'ffn\\.experts=CPU')";
      return false;
    }
    const std::string dev_name = o.substr(eq + 1);
    device* d = find_device(dev_name);
    if (!d) {
      *error = "tensor override '" + o + "': device '" + dev_name + "' is not available (devices here: " +
               device_list() + ")";
      return false;
    }
    try {
      rules_.push_back({o, std::regex(o.substr(0, eq), std::regex::ECMAScript), d});
    } catch (const std::regex_error& e) {
      *error = "tensor override '" + o + "': bad regular expression: " + e.what();
      return false;
    }
  }
  return true;
}

device* placement::device_for(const std::string& name) const {
  if (host_read(name)) return cpu_;
  for (const rule& r : rules_)
    if (std::regex_search(name, r.re)) return r.dev;
  if (!accel_) return cpu_;
  const int64_t il = layer_of(name);
  const bool all = opt_.n_gpu_layers < 0;
  if (il >= 0) {
    const bool cpu_moe = opt_.n_cpu_moe < 0 || il < opt_.n_cpu_moe;
    if (cpu_moe && name.find(".ffn.experts.") != std::string::npos) return cpu_;
    return all || il >= n_layers_ - opt_.n_gpu_layers ? accel_ : cpu_;
  }
  if (name.compare(0, 6, "embed.") == 0) return cpu_;
  return all || opt_.n_gpu_layers > n_layers_ ? accel_ : cpu_;
}

}  // namespace v4::model
