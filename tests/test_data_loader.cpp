// The best-fit loader against the reference's own packing (tests/fixtures/data/bestfit_cases.json, made
// by tools/reference/make_loader_fixtures.py running nanochat's dataloader), exact resume, disjoint ranks,
// the prefetching wrapper, and bits per byte against nanochat's evaluate_bpb.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "runner/data/bpb.h"
#include "runner/data/errors.h"
#include "runner/data/loader.h"
#include "test_data_util.h"

using namespace l3lab;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

const json& fixture(const char* name) {
    static std::map<std::string, json> cache;
    auto it = cache.find(name);
    if (it != cache.end()) return it->second;
    std::ifstream in(test::kSourceDir / "tests" / "fixtures" / "data" / name);
    return cache.emplace(name, json::parse(in)).first->second;
}

// The fixture's documents as shards: one per file, documents in order (the script's token rule).
std::shared_ptr<const data::ShardSet> case_shards(const json& c, const test::TempDir& dir) {
    const int64_t V = c["vocab_size"];
    const auto& lengths = c["lengths"];
    for (size_t f = 0; f < lengths.size(); ++f) {
        std::vector<int32_t> tokens;
        for (size_t d = 0; d < lengths[f].size(); ++d) {
            tokens.push_back(c["bos"].get<int32_t>());
            for (int64_t p = 1; p < lengths[f][d].get<int64_t>(); ++p)
                tokens.push_back(static_cast<int32_t>(2 + (int64_t(f) * 1000003 + int64_t(d) * 7919 + p * 31) % (V - 2)));
        }
        char name[32];
        std::snprintf(name, sizeof(name), "train_%06zu.bin", f);
        test::write_shard((dir.path() / name).string(), tokens);
    }
    data::ShardSetOptions o;
    o.vocab_size = V;
    o.bos_id = c["bos"].get<int64_t>();
    return data::ShardSet::open(dir.path().string(), o);
}

data::LoaderOptions case_options(const json& c) {
    data::LoaderOptions o;
    o.batch_size = c["B"];
    o.sequence_len = c["T"];
    o.buffer_size = c["buffer_size"];
    o.row_group_docs = c["row_group_docs"];
    o.rank = c["rank"];
    o.world_size = c["world_size"];
    return o;
}

// Compares a batch with the fixture's rows (inputs = row[:-1], targets = row[1:]) and epoch.
void expect_batch(const data::Batch& b, const json& expected, const std::string& where) {
    const auto& rows = expected["rows"];
    const size_t B = rows.size(), T = rows[0].size() - 1;
    ASSERT_EQ(b.inputs.size(), B * T) << where;
    for (size_t r = 0; r < B; ++r)
        for (size_t t = 0; t < T; ++t) {
            ASSERT_EQ(b.inputs[r * T + t], rows[r][t].get<int64_t>()) << where << " row " << r << " position " << t;
            ASSERT_EQ(b.targets[r * T + t], rows[r][t + 1].get<int64_t>()) << where << " row " << r << " position " << t;
        }
    EXPECT_EQ(b.epoch, expected["epoch"].get<int64_t>()) << where;
}

// Documents with a unique id as their second token (uint32 shards), for telling them apart in rows.
std::shared_ptr<const data::ShardSet> numbered_shards(const test::TempDir& dir, std::vector<int> docs_per_shard, uint64_t seed,
                                                      int max_len = 40) {
    test::Rng rng{seed};
    int32_t id = 2;
    for (size_t s = 0; s < docs_per_shard.size(); ++s) {
        std::vector<int32_t> tokens;
        for (int d = 0; d < docs_per_shard[s]; ++d) {
            tokens.push_back(1);
            tokens.push_back(id++);
            const int extra = static_cast<int>(rng.below(static_cast<uint64_t>(max_len)));
            for (int k = 0; k < extra; ++k) tokens.push_back(100000 + static_cast<int32_t>(rng.below(1000)));
        }
        test::write_shard((dir.path() / ("train_00000" + std::to_string(s) + ".bin")).string(), tokens, 2);
    }
    data::ShardSetOptions o;
    o.vocab_size = 101000;
    o.bos_id = 1;
    return data::ShardSet::open(dir.path().string(), o);
}

