// A model file whose config values are wrong (zero, negative, huge, inconsistent with the
// tensors) must fail to load with a message, never crash or allocate absurdly; one that loads
// must evaluate without crashing. Every deepseek_v4.* integer key x several bad values.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <unistd.h>

#include "model/convert.h"
#include "model/model.h"
#include "model/session.h"
#include "model/v4file.h"
#include "forward/converted.h"

namespace v4::model {
namespace {

std::string tiny() {
  static std::string path;
  if (!path.empty()) return path;
  path = temp_model_path("v4_robust_tiny");
  convert_options opt;
  opt.force = true;
  convert_stats st;
  std::string err;
  EXPECT_TRUE(convert_checkpoint(V4_TEST_DATA_DIR "/forward/tiny", path, opt, &st, &err)) << err;
  return path;
}

// Copies src to dst with metadata key `key` (an i64) replaced by value.
bool rewrite(const model_file& src, const std::string& dst, const std::string& key, int64_t value) {
  file_writer w;
  if (!w.open(dst)) return false;
  for (const auto& [k, v] : src.metadata()) {
    if (k == key) {
      w.set_i64(k, value);
      continue;
    }
    w.set_raw(k, uint32_t(v.type), v.type == meta_type::array ? v.bytes - 12 : v.bytes,
              v.type == meta_type::array ? v.size + 12 : v.size);
  }
  for (const tensor_entry& t : src.tensors())
    if (!w.add_tensor(t.d, t.data)) return false;
  return w.finish();
}

TEST(LoadRobust, BadConfigValuesFailCleanly) {
  std::string err;
  auto src = model_file::open(tiny(), &err);
  ASSERT_TRUE(src) << err;
  const std::string dst = temp_model_path("v4_robust_mut");
  int loaded = 0, refused = 0;
  for (const auto& [k, v] : src->metadata()) {
    if (k.rfind("deepseek_v4.", 0) != 0 || v.type != meta_type::i64) continue;
    for (int64_t value : {int64_t(0), int64_t(-1), int64_t(3), int64_t(1) << 40}) {
      ASSERT_TRUE(rewrite(*src, dst, k, value)) << k;
      auto m = model::load(dst, {}, &err);
      if (!m) {
        ++refused;
        EXPECT_FALSE(err.empty()) << k << " = " << value;
        continue;
      }
      ++loaded;  // a value the model can run with (e.g. a different bos id): it must run
      session_options so;
      so.n_ctx = 16;
      auto s = session::create(*m, so, &err);
      if (!s) continue;
      const int32_t ids[] = {1, 2, 3};
      std::vector<float> logits;
      s->eval(ids, 3, false, &logits, &err);
    }
  }
  std::printf("mutated config values: %d refused with a message, %d loaded and ran\n", refused, loaded);
  EXPECT_GT(refused, 40);
  std::remove(dst.c_str());
}

}  // namespace
}  // namespace v4::model
