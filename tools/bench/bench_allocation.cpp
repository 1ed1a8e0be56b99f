// Times the two L3 row allocations on a synthetic Zipf(1.1) token stream (L3.md, "Cost model") and prints
// how skewed each one is: the rows an average occurrence touches, weighted by frequency.
//
//   build/tools/bench/bench_allocation                 # 1M and 10M tokens
//   build/tools/bench/bench_allocation 100000 2000000  # other sample sizes
//
// Stream: V = 32768, token id = Zipf rank - 1 over ids 0..V-2, BOS = V-1 starting each document, documents
// 500..1500 tokens (about 1000), cut into rows of 2048 as a loader would. `frequency` gets the rows, `lzw` the
// BOS-delimited pieces of those rows; `lzw/rows` parses whole rows, as the jhspaybar port's training script does.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "modules/l3/allocation.h"

namespace {

using l3lab::l3::Allocation;
using l3lab::l3::TokenSequence;

constexpr int64_t kVocab = 32768;
constexpr int32_t kBos = int32_t(kVocab - 1);
constexpr int64_t kRowLength = 2048;
constexpr int64_t kNEmb = 4 * kVocab;
constexpr int64_t kKMax = 512;
constexpr double kZipfExponent = 1.1;
constexpr uint64_t kSeed = 20260131;

std::vector<TokenSequence> zipf_rows(int64_t n_tokens) {
    std::vector<double> cdf(size_t(kVocab - 1));
    double sum = 0;
    for (size_t i = 0; i < cdf.size(); ++i) cdf[i] = sum += std::pow(double(i + 1), -kZipfExponent);
    for (double& c : cdf) c /= sum;

    std::mt19937_64 rng(kSeed);
    std::uniform_real_distribution<double> uniform(0.0, 1.0);
    std::uniform_int_distribution<int64_t> doc_length(500, 1500);
    std::vector<int32_t> stream;
    stream.reserve(size_t(n_tokens));
    while (int64_t(stream.size()) < n_tokens) {
        stream.push_back(kBos);
        for (int64_t i = doc_length(rng) - 1; i > 0 && int64_t(stream.size()) < n_tokens; --i) {
            auto it = std::lower_bound(cdf.begin(), cdf.end(), uniform(rng));
            stream.push_back(int32_t(std::min<ptrdiff_t>(it - cdf.begin(), ptrdiff_t(cdf.size()) - 1)));
        }
    }
    std::vector<TokenSequence> rows;
    for (size_t begin = 0; begin < stream.size(); begin += kRowLength)
        rows.emplace_back(stream.begin() + ptrdiff_t(begin),
                          stream.begin() + ptrdiff_t(std::min(stream.size(), begin + size_t(kRowLength))));
    return rows;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void report(int64_t n_tokens, const char* method, double seconds, const Allocation& a,
            const std::vector<TokenSequence>& sample) {
    const int64_t max_rows = *std::max_element(a.rows.begin(), a.rows.end());
    const auto at_cap = std::count(a.rows.begin(), a.rows.end(), kKMax);
    std::printf("%12lld  %-10s %9.3f  %10lld  %8lld  %9lld  %12.1f  %zu\n", (long long)n_tokens, method, seconds,
                (long long)a.total(), (long long)max_rows, (long long)at_cap,
                l3lab::l3::rows_per_occurrence(a.rows, sample), a.warnings.size());
    for (const std::string& w : a.warnings) std::printf("              warning: %s\n", w.c_str());
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<int64_t> sizes;
    for (int i = 1; i < argc; ++i) sizes.push_back(std::atoll(argv[i]));
    if (sizes.empty()) sizes = {1'000'000, 10'000'000};

    std::printf("Zipf(%.1f), V = %lld, BOS every ~1000 tokens, rows of %lld, n_emb = 4V = %lld, k_max = %lld\n\n",
                kZipfExponent, (long long)kVocab, (long long)kRowLength, (long long)kNEmb, (long long)kKMax);
    std::printf("%12s  %-10s %9s  %10s  %8s  %9s  %12s  %s\n", "tokens", "method", "seconds", "rows", "max", "at k_max",
                "rows/occur.", "warnings");
    for (int64_t n : sizes) {
        const std::vector<TokenSequence> rows = zipf_rows(n);

        auto t0 = std::chrono::steady_clock::now();
        const std::vector<TokenSequence> pieces = l3lab::l3::split_at_bos(rows, kBos);
        const double split_s = seconds_since(t0);

        t0 = std::chrono::steady_clock::now();
        const Allocation lzw = l3lab::l3::lzw_allocation(pieces, kVocab, kNEmb, kKMax);
        report(n, "lzw", split_s + seconds_since(t0), lzw, rows);

        t0 = std::chrono::steady_clock::now();
        const Allocation lzw_rows = l3lab::l3::lzw_allocation(rows, kVocab, kNEmb, kKMax);
        report(n, "lzw/rows", seconds_since(t0), lzw_rows, rows);

        t0 = std::chrono::steady_clock::now();
        const Allocation frequency = l3lab::l3::frequency_allocation(rows, kVocab, kNEmb, kKMax);
        report(n, "frequency", seconds_since(t0), frequency, rows);
    }
    std::printf("\nseconds for lzw include splitting the rows at BOS; rows/occur. is weighted by the sample's "
                "token frequencies\n");
    return 0;
}
