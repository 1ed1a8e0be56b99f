#include "runner/util/format.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <locale>

namespace l3lab::util {

namespace {

// Thousands separated by commas whatever the machine's locale: fmt's "{:L}" with this facet.
struct CommaGroups : std::numpunct<char> {
    char do_thousands_sep() const override { return ','; }
    std::string do_grouping() const override { return "\3"; }
};

const std::locale& comma_locale() {
    static const std::locale locale(std::locale::classic(), new CommaGroups);
    return locale;
}

}  // namespace

std::string group_digits(int64_t v) { return fmt::format(comma_locale(), "{:L}", v); }

std::string fixed(double value, int digits) { return fmt::format("{:.{}f}", value, std::max(digits, 0)); }

std::string zero_padded(int64_t v, int width) { return fmt::format("{:0{}d}", v, std::max(width, 0)); }

std::string human_duration(double seconds) {
    if (!std::isfinite(seconds) || seconds < 0) return "?";
    const auto s = static_cast<int64_t>(std::llround(seconds));
    if (s < 60) return fmt::format("{} s", s);
    if (s < 3600) return fmt::format("{} min {:02d} s", s / 60, s % 60);
    return fmt::format("{} h {:02d} min", s / 3600, (s % 3600) / 60);
}

std::string aligned_table(const std::vector<std::vector<std::string>>& rows, size_t left_from) {
    std::vector<size_t> width;  // in bytes: cells are compared as the bytes they are
    for (const auto& r : rows) {
        if (width.size() < r.size()) width.resize(r.size(), 0);
        for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
    }
    std::string out;
    for (const auto& r : rows) {
        for (size_t i = 0; i < r.size(); ++i) {
            const size_t pad = i + 1 == r.size() && i >= left_from ? 0 : width[i] - r[i].size();
            if (i) out += "  ";
            out += i >= left_from ? r[i] + std::string(pad, ' ') : std::string(pad, ' ') + r[i];
        }
        out += "\n";
    }
    return out;
}

}  // namespace l3lab::util
