// Training progress on stderr: one status line per epoch redrawn in place on a terminal, or a plain
// log line every `log_every` steps (and at the epoch's end) when stderr is a file or a pipe.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace bitvit {

// "H:MM:SS" of a duration in seconds, rounded to the second.
std::string format_duration(double seconds);

class Progress {
  public:
    Progress(int64_t epoch, int64_t epochs, int64_t total_steps, int64_t log_every);
    // After step `done` of the epoch: the running mean loss and accuracy over `images` images.
    void update(int64_t done, double loss, double acc, int64_t images);

  private:
    int64_t epoch_, epochs_, total_, log_every_;
    bool tty_;
    std::chrono::steady_clock::time_point start_;
};

}  // namespace bitvit
