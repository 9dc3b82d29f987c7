// Backend interface helpers: tensor binding, host memory buffers, the device registry, the
// default copy.
#include "tensor/backend.h"

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

namespace v4 {

memory_buffer::~memory_buffer() {
  if (owned_) std::free(p_);
}
void memory_buffer::set(tensor* t, const void* src, size_t off, size_t n) {
  std::memcpy(static_cast<char*>(t->data) + off, src, n);
}
void memory_buffer::get(const tensor* t, void* dst, size_t off, size_t n) {
  std::memcpy(dst, static_cast<const char*>(t->data) + off, n);
}
void memory_buffer::clear(uint8_t v) { std::memset(p_, v, n_); }

void bind_tensor(tensor* t, buffer* b, size_t offset) {
  t->buf = b;
  t->data = static_cast<char*>(b->base()) + offset;
}

namespace {
std::mutex g_mu;
std::vector<device*>& registry() {
  static std::vector<device*> r;
  return r;
}
}  // namespace

std::vector<device*> devices() {
  std::lock_guard<std::mutex> lock(g_mu);
  return registry();
}

void register_device(device* d) {
  std::lock_guard<std::mutex> lock(g_mu);
  for (device* x : registry())
    if (x == d) return;
  registry().push_back(d);
}

void unregister_device(device* d) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto& r = registry();
  for (size_t i = 0; i < r.size(); ++i)
    if (r[i] == d) {
      r.erase(r.begin() + long(i));
      return;
    }
}

device* find_device(const std::string& name) {
  std::lock_guard<std::mutex> lock(g_mu);
  for (device* d : registry())
    if (name == d->name()) return d;
  return nullptr;
}

// Generic copy through host memory: fine for host<->host and as the fallback of devices that
// have no direct path. Devices override it with their own DMA paths.
bool stream::copy(const tensor* src, tensor* dst, std::string* error) {
  if (!src->is_contiguous() || !dst->is_contiguous() || src->type != dst->type || !src->same_shape(*dst)) {
    *error = "copy: tensors must be contiguous with equal type and shape";
    return false;
  }
  if (!src->buf || !dst->buf) {
    *error = "copy: both tensors need memory";
    return false;
  }
  const size_t n = src->nbytes();
  if (src->buf->is_host() && dst->buf->is_host()) {
    std::memcpy(dst->data, src->data, n);
  } else if (src->buf->is_host()) {
    dst->buf->set(dst, src->data, 0, n);
  } else if (dst->buf->is_host()) {
    src->buf->get(src, dst->data, 0, n);
  } else {
    std::vector<uint8_t> staging(n);
    src->buf->get(src, staging.data(), 0, n);
    dst->buf->set(dst, staging.data(), 0, n);
  }
  return true;
}

}  // namespace v4