// Ids of the documents whose start (BOS + id) appears in the batch.
std::set<int64_t> doc_ids(const data::Batch& b) {
    std::set<int64_t> ids;
    const size_t T = static_cast<size_t>(b.sequence_len);
    for (size_t r = 0; r < static_cast<size_t>(b.batch_size); ++r)
        for (size_t t = 0; t < T; ++t)
            if (b.inputs[r * T + t] == 1) ids.insert(b.targets[r * T + t]);
    return ids;
}

std::vector<data::Batch> take(data::BestFitLoader& loader, int n) {
    std::vector<data::Batch> out;
    for (int i = 0; i < n; ++i) out.push_back(loader.next());
    return out;
}

void expect_same(const std::vector<data::Batch>& a, const std::vector<data::Batch>& b) {
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
        ASSERT_EQ(a[i].inputs, b[i].inputs) << "batch " << i;
        ASSERT_EQ(a[i].targets, b[i].targets) << "batch " << i;
        ASSERT_EQ(a[i].epoch, b[i].epoch) << "batch " << i;
    }
}

}  // namespace

TEST(DataLoader, MatchesTheReferencePacking) {
    for (const json& c : fixture("bestfit_cases.json")["cases"]) {
        SCOPED_TRACE(c["name"].get<std::string>());
        test::TempDir dir;
        data::BestFitLoader loader(case_shards(c, dir), case_options(c));
        data::Batch b;
        int i = 0;
        for (const json& expected : c["batches"]) {
            loader.next(b);  // reusing the batch's buffers
            expect_batch(b, expected, "batch " + std::to_string(i++));
            if (HasFatalFailure()) return;
        }
        const auto s = loader.state();
        EXPECT_EQ(s.tokens, static_cast<int64_t>(c["batches"].size()) * c["B"].get<int64_t>() * (c["T"].get<int64_t>() + 1));
    }
}

TEST(DataLoader, ResumeIsExactAtEveryPointOfTheReferenceStream) {
    // Save after k batches, restore into a new loader from the JSON text, continue: the reference's
    // batches, for k in the middle and right before and after every epoch change.
    for (const json& c : fixture("bestfit_cases.json")["cases"]) {
        SCOPED_TRACE(c["name"].get<std::string>());
        test::TempDir dir;
        auto shards = case_shards(c, dir);
        const auto& batches = c["batches"];
        std::set<size_t> ks = {1, batches.size() / 2, batches.size() - 1};
        for (size_t i = 1; i < batches.size(); ++i)
            if (batches[i]["epoch"] != batches[i - 1]["epoch"]) ks.insert({i - 1, i, i + 1});
        for (size_t k : ks) {
            if (k == 0 || k >= batches.size()) continue;
            data::BestFitLoader first(shards, case_options(c));
            for (size_t i = 0; i < k; ++i) first.next();
            const std::string saved = first.state().to_json();
            data::BestFitLoader second(shards, case_options(c));
            second.restore(data::LoaderState::from_json(saved, "state.json"));
            EXPECT_EQ(second.state(), first.state());
            for (size_t i = k; i < batches.size(); ++i) {
                expect_batch(second.next(), batches[i], "k=" + std::to_string(k) + " batch " + std::to_string(i));
                if (HasFatalFailure()) return;
            }
        }
    }
}

TEST(DataLoader, PrefetchingGivesTheSameBatchesAndTheTakenState) {
    const json& c = fixture("bestfit_cases.json")["cases"][1];
    test::TempDir dir;
    auto shards = case_shards(c, dir);
    data::BestFitLoader plain(shards, case_options(c));
    data::PrefetchingLoader prefetch(data::BestFitLoader(shards, case_options(c)), 3);
    data::Batch b;
    for (size_t i = 0; i < 20; ++i) {
        prefetch.next(b);
        expect_batch(b, c["batches"][i], "batch " + std::to_string(i));
        plain.next();
        // The background thread is ahead; the state is that of the batches taken.
        EXPECT_EQ(prefetch.state(), plain.state()) << "after batch " << i;
    }
    // Restoring rewinds the prefetched stream.
    data::BestFitLoader at5(shards, case_options(c));
    for (int i = 0; i < 5; ++i) at5.next();
    prefetch.restore(at5.state());
    EXPECT_EQ(prefetch.state(), at5.state());
    for (size_t i = 5; i < 15; ++i) expect_batch(prefetch.next(), c["batches"][i], "after restore, batch " + std::to_string(i));
}

