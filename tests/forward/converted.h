// The test checkpoints of tests/data/forward/<name>, converted once per test binary run into a
// temporary .v4 file (shared by the files of tests/forward). "" and a test failure on error.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "model/convert.h"

namespace v4::model {

// testing::TempDir()/<stem>_<pid>.v4, removed when the test binary exits (ctest runs every test in
// a process of its own: without this each run left one converted model per process in /tmp).
inline std::string temp_model_path(const std::string& stem) {
  static struct files {
    std::vector<std::string> paths;
    ~files() {
      for (const std::string& p : paths) std::remove(p.c_str());
    }
  } made;
  made.paths.push_back(testing::TempDir() + stem + "_" + std::to_string(getpid()) + ".v4");
  return made.paths.back();
}

inline std::string converted(const std::string& name) {
  static std::map<std::string, std::string> done;
  auto it = done.find(name);
  if (it != done.end()) return it->second;
  const std::string out = temp_model_path("v4_forward_" + name);
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
