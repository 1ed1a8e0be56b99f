#include "runner/data/bpb.h"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace l3lab::data {

void accumulate_bpb(std::span<const float> losses, std::span<const int64_t> targets,
                    std::span<const int32_t> token_bytes, BpbSums& sums) {
    if (losses.size() != targets.size())
        throw std::invalid_argument("accumulate_bpb: " + std::to_string(losses.size()) + " losses for " +
                                    std::to_string(targets.size()) + " targets");
    for (size_t i = 0; i < targets.size(); ++i) {
        const int64_t t = targets[i];
        if (t < 0) continue;  // ignore_index
        if (t >= static_cast<int64_t>(token_bytes.size()))
            throw std::out_of_range("accumulate_bpb: target " + std::to_string(t) + " is outside the vocabulary");
        const int32_t b = token_bytes[static_cast<size_t>(t)];
        if (b > 0) sums.nats += losses[i];
        sums.bytes += b;
    }
}

double bits_per_byte(double nats, int64_t bytes) {
    if (bytes == 0) return std::numeric_limits<double>::infinity();
    return nats / (std::log(2.0) * static_cast<double>(bytes));
}

}  // namespace l3lab::data
