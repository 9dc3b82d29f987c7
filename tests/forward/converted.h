// The test checkpoints of tests/data/forward/<name>, converted once per test binary run into a
// temporary .v4 file (shared by the files of tests/forward). "" and a test failure on error.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <map>
#include <string>

#include "model/convert.h"

namespace v4::model {

inline std::string converted(const std::string& name) {
  static std::map<std::string, std::string> done;
  auto it = done.find(name);
  if (it != done.end()) return it->second;
  const std::string out = testing::TempDir() + "v4_forward_" + name + "_" + std::to_string(getpid()) + ".v4";
  convert_options opt;
  opt.force = true;
  convert_stats st;
  std::string err;
  if (!convert_checkpoint(std::string(V4_TEST_DATA_DIR "/forward/") + name, out, opt, &st, &err)) {
    ADD_FAILURE() << "convert " << name << ": " << err;
    return "";
  }
  done[name] = out;
  return out;
}

}  // namespace v4::model
