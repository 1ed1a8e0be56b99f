// Small text helpers shared by the human-readable outputs.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

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

// Rows of cells as aligned text, two spaces apart: numbers right-aligned, the columns from
// `left_from` on left-aligned (names, paths, messages); the last column is never padded.
inline std::string aligned_table(const std::vector<std::vector<std::string>>& rows, size_t left_from) {
    std::vector<size_t> width;
    for (const auto& r : rows) {
        if (width.size() < r.size()) width.resize(r.size(), 0);
        for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
    }
    std::string out;
    for (const auto& r : rows) {
        std::string line;
        for (size_t i = 0; i < r.size(); ++i) {
            const size_t pad = i + 1 == r.size() && i >= left_from ? 0 : width[i] - r[i].size();
            if (i) line += "  ";
            line += i >= left_from ? r[i] + std::string(pad, ' ') : std::string(pad, ' ') + r[i];
        }
        out += line + "\n";
    }
    return out;
}

}  // namespace l3lab::util
