// nanochat's tokenizer file, `tokenizer.pkl`: a pickled tiktoken `Encoding` (the class's __getstate__
// dict: name, pat_str, mergeable_ranks, special_tokens). Read with a restricted unpickler that knows
// only the opcodes such a pickle uses and builds nothing but strings, bytes, integers, tuples and dicts
// (no code runs: the one global it accepts is tiktoken.core.Encoding), and written as a protocol-4 pickle
// of the same object, so that nanochat and tiktoken load l3lab's tokenizer as one of their own.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace l3lab::data {

struct TiktokenEncoding {
    std::string name;
    std::string pattern;                                     // pat_str
    std::vector<std::pair<std::string, int64_t>> ranks;      // mergeable_ranks: token bytes -> rank
    std::vector<std::pair<std::string, int64_t>> specials;   // special_tokens: name -> id
};

// Throws DataError naming `file` (and the byte offset) for anything that is not such a pickle.
TiktokenEncoding read_tiktoken_pickle(std::string_view bytes, const std::string& file);

// A protocol-4 pickle that `pickle.load` turns into this Encoding (without the optional frames and memo).
std::string write_tiktoken_pickle(const TiktokenEncoding& encoding);

// tiktoken's `.tiktoken` rank file (load_tiktoken_bpe): one "base64(token bytes) rank" line per token.
std::string write_tiktoken_ranks(const TiktokenEncoding& encoding);

}  // namespace l3lab::data
