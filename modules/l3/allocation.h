// How many rows of an L3 table each vocabulary token owns (L3.md, "Allocation"). Torch-free.
//
//   lzw        the paper's Algorithm 1, equal token for token to the port in github.com/jhspaybar/nanochat
//              (nanochat/l3.py, compute_lzw_allocation), quirks included. Input: pieces (see split_at_bos).
//   frequency  the reference's compute_lzw_allocation (karpathy/nanochat@b7629ef nanochat/l3.py), which is
//              not LZW (REFERENCE.md, known defect 1): every token gets about n_emb / V rows. Input: rows.
//
// Both start every token at one row and never give a token more than k_max. When n_emb > k_max * V the
// budget cannot be met; like the reference they stop short and say so in a warning.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace l3lab::l3 {

using TokenSequence = std::vector<int32_t>;

struct Allocation {
    std::vector<int64_t> rows;          // rows per token id, size vocab_size, each in [1, k_max]
    std::vector<std::string> warnings;  // budget problems worth printing; the rows are still usable
    int64_t total() const;              // sum of rows: n_emb unless a warning says otherwise
};

// Told the sample tokens processed so far, between pieces about every 65,536 tokens and at the end; may
// throw to abandon the allocation (the trainer's progress report and stop check).
using AllocationProgress = std::function<void(int64_t tokens_done)>;

// Paper Algorithm 1: LZ78-parse every piece separately, count codewords, and give one row per codeword
// (most frequent first, ties in first-insertion order) to the codeword's last token.
Allocation lzw_allocation(const std::vector<TokenSequence>& pieces, int64_t vocab_size, int64_t n_emb,
                          int64_t k_max, const AllocationProgress& progress = {});

// The reference's rule: score = occurrences + occurrences at positions >= 1 of their sequence, then one row
// per token per pass over the tokens by descending score (ties by ascending id) until n_emb is spent.
Allocation frequency_allocation(const std::vector<TokenSequence>& rows, int64_t vocab_size, int64_t n_emb,
                                int64_t k_max, const AllocationProgress& progress = {});

// Cuts sample rows into BOS-delimited pieces (L3.md: "a piece starts with its BOS token"). Tokens before a
// row's first BOS form a piece of their own; pieces never span rows; empty rows give no piece.
// The jhspaybar port feeds whole loader rows to its parse instead: pass the rows unsplit to reproduce that.
std::vector<TokenSequence> split_at_bos(const std::vector<TokenSequence>& rows, int32_t bos_token);

// Cumulative row offsets: size V + 1, bounds[0] = 0, token t owns rows [bounds[t], bounds[t + 1]).
std::vector<int64_t> bounds_from_allocation(const std::vector<int64_t>& rows);

// Rows an average occurrence in `sample` touches (frequency-weighted): sum over occurrences of rows[token],
// divided by the number of occurrences; 0 for an empty sample. Token ids must be < rows.size().
double rows_per_occurrence(const std::vector<int64_t>& rows, const std::vector<TokenSequence>& sample);

}  // namespace l3lab::l3
