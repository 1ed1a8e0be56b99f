// L3 row allocation (modules/l3/allocation.h) against goldens made by running both Python implementations
// (tools/reference/make_allocation_fixtures.py), plus what the goldens cannot show: bounds, validation
// messages, warnings, determinism, and the shape of each allocation on a Zipf stream.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <stdexcept>

#include "modules/l3/allocation.h"
#include "test_util.h"

using namespace l3lab;
using l3::Allocation;
using l3::TokenSequence;
using nlohmann::json;

namespace {

const json& fixture() {
    static const json data = [] {
        std::ifstream in(test::kSourceDir / "tests" / "fixtures" / "allocation" / "cases.json");
        return json::parse(in);
    }();
    return data;
}

std::vector<TokenSequence> sequences_of(const json& c) { return c.at("sequences").get<std::vector<TokenSequence>>(); }

// Runs `allocate` on every case and budget that has `key` and compares the rows with the golden ones.
template <typename Allocate>
int check_goldens(const std::string& key, Allocate allocate) {
    int checked = 0;
    for (const json& c : fixture().at("cases")) {
        if (!c.at("budgets").at(0).contains(key)) continue;
        const std::vector<TokenSequence> sequences = sequences_of(c);
        const int64_t V = c.at("vocab_size");
        for (const json& b : c.at("budgets")) {
            const int64_t n_emb = b.at("n_emb"), k_max = b.at("k_max");
            SCOPED_TRACE(c.at("name").get<std::string>() + " n_emb=" + std::to_string(n_emb) +
                         " k_max=" + std::to_string(k_max));
            const Allocation a = allocate(c, sequences, V, n_emb, k_max);
            EXPECT_EQ(a.rows, b.at(key).get<std::vector<int64_t>>());
            ++checked;
        }
    }
    return checked;
}

// Zipf(exponent) ids 0..V-2 with BOS = V-1 leading documents of 100..300 tokens, as one row per document.
std::vector<TokenSequence> zipf_documents(int64_t vocab_size, int64_t n_tokens, uint64_t seed) {
    std::vector<double> cdf(size_t(vocab_size - 1));
    double sum = 0;
    for (size_t i = 0; i < cdf.size(); ++i) cdf[i] = sum += std::pow(double(i + 1), -1.1);
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> uniform(0.0, sum);
    std::uniform_int_distribution<int> length(100, 300);
    std::vector<TokenSequence> docs;
    for (int64_t total = 0; total < n_tokens;) {
        TokenSequence doc = {int32_t(vocab_size - 1)};
        for (int i = length(rng); i > 1; --i) {
            const auto it = std::lower_bound(cdf.begin(), cdf.end(), uniform(rng));
            doc.push_back(int32_t(std::min<ptrdiff_t>(it - cdf.begin(), ptrdiff_t(cdf.size()) - 1)));
        }
        total += int64_t(doc.size());
        docs.push_back(std::move(doc));
    }
    return docs;
}

template <typename F>
std::string error_of(F f) {
    try {
        f();
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return "(no std::invalid_argument thrown)";
}

bool any_contains(const std::vector<std::string>& warnings, const std::string& text) {
    return std::any_of(warnings.begin(), warnings.end(),
                       [&](const std::string& w) { return w.find(text) != std::string::npos; });
}

}  // namespace

// ---- goldens

TEST(AllocationGoldens, FrequencyMatchesTheReference) {
    const int n = check_goldens("frequency", [](const json&, const auto& seqs, int64_t V, int64_t n_emb,
                                                int64_t k_max) { return l3::frequency_allocation(seqs, V, n_emb, k_max); });
    EXPECT_GE(n, 150);
}

TEST(AllocationGoldens, LzwMatchesThePortOnWholeSequences) {
    const int n = check_goldens("lzw", [](const json&, const auto& seqs, int64_t V, int64_t n_emb, int64_t k_max) {
        return l3::lzw_allocation(seqs, V, n_emb, k_max);
    });
    EXPECT_GE(n, 150);
}

TEST(AllocationGoldens, LzwOnBosPiecesMatchesThePortOnTheSplitRows) {
    const int n = check_goldens("lzw_pieces", [](const json& c, const auto& seqs, int64_t V, int64_t n_emb,
                                                 int64_t k_max) {
        return l3::lzw_allocation(l3::split_at_bos(seqs, c.at("bos").get<int32_t>()), V, n_emb, k_max);
    });
    EXPECT_GE(n, 40);
}

TEST(AllocationGoldens, CoverTheBudgetCornerCases) {
    bool k_max_one = false, unreachable = false, n_emb_is_vocab = false, zipf = false;
    for (const json& c : fixture().at("cases")) {
        const int64_t V = c.at("vocab_size");
        zipf |= V >= 1000;
        for (const json& b : c.at("budgets")) {
            const int64_t n_emb = b.at("n_emb"), k_max = b.at("k_max");
            k_max_one |= k_max == 1 && n_emb > V;
            unreachable |= n_emb > k_max * V && k_max > 1;
            n_emb_is_vocab |= n_emb == V;
        }
    }
    EXPECT_TRUE(k_max_one && unreachable && n_emb_is_vocab && zipf);
}

// ---- unit tests

TEST(Allocation, BoundsAreTheCumulativeRowCounts) {
    EXPECT_EQ(l3::bounds_from_allocation({2, 1, 3}), (std::vector<int64_t>{0, 2, 3, 6}));
    EXPECT_EQ(l3::bounds_from_allocation({}), (std::vector<int64_t>{0}));
    const Allocation a = l3::lzw_allocation(zipf_documents(64, 5000, 1), 64, 256, 16);
    const std::vector<int64_t> bounds = l3::bounds_from_allocation(a.rows);
    ASSERT_EQ(bounds.size(), 65u);
    EXPECT_EQ(bounds.front(), 0);
    EXPECT_EQ(bounds.back(), 256);
}

TEST(Allocation, InvalidInputsNameTheValue) {
    for (auto allocate : {&l3::lzw_allocation, &l3::frequency_allocation}) {
        const std::string small_budget = error_of([&] { allocate({{0, 1}}, 4, 3, 8, {}); });
        EXPECT_NE(small_budget.find("n_emb (3) must be >= vocab_size (4)"), std::string::npos) << small_budget;
        const std::string k_max = error_of([&] { allocate({{0, 1}}, 4, 8, 0, {}); });
        EXPECT_NE(k_max.find("k_max (0) must be >= 1"), std::string::npos) << k_max;
        const std::string vocab = error_of([&] { allocate({}, 0, 8, 8, {}); });
        EXPECT_NE(vocab.find("vocab_size (0)"), std::string::npos) << vocab;
        const std::string token = error_of([&] { allocate({{0, 1}, {2, 3, 7}}, 4, 8, 8, {}); });
        EXPECT_NE(token.find("token id 7 at sequence 1, position 2 is outside the vocabulary [0, 4)"),
                  std::string::npos)
            << token;
        const std::string negative = error_of([&] { allocate({{-1}}, 4, 8, 8, {}); });
        EXPECT_NE(negative.find("token id -1 at sequence 0, position 0"), std::string::npos) << negative;
    }
    EXPECT_NE(error_of([] { l3::rows_per_occurrence({1, 2}, {{0, 2}}); }).find("token id 2 at sequence 0, position 1"),
              std::string::npos);
}

TEST(Allocation, LzwWarnsWhenTheCodewordsRunOut) {
    // Codewords (0), (0,1) and the zero-count seeds give 6 rows of the 15 beyond one per token.
    const Allocation a = l3::lzw_allocation({{0, 1}}, 5, 20, 6);
    EXPECT_EQ(a.total(), 20);
    ASSERT_EQ(a.warnings.size(), 1u);
    EXPECT_TRUE(any_contains(a.warnings, "spread the other 9 over tokens in id order")) << a.warnings[0];

    const Allocation enough = l3::lzw_allocation({{0, 1}}, 5, 11, 6);
    EXPECT_TRUE(enough.warnings.empty());
}

TEST(Allocation, BothWarnWhenKMaxCapsTheBudget) {
    for (auto allocate : {&l3::lzw_allocation, &l3::frequency_allocation}) {
        const Allocation a = allocate({{0, 1, 0, 1, 2, 2}}, 3, 100, 4, {});
        EXPECT_EQ(a.rows, (std::vector<int64_t>{4, 4, 4}));
        EXPECT_TRUE(any_contains(a.warnings, "n_emb = 100 exceeds k_max x vocab_size = 4 x 3; allocated 12 rows"));
    }
    // k_max = 1: nothing can be spread, so only the cap is reported.
    const Allocation one = l3::lzw_allocation({{0, 1, 2}}, 4, 10, 1);
    EXPECT_EQ(one.rows, (std::vector<int64_t>{1, 1, 1, 1}));
    ASSERT_EQ(one.warnings.size(), 1u);
    EXPECT_TRUE(any_contains(one.warnings, "exceeds k_max"));
    EXPECT_TRUE(l3::frequency_allocation({{0, 1, 2}}, 4, 16, 4).warnings.empty());
}

TEST(Allocation, SplitAtBosStartsAPieceAtEveryBos) {
    const std::vector<TokenSequence> rows = {{4, 0, 1, 4, 2}, {3, 3, 4, 4, 1, 4}, {}, {4}};
    const std::vector<TokenSequence> expected = {{4, 0, 1}, {4, 2}, {3, 3}, {4}, {4, 1}, {4}, {4}};
    EXPECT_EQ(l3::split_at_bos(rows, 4), expected);
}

TEST(Allocation, RowsPerOccurrenceIsFrequencyWeighted) {
    EXPECT_DOUBLE_EQ(l3::rows_per_occurrence({1, 5}, {{0, 1, 1}, {1}}), (1.0 + 5 + 5 + 5) / 4);
    EXPECT_EQ(l3::rows_per_occurrence({1, 5}, {}), 0.0);
}

TEST(Allocation, IsDeterministic) {
    const std::vector<TokenSequence> docs = zipf_documents(512, 50'000, 7);
    const Allocation a = l3::lzw_allocation(docs, 512, 2048, 64), b = l3::lzw_allocation(docs, 512, 2048, 64);
    EXPECT_EQ(a.rows, b.rows);
    EXPECT_EQ(l3::frequency_allocation(docs, 512, 2048, 64).rows, l3::frequency_allocation(docs, 512, 2048, 64).rows);
}

// L3.md's cost model: on a Zipf stream lzw concentrates rows on frequent tokens (an average occurrence
// touches far more than n_emb / V rows), while the reference's frequency rule is uniform within one row.
TEST(Allocation, LzwIsSkewedAndFrequencyNearUniformOnAZipfStream) {
    const int64_t V = 2048, n_emb = 4 * V, k_max = 128;
    const std::vector<TokenSequence> docs = zipf_documents(V, 100'000, 11);

    const Allocation lzw = l3::lzw_allocation(docs, V, n_emb, k_max);
    EXPECT_EQ(lzw.total(), n_emb);
    EXPECT_EQ(*std::max_element(lzw.rows.begin(), lzw.rows.end()), k_max);
    EXPECT_GT(l3::rows_per_occurrence(lzw.rows, docs), 10.0 * n_emb / V);

    const Allocation frequency = l3::frequency_allocation(docs, V, n_emb, k_max);
    EXPECT_EQ(frequency.total(), n_emb);
    const auto [lo, hi] = std::minmax_element(frequency.rows.begin(), frequency.rows.end());
    EXPECT_LE(*hi - *lo, 1);
    EXPECT_NEAR(l3::rows_per_occurrence(frequency.rows, docs), double(n_emb) / V, 1.0);
}
