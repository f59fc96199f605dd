// SHA-256 (FIPS 180-4), for the packed format's content checksum (docs/format.md) and for
// identifying shipped files. Incremental: update() any number of times, then hex().
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace bitvit::format {

class Sha256 {
  public:
    Sha256();
    void update(const void * data, size_t size);
    void update(std::string_view text) { update(text.data(), text.size()); }
    // The digest as 64 lowercase hex digits; the object must not be updated afterwards.
    std::string hex();

  private:
    void block(const uint8_t * p);
    uint32_t h_[8];
    uint8_t buffer_[64];
    size_t buffered_ = 0;
    uint64_t length_ = 0;
};

}  // namespace bitvit::format
