// Small text helpers shared by the human-readable outputs.
#pragma once

#include <cstdint>
#include <string>

namespace l3lab::util {

// 1234567 -> "1,234,567"
inline std::string group_digits(int64_t v) {
    std::string digits = std::to_string(v < 0 ? -v : v), out;
    for (size_t i = 0; i < digits.size(); ++i) {
        if (i && (digits.size() - i) % 3 == 0) out += ',';
        out += digits[i];
    }
    return (v < 0 ? "-" : "") + out;
}

}  // namespace l3lab::util
