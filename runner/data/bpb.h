// Bits per byte, as the reference computes it (nanochat/loss_eval.py evaluate_bpb): the summed loss in
// nats of the target tokens over the summed byte lengths of those tokens, divided by ln 2. Targets
// with 0 bytes (special tokens such as BOS) and ignored targets (< 0) count neither. With data
// parallelism each rank sums its own batches; the sums are added across ranks before the division.
#pragma once

#include <cstdint>
#include <span>

namespace l3lab::data {

struct BpbSums {
    double nats = 0;    // summed loss of counted targets
    int64_t bytes = 0;  // summed byte lengths of the targets
    BpbSums& operator+=(const BpbSums& o) {
        nats += o.nats;
        bytes += o.bytes;
        return *this;
    }
};

// Adds one batch: per-target losses in nats and the targets, flattened alike. `token_bytes` is the
// tokenizer's (Tokenizer::token_bytes()). Throws std::out_of_range for a target outside it.
void accumulate_bpb(std::span<const float> losses, std::span<const int64_t> targets,
                    std::span<const int32_t> token_bytes, BpbSums& sums);

// nats / (ln 2 * bytes); +infinity when no byte was counted (as the reference).
double bits_per_byte(double nats, int64_t bytes);
inline double bits_per_byte(const BpbSums& s) { return bits_per_byte(s.nats, s.bytes); }

}  // namespace l3lab::data
