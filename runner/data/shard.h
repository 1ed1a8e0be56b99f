// llm.c-compatible token shards (PRODUCT.md §4): a header of 256 little-endian int32 - [0] magic
// 20240520, [1] version (1 = uint16 tokens, 2 = uint32 tokens), [2] number of tokens - then the tokens.
// llm.c's and modded-nanogpt's .bin files are version 1 shards and are read as they are.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <string>

namespace l3lab::data {

inline constexpr int32_t kShardMagic = 20240520;
inline constexpr size_t kShardHeaderInts = 256;
inline constexpr size_t kShardHeaderBytes = kShardHeaderInts * sizeof(int32_t);
// The largest token count the int32 header can hold.
inline constexpr int64_t kMaxShardTokens = INT32_MAX;

// uint16 tokens when every id fits, else uint32.
inline int shard_version_for_vocab(int64_t vocab_size) { return vocab_size <= 65536 ? 1 : 2; }
inline size_t shard_token_size(int version) { return version == 1 ? 2 : 4; }

// A read-only memory map of one shard whose header has been checked against the file's size.
class ShardFile {
public:
    // Throws DataError (file and byte offset) for a missing or unreadable file, a file shorter than the
    // header, a wrong magic or version, or a size that disagrees with the header's token count.
    static std::shared_ptr<const ShardFile> open(const std::string& path);
    ~ShardFile();
    ShardFile(const ShardFile&) = delete;
    ShardFile& operator=(const ShardFile&) = delete;

    const std::string& path() const { return path_; }
    int version() const { return version_; }
    uint64_t num_tokens() const { return num_tokens_; }
    uint64_t file_bytes() const { return kShardHeaderBytes + num_tokens_ * shard_token_size(version_); }
    // Byte offset of token i in the file (for error messages).
    uint64_t offset_of(uint64_t i) const { return kShardHeaderBytes + i * shard_token_size(version_); }

    uint32_t token(uint64_t i) const { return version_ == 1 ? u16()[i] : u32()[i]; }
    const uint16_t* u16() const { return reinterpret_cast<const uint16_t*>(tokens_); }
    const uint32_t* u32() const { return reinterpret_cast<const uint32_t*>(tokens_); }
    // Tokens [begin, begin + n) widened to int64.
    void copy(uint64_t begin, uint64_t n, int64_t* out) const;

private:
    ShardFile() = default;
    std::string path_;
    int version_ = 1;
    uint64_t num_tokens_ = 0;
    void* map_ = nullptr;
    size_t map_bytes_ = 0;
    const unsigned char* tokens_ = nullptr;
};

// Writes one shard: a placeholder header, the tokens, then the real header. close() flushes and
// fsyncs; a writer destroyed without close() removes its file.
class ShardWriter {
public:
    ShardWriter(std::string path, int version);
    ~ShardWriter();
    ShardWriter(const ShardWriter&) = delete;
    ShardWriter& operator=(const ShardWriter&) = delete;

    void append(std::span<const int32_t> tokens);
    uint64_t num_tokens() const { return num_tokens_; }
    void close();

private:
    void write(const void* data, size_t bytes);
    std::string path_;
    int version_;
    std::FILE* f_ = nullptr;
    uint64_t num_tokens_ = 0;
};

}  // namespace l3lab::data
