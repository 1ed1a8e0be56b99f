// SHA-256 (FIPS 180-4), for the checksums in manifest.json and the tokenizer hash that ties shards to
// the tokenizer that made them.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace l3lab::data {

class Sha256 {
public:
    Sha256();
    void update(const void* data, size_t size);
    void update(std::string_view s) { update(s.data(), s.size()); }
    // Lowercase hex of the digest. Finishes the hash: call once.
    std::string hex_digest();

private:
    void compress(const uint8_t* block);
    std::array<uint32_t, 8> state_;
    std::array<uint8_t, 64> block_{};
    size_t block_used_ = 0;
    uint64_t total_bytes_ = 0;
};

std::string sha256_hex(std::string_view bytes);
// Throws DataError when the file cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace l3lab::data
