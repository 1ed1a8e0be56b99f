// SHA-256 (OpenSSL libcrypto), for the checksums in manifest.json and the tokenizer hash that ties shards to
// the tokenizer that made them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX, kept out of this header

namespace l3lab::data {

// Incremental SHA-256 through OpenSSL's libcrypto (EVP interface).
class Sha256 {
public:
    Sha256();
    ~Sha256();
    Sha256(const Sha256&) = delete;
    Sha256& operator=(const Sha256&) = delete;
    void update(const void* data, size_t size);
    void update(std::string_view s) { update(s.data(), s.size()); }
    // Lowercase hex of the digest. Finishes the hash: call once.
    std::string hex_digest();

private:
    ::evp_md_ctx_st* ctx_;
};

std::string sha256_hex(std::string_view bytes);
// Throws DataError when the file cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace l3lab::data
