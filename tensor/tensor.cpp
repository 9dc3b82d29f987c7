// tensor methods and the context (tensor arena + first error).
#include "tensor/tensor.h"

#include <cstdarg>
#include <cstdio>
#include <cstring>

namespace v4 {

int tensor::n_dims() const {
  for (int i = kMaxDims - 1; i > 0; --i)
    if (ne[i] > 1) return i + 1;
  return 1;
}

size_t tensor::nbytes() const {
  if (nelements() == 0) return 0;
  const type_traits& tr = traits(type);
  // bytes from the first element to one past the last, following the strides
  size_t bytes = size_t(ne[0] / tr.block_size) * tr.block_bytes;
  for (int i = 1; i < kMaxDims; ++i) bytes += size_t(ne[i] - 1) * nb[i];
  return bytes;
}

bool tensor::rows_contiguous() const {
  return nb[0] == traits(type).block_bytes;
}

bool tensor::is_contiguous() const {
  const type_traits& tr = traits(type);
  if (nb[0] != tr.block_bytes) return false;
  size_t expect = size_t(ne[0] / tr.block_size) * tr.block_bytes;
  for (int i = 1; i < kMaxDims; ++i) {
    if (ne[i] != 1 && nb[i] != expect) return false;
    expect *= size_t(ne[i]);
  }
  return true;
}

bool tensor::same_shape(const tensor& o) const {
  for (int i = 0; i < kMaxDims; ++i)
    if (ne[i] != o.ne[i]) return false;
  return true;
}

void tensor::set_name(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(name, sizeof(name), fmt, ap);
  va_end(ap);
}

float tensor::param_f(int i) const {
  float f;
  std::memcpy(&f, &op_params[i], 4);
  return f;
}

void tensor::set_param_f(int i, float v) { std::memcpy(&op_params[i], &v, 4); }

void set_contiguous_strides(tensor* t) {
  const type_traits& tr = traits(t->type);
  t->nb[0] = tr.block_bytes;
  t->nb[1] = size_t(t->ne[0] / tr.block_size) * tr.block_bytes;
  for (int i = 2; i < kMaxDims; ++i) t->nb[i] = t->nb[i - 1] * size_t(t->ne[i - 1]);
}

tensor* context::new_tensor(dtype t, std::initializer_list<int64_t> ne) {
  return new_tensor(t, int(ne.size()), ne.begin());
}

tensor* context::new_tensor(dtype t, int n_dims, const int64_t* ne) {
  if (!type_registered(t)) {
    fail("new_tensor: type id %d is not registered (block types come from quant::register_types)", int(t));
    return nullptr;
  }
  if (n_dims < 1 || n_dims > kMaxDims) {
    fail("new_tensor: %d dims (1 to %d allowed)", n_dims, kMaxDims);
    return nullptr;
  }
  tensor& x = tensors_.emplace_back();
  x.type = t;
  for (int i = 0; i < n_dims; ++i) {
    if (ne[i] < 0) {
      tensors_.pop_back();
      fail("new_tensor: negative size %lld in dim %d", (long long)ne[i], i);
      return nullptr;
    }
    x.ne[i] = ne[i];
  }
  if (x.ne[0] % traits(t).block_size != 0) {
    const long long n0 = x.ne[0];
    tensors_.pop_back();
    fail("new_tensor: dim 0 (%lld) is not a multiple of %s's block size %lld", n0, type_name(t),
         (long long)traits(t).block_size);
    return nullptr;
  }
  set_contiguous_strides(&x);
  return &x;
}

void context::fail(const char* fmt, ...) {
  if (!error_.empty()) return;
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  error_ = msg;
}

tensor* context::find(const char* name) {
  for (tensor& t : tensors_)
    if (std::strcmp(t.name, name) == 0) return &t;
  return nullptr;
}

}  // namespace v4
