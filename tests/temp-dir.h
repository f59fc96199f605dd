// A fresh directory under the system's temporary directory for one test, removed with everything in
// it when the test ends. Unique per process and per instance, so tests may run in parallel.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>

namespace bitvit::test_util {

class TempDir {
  public:
    TempDir()
        : path_(std::filesystem::temp_directory_path() /
                ("bitvit-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++))) {
        std::filesystem::create_directories(path_);
    }
    ~TempDir() { std::filesystem::remove_all(path_); }
    TempDir(const TempDir &) = delete;
    TempDir & operator=(const TempDir &) = delete;

    // The path of `name` inside the directory (the directory itself for "").
    std::string str(const std::string & name = "") const { return (path_ / name).string(); }
    std::string file(const std::string & name) const { return str(name); }

  private:
    std::filesystem::path path_;
    static inline int counter_ = 0;
};

}  // namespace bitvit::test_util
