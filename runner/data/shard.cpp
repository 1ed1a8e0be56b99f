#include "runner/data/shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "runner/data/errors.h"
#include "runner/util/format.h"

namespace l3lab::data {

namespace {

using util::group_digits;

}  // namespace

std::shared_ptr<const ShardFile> ShardFile::open(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw DataError(path, errno == ENOENT ? "no such shard file" : "cannot open: " + std::string(std::strerror(errno)));
    struct stat st{};
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        throw DataError(path, "not a regular file");
    }
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    if (size < kShardHeaderBytes) {
        ::close(fd);
        throw DataError::at_offset(path, size, "truncated: the file has " + group_digits(size) +
                                                   " bytes, less than the 1,024-byte shard header");
    }
    void* map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    if (map == MAP_FAILED) throw DataError(path, "cannot map the file: " + std::string(std::strerror(errno)));
    std::shared_ptr<ShardFile> shard(new ShardFile());
    shard->path_ = path;
    shard->map_ = map;
    shard->map_bytes_ = size;
    std::array<int32_t, 3> header;  // little-endian on every machine we run on
    std::memcpy(header.data(), map, sizeof(header));
    if (header[0] != kShardMagic)
        throw DataError::at_offset(path, 0, "wrong magic " + std::to_string(header[0]) + ", expected " +
                                                std::to_string(kShardMagic) + ": not an llm.c token shard");
    if (header[1] != 1 && header[1] != 2)
        throw DataError::at_offset(path, 4, "unknown shard version " + std::to_string(header[1]) +
                                                " (1 = uint16 tokens, 2 = uint32 tokens)");
    if (header[2] < 0) throw DataError::at_offset(path, 8, "negative token count " + std::to_string(header[2]));
    shard->version_ = header[1];
    shard->num_tokens_ = static_cast<uint64_t>(header[2]);
    shard->tokens_ = static_cast<const unsigned char*>(map) + kShardHeaderBytes;
    const uint64_t expected = shard->file_bytes();
    if (size < expected) {
        const uint64_t whole = (size - kShardHeaderBytes) / shard_token_size(shard->version_);
        throw DataError::at_offset(path, size, "truncated: the header promises " + group_digits(shard->num_tokens_) +
                                                   " tokens (" + group_digits(expected) + " bytes) but the file ends after " +
                                                   group_digits(whole) + " tokens");
    }
    if (size > expected)
        throw DataError::at_offset(path, expected, group_digits(size - expected) + " bytes after the " +
                                                       group_digits(shard->num_tokens_) + " tokens the header promises");
    madvise(map, size, MADV_SEQUENTIAL);
    return shard;
}

ShardFile::~ShardFile() {
    if (map_) munmap(map_, map_bytes_);
}

void ShardFile::copy(uint64_t begin, uint64_t n, int64_t* out) const {
    if (version_ == 1) {
        const uint16_t* p = u16() + begin;
        for (uint64_t i = 0; i < n; ++i) out[i] = p[i];
    } else {
        const uint32_t* p = u32() + begin;
        for (uint64_t i = 0; i < n; ++i) out[i] = p[i];
    }
}

ShardWriter::ShardWriter(std::string path, int version) : path_(std::move(path)), version_(version) {
    f_ = std::fopen(path_.c_str(), "wb");
    if (!f_) throw DataError(path_, "cannot create: " + std::string(std::strerror(errno)));
    std::array<int32_t, kShardHeaderInts> header{};
    write(header.data(), sizeof(header));
}

ShardWriter::~ShardWriter() {
    if (f_) {
        std::fclose(f_);
        std::remove(path_.c_str());
    }
}

void ShardWriter::write(const void* data, size_t bytes) {
    if (bytes && std::fwrite(data, 1, bytes, f_) != bytes)
        throw DataError(path_, "write failed: " + std::string(std::strerror(errno)));
}

void ShardWriter::append(std::span<const int32_t> tokens) {
    if (num_tokens_ + tokens.size() > static_cast<uint64_t>(kMaxShardTokens))
        throw DataError(path_, "a shard holds at most " + group_digits(kMaxShardTokens) + " tokens");
    const uint32_t max_id = version_ == 1 ? 0xFFFF : 0x7FFFFFFF;
    for (int32_t t : tokens)
        if (t < 0 || static_cast<uint32_t>(t) > max_id)
            throw DataError(path_, "token id " + std::to_string(t) + " does not fit a version " + std::to_string(version_) + " shard");
    if (version_ == 1) {
        std::vector<uint16_t> narrow(tokens.begin(), tokens.end());
        write(narrow.data(), narrow.size() * 2);
    } else {
        std::vector<uint32_t> wide(tokens.begin(), tokens.end());
        write(wide.data(), wide.size() * 4);
    }
    num_tokens_ += tokens.size();
}

void ShardWriter::close() {
    if (!f_) return;
    std::array<int32_t, kShardHeaderInts> header{};
    header[0] = kShardMagic;
    header[1] = version_;
    header[2] = static_cast<int32_t>(num_tokens_);
    if (std::fseek(f_, 0, SEEK_SET) != 0) throw DataError(path_, "seek failed");
    write(header.data(), sizeof(header));
    bool ok = std::fflush(f_) == 0 && fsync(fileno(f_)) == 0;
    ok = (std::fclose(f_) == 0) && ok;
    f_ = nullptr;
    if (!ok) {
        std::remove(path_.c_str());
        throw DataError(path_, "write failed: " + std::string(std::strerror(errno)));
    }
}

}  // namespace l3lab::data
