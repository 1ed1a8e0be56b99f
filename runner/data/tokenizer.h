// The tokenizer behind a small interface: encode, decode, vocabulary size, BOS id, special tokens and
// the byte length of every token (for bits per byte). The implementation is SentencePiece BPE with byte
// fallback, trained by `l3lab data train-tokenizer` so that it is lossless on any valid UTF-8:
// identity normalisation, no dummy prefix, whitespace kept as it is (docs/data.md).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace l3lab::data {

// The reference's special tokens (nanochat/tokenizer.py SPECIAL_TOKENS), BOS first.
inline constexpr const char* kBosToken = "<|bos|>";
const std::vector<std::string>& reference_special_tokens();

// Thrown by encode() for text that is not valid UTF-8; `offset` is the first bad byte.
struct InvalidUtf8 : std::invalid_argument {
    explicit InvalidUtf8(size_t offset);
    size_t offset;
};

class Tokenizer {
public:
    virtual ~Tokenizer() = default;

    // Token ids of `text`, no BOS added. Throws InvalidUtf8. Thread-safe.
    virtual std::vector<int32_t> encode(std::string_view text) const = 0;
    // The bytes the ids stand for; special tokens render as their names ("<|bos|>"). A slice that cuts a
    // multi-byte character gives those raw bytes. Throws std::out_of_range for an id >= vocab_size().
    virtual std::string decode(std::span<const int32_t> ids) const = 0;

    virtual int vocab_size() const = 0;
    virtual int bos_id() const = 0;
    // Special tokens by id order (BOS and the chat markers); none of them is ever produced by encode().
    virtual std::vector<std::string> special_tokens() const = 0;
    virtual std::optional<int> special_id(std::string_view name) const = 0;
    // Bytes each token contributes to decoded text; 0 for special tokens (the reference's token_bytes,
    // which bits per byte uses to mask them).
    virtual const std::vector<int32_t>& token_bytes() const = 0;
    // The token as the model file spells it (for inspection).
    virtual std::string piece(int id) const = 0;
    // sha256 of the tokenizer file's bytes: manifest.json records it to tie shards to their tokenizer.
    virtual const std::string& sha256() const = 0;
};

// nanochat's tokenizer file in its tokenizer/ directory (a pickled tiktoken Encoding).
inline constexpr const char* kBpeTokenizerFile = "tokenizer.pkl";

// Loads a tokenizer: nanochat's tokenizer.pkl (or the directory holding it; bpe.h) or a SentencePiece
// model. Throws DataError naming the file when it is missing, unreadable, not a tokenizer, lacks <|bos|>
// (and, for SentencePiece, byte fallback), or does not round-trip text.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path_or_directory);
// The file load_tokenizer reads for `path_or_directory` (DIR/tokenizer.pkl for a directory).
std::string tokenizer_file(const std::string& path_or_directory);
// The same from the file's bytes, told apart by their first byte; `name` is used in error messages.
std::unique_ptr<Tokenizer> tokenizer_from_bytes(std::string bytes, const std::string& name);

struct TokenizerTrainOptions {
    int vocab_size = 32768;           // special tokens and the 256 byte tokens included
    int threads = 0;                  // 0 = every core
    int64_t max_chars = 2'000'000'000;  // characters read in total (the reference's tok_train.py default)
    int64_t doc_cap = 10'000;           // characters used of each document (ditto)
};

struct TokenizerTrainReport {
    int64_t documents = 0;  // documents read
    int64_t chars = 0;      // characters trained on (after doc_cap)
    double seconds = 0;     // training time
};

// Trains on documents pulled from `next_document` (false at the end) and returns the tokenizer file's
// bytes. Throws DataError when there is no text or SentencePiece refuses (e.g. the vocabulary is larger
// than the corpus can fill: the message says the largest size that works).
std::string train_tokenizer(const std::function<bool(std::string&)>& next_document,
                            const TokenizerTrainOptions& options, TokenizerTrainReport* report = nullptr);

}  // namespace l3lab::data
