// nanochat's tokenizer: GPT-4-style byte-level BPE. Text is split by a regular expression (nanochat's
// SPLIT_PATTERN, run by PCRE2 with JIT and Unicode properties), each piece is encoded as tiktoken's
// CoreBPE encodes it (the adjacent pair whose bytes have the lowest rank is merged first), and special
// tokens sit after the ranks. `train_bpe` learns the ranks as rustbpe does (nanochat's tok_train.py).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runner/data/tiktoken_pickle.h"
#include "runner/data/tokenizer.h"

namespace l3lab::data {

// nanochat's SPLIT_PATTERN (GPT-4's, with \p{N}{1,2} for numbers).
inline constexpr std::string_view kNanochatSplitPattern =
    R"('(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+)";

// A compiled split pattern. `\s` and `\S` mean Unicode White_Space, as in tiktoken's and rustbpe's
// regex engine (PCRE2's own \s also takes U+180E). Thread-safe.
class SplitPattern {
public:
    // Throws DataError naming `source` when PCRE2 refuses the pattern.
    SplitPattern(std::string_view pattern, const std::string& source);
    ~SplitPattern();
    SplitPattern(const SplitPattern&) = delete;
    SplitPattern& operator=(const SplitPattern&) = delete;

    // Calls `piece` for every match in `text` (valid UTF-8), in order.
    void split(std::string_view text, const std::function<void(std::string_view)>& piece) const;
    const std::string& pattern() const { return pattern_; }

private:
    std::string pattern_;
    void* code_ = nullptr;  // pcre2_code_8
};

// A tiktoken Encoding as a Tokenizer (nanochat's RustBPETokenizer): encode = encode_ordinary, the BOS is
// <|bos|> (or <|endoftext|>), token_bytes as nanochat's tok_train.py computes it.
std::unique_ptr<Tokenizer> bpe_tokenizer(TiktokenEncoding encoding, std::string sha256, const std::string& file);

struct BpeTrainOptions {
    int vocab_size = 32768;             // the special tokens included, as tok_train.py's --vocab-size
    int threads = 0;                    // 0 = every core (splitting and counting the text)
    int64_t max_chars = 2'000'000'000;  // tok_train.py's --max-chars
    int64_t doc_cap = 10'000;           // tok_train.py's --doc-cap
};

// Trains as nanochat's tok_train.py: the first doc_cap characters of each document until more than
// max_chars were read, split by the pattern, the pieces counted; then the most frequent adjacent pair
// (ties: the smallest pair of ids) is merged, vocab_size - 9 - 256 times, as rustbpe does; the special
// tokens follow. Throws DataError when there is no text or the vocabulary is below 9 + 256.
TiktokenEncoding train_bpe(const std::function<bool(std::string&)>& next_document, const BpeTrainOptions& options,
                           TokenizerTrainReport* report = nullptr);

}  // namespace l3lab::data
