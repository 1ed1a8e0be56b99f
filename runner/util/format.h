// Text helpers shared by the human-readable outputs, in one place. The bodies use fmt (format.cpp);
// this header includes none of it, so libtorch translation units (whose wheel bundles another fmt) can
// use it too.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace l3lab::util {

// 1234567 -> "1,234,567"
std::string group_digits(int64_t v);

// fixed(3.14159, 2) -> "3.14"
std::string fixed(double value, int digits);

// zero_padded(42, 5) -> "00042"; longer numbers are never cut
std::string zero_padded(int64_t v, int width);

// A duration for people: "42 s", "3 min 05 s", "2 h 07 min"; "?" for a negative or non-finite one
std::string human_duration(double seconds);

// Rows of cells as aligned text, two spaces apart: numbers right-aligned, the columns from
// `left_from` on left-aligned (names, paths, messages); the last column is never padded.
std::string aligned_table(const std::vector<std::vector<std::string>>& rows, size_t left_from);

}  // namespace l3lab::util