TEST(DataLoader, RanksReadDisjointDocumentsAndTogetherAll) {
    test::TempDir dir;
    auto shards = numbered_shards(dir, {700, 333, 90, 1500}, 3);
    const size_t total = shards->documents();
    for (bool shuffle : {false, true}) {
        for (int W : {1, 2, 3, 5}) {
            // Row groups: every document exactly once per epoch over all ranks.
            for (int64_t epoch : {1, 2}) {
                std::vector<int> seen(total, 0);
                for (int r = 0; r < W; ++r) {
                    data::LoaderOptions o{.row_group_docs = 100, .rank = r, .world_size = W, .shuffle = shuffle, .seed = 9};
                    for (const auto& g : data::rank_row_groups(*shards, o, epoch)) {
                        uint64_t base = 0;
                        for (uint32_t s = 0; s < g.shard; ++s) base += shards->shards()[s].documents();
                        for (uint32_t d = 0; d < g.documents; ++d) ++seen[base + g.first_doc + d];
                    }
                }
                for (size_t i = 0; i < total; ++i) ASSERT_EQ(seen[i], 1) << "document " << i << ", W=" << W;
            }
            // Batches: the documents in each rank's rows are its own.
            std::vector<std::set<int64_t>> per_rank(static_cast<size_t>(W));
            for (int r = 0; r < W; ++r) {
                data::LoaderOptions o{.batch_size = 4, .sequence_len = 64, .buffer_size = 50, .row_group_docs = 100,
                                      .rank = r, .world_size = W, .shuffle = shuffle, .seed = 9};
                data::BestFitLoader loader(shards, o);
                for (int i = 0; i < 400; ++i) {
                    auto ids = doc_ids(loader.next());
                    per_rank[static_cast<size_t>(r)].insert(ids.begin(), ids.end());
                }
            }
            std::set<int64_t> all;
            size_t sum = 0;
            for (const auto& ids : per_rank) {
                sum += ids.size();
                all.insert(ids.begin(), ids.end());
            }
            EXPECT_EQ(sum, all.size()) << "ranks overlap: W=" << W << " shuffle=" << shuffle;
            EXPECT_GT(all.size(), total * 9 / 10) << "the ranks together read most documents";
        }
    }
}

TEST(DataLoader, ResumeIsExactWithShuffleAcrossEpochs) {
    test::TempDir dir;
    auto shards = numbered_shards(dir, {120, 80}, 5, 30);
    data::LoaderOptions o{.batch_size = 3, .sequence_len = 32, .buffer_size = 40, .refill_batch = 16,
                          .row_group_docs = 24, .rank = 1, .world_size = 2, .shuffle = true, .seed = 1234};
    data::BestFitLoader straight(shards, o);
    auto expected = take(straight, 120);
    ASSERT_GE(expected.back().epoch, 4) << "the run must cross several epochs";
    for (int k : {1, 17, 40, 77, 119}) {
        data::BestFitLoader a(shards, o);
        auto got = take(a, k);
        data::BestFitLoader b(shards, o);
        b.restore(data::LoaderState::from_json(a.state().to_json(), "s"));
        auto rest = take(b, 120 - k);
        got.insert(got.end(), rest.begin(), rest.end());
        expect_same(got, expected);
    }
    // The seed decides the order; the same seed, the same order.
    data::BestFitLoader again(shards, o);
    expect_same(take(again, 120), expected);
    o.seed = 1235;
    data::BestFitLoader other(shards, o);
    EXPECT_NE(take(other, 10)[0].inputs, expected[0].inputs);
    // Shuffled row groups come in another order in other epochs (the same groups: the rank's part).
    o.seed = 1234;
    auto first = data::rank_row_groups(*shards, o, 1);
    bool differs = false;
    for (int64_t e = 2; e <= 6; ++e) {
        auto other_epoch = data::rank_row_groups(*shards, o, e);
        differs |= other_epoch != first;
        auto sorted = [](std::vector<data::RowGroup> v) {
            std::sort(v.begin(), v.end(), [](auto& a, auto& b) { return std::tie(a.shard, a.first_doc) < std::tie(b.shard, b.first_doc); });
            return v;
        };
        EXPECT_EQ(sorted(other_epoch), sorted(first));
    }
    EXPECT_TRUE(differs);
}

