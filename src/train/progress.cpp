#include "progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace bitvit {

std::string format_duration(double seconds) {
    const auto s = static_cast<long long>(seconds + 0.5);
    char buf[32];
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
    return buf;
}

Progress::Progress(int64_t epoch, int64_t epochs, int64_t total_steps, int64_t log_every)
    : epoch_(epoch), epochs_(epochs), total_(total_steps), log_every_(log_every), tty_(::isatty(2) != 0),
      start_(std::chrono::steady_clock::now()) {}

void Progress::update(int64_t done, double loss, double acc, int64_t images) {
    const bool last = done == total_;
    if (!tty_ && !last && done % log_every_ != 0) return;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double rate = elapsed > 0 ? images / elapsed : 0.0;
    const double eta = done > 0 ? elapsed * (total_ - done) / done : 0.0;
    const auto e = static_cast<long long>(epoch_), es = static_cast<long long>(epochs_);
    const auto d = static_cast<long long>(done), t = static_cast<long long>(total_);
    if (tty_) {
        constexpr int kWidth = 24;
        const int filled = static_cast<int>(kWidth * done / std::max<int64_t>(total_, 1));
        std::fprintf(stderr, "\repoch %lld/%lld [%s%s] %lld/%lld loss %.4f acc %.2f%% %.0f img/s ETA %s   ", e, es,
                     std::string(filled, '#').c_str(), std::string(kWidth - filled, '.').c_str(), d, t, loss, 100 * acc,
                     rate, format_duration(eta).c_str());
        if (last) std::fprintf(stderr, "\n");
    } else {
        // The epoch's last line has no ETA: the epoch summary follows it.
        std::fprintf(stderr, "epoch %lld/%lld step %lld/%lld loss %.4f acc %.2f%% %.0f img/s%s%s\n", e, es, d, t, loss, 100 * acc, rate,
                     last ? "" : " ETA ", last ? "" : format_duration(eta).c_str());
    }
    std::fflush(stderr);
}

}  // namespace bitvit