TEST(DataLoader, CroppingIsCounted) {
    test::TempDir dir;
    auto shards = numbered_shards(dir, {300}, 11, 200);
    data::LoaderOptions o{.batch_size = 2, .sequence_len = 50, .buffer_size = 30, .row_group_docs = 64};
    data::BestFitLoader loader(shards, o);
    take(loader, 50);
    const auto s = loader.state();
    EXPECT_EQ(s.batches, 50);
    EXPECT_EQ(s.tokens, 50 * 2 * 51);
    EXPECT_GT(s.cropped, 0);
    EXPECT_NEAR(s.cropped_fraction(), double(s.cropped) / double(s.cropped + s.tokens), 1e-12);
}

TEST(DataLoader, BadOptionsAndForeignStatesAreErrors) {
    test::TempDir dir;
    auto shards = numbered_shards(dir, {50}, 1);
    auto err = [](auto&& f) -> std::string {
        try {
            f();
        } catch (const data::DataError& e) {
            return e.what();
        }
        return "(no error)";
    };
    EXPECT_NE(err([&] { data::BestFitLoader(shards, {.batch_size = 0}); }).find("batch_size: must be at least 1"), std::string::npos);
    EXPECT_NE(err([&] { data::BestFitLoader(shards, {.rank = 2, .world_size = 2}); }).find("rank: must be in"), std::string::npos);
    // 50 documents are one row group: a second rank would get nothing (the reference would spin forever).
    EXPECT_NE(err([&] { data::BestFitLoader(shards, {.rank = 1, .world_size = 2}); }).find("rank 1 of 2 gets no documents"),
              std::string::npos);

    data::LoaderOptions o{.batch_size = 2, .sequence_len = 16, .row_group_docs = 10, .rank = 0, .world_size = 2};
    data::BestFitLoader rank0(shards, o);
    rank0.next();
    const auto state = rank0.state();
    o.rank = 1;
    data::BestFitLoader rank1(shards, o);
    EXPECT_NE(err([&] { rank1.restore(state); }).find("rank was 0 when it was saved, now 1"), std::string::npos);
    test::TempDir other_dir;
    data::BestFitLoader other(numbered_shards(other_dir, {51}, 1), {.row_group_docs = 10, .world_size = 2});
    EXPECT_NE(err([&] { other.restore(state); }).find("belongs to other shards"), std::string::npos);
    auto broken = state;
    broken.buffer.push_back({0, 999});
    EXPECT_NE(err([&] { rank0.restore(broken); }).find("is not in the shards"), std::string::npos);
    EXPECT_NE(err([&] { data::LoaderState::from_json("[1,2]", "s.json"); }).find("s.json: expected a JSON object"), std::string::npos);
    EXPECT_NE(err([&] { data::LoaderState::from_json("{\"version\": 1}", "s.json"); }).find("fingerprint: missing"),
              std::string::npos);
    // A failed restore leaves the loader as it was.
    EXPECT_EQ(rank0.state(), state);
}

TEST(DataBpb, MatchesTheReference) {
    for (const json& c : fixture("bpb_cases.json")["cases"]) {
        SCOPED_TRACE(c["name"].get<std::string>());
        const auto token_bytes = c["token_bytes"].get<std::vector<int32_t>>();
        data::BpbSums total;
        for (const json& b : c["batches"]) {
            const auto losses = b["losses"].get<std::vector<float>>();
            const auto targets = b["targets"].get<std::vector<int64_t>>();
            data::BpbSums rank;  // as one rank would, then reduced
            data::accumulate_bpb(losses, targets, token_bytes, rank);
            total += rank;
        }
        const double bpb = data::bits_per_byte(total);
        if (c["bpb"].is_null()) {
            EXPECT_TRUE(std::isinf(bpb));
        } else {
            EXPECT_NEAR(bpb, c["bpb"].get<double>(), 1e-6 * c["bpb"].get<double>());
        }
    }
    data::BpbSums s;
    EXPECT_THROW(data::accumulate_bpb(std::vector<float>{1.0f}, std::vector<int64_t>{5}, std::vector<int32_t>{1, 1}, s),
                 std::out_of_range);
}
