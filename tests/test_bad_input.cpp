// Bad input through the real executable (docs/reliability.md, "Bad input"): the corpus of broken
// experiment, data and sweep files in tests/fixtures/bad_configs/ and tests/fixtures/bad_sweeps/, and
// seeded mutation fuzzing of the shipped experiments and sweeps. Every case must exit 2 (or 0, for a
// mutation that happens to stay valid) with a located message, within a timeout, without a crash trace,
// and without creating a run or sweep directory.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>

#include "bad_input_util.h"
#include "runner/data/manifest.h"
#include "runner/data/tokenize.h"
#include "test_data_util.h"

namespace fs = std::filesystem;
using namespace l3lab;

namespace {

const fs::path kFixtures = test::kSourceDir / "tests" / "fixtures";

double timeout_s() {
    const char* t = std::getenv("L3LAB_FUZZ_TIMEOUT_S");
    return t ? std::atof(t) : 5.0;
}

test::ProcessResult run_l3lab(const std::vector<std::string>& args, const std::string& cwd) {
    return test::run_process(L3LAB_BINARY, args, cwd, timeout_s());
}

// Names of the entries of `dir` (recursively), to see that a command created nothing.
std::vector<std::string> listing(const fs::path& dir) {
    std::vector<std::string> names;
    for (const auto& e : fs::recursive_directory_iterator(dir)) names.push_back(fs::relative(e.path(), dir).string());
    std::sort(names.begin(), names.end());
    return names;
}

// file:line:col:, file:line: or file: at the start of an error line (a path without spaces, or an
// override), not "<unknown>" and not a command's name ("l3lab plan: ...").
bool located(const std::string& line) {
    static const std::regex re(R"(^(<override [^>]*>|[^\s:<][^\s:]*)(:\d+(:\d+)?)?: \S)");
    return std::regex_search(line, re);
}

// ---------------------------------------------------------------------------------------------
// The data the data fixtures break, made in the working directory of the commands.

std::string corpus_jsonl(uint64_t first_seed, int documents) {
    std::string out;
    for (int d = 0; d < documents; ++d) out += nlohmann::json{{"text", test::sample_text(first_seed + d, 400)}}.dump() + "\n";
    return out;
}

void make_data(const fs::path& root) {
    const fs::path data = root / "data";
    fs::create_directories(data);
    test::write_bytes((data / "tok.model").string(), test::small_tokenizer_bytes(400));
    test::write_bytes((data / "corpus.jsonl").string(), corpus_jsonl(7000, 120));
    data::TokenizeOptions o;
    o.threads = 1;
    o.val_fraction = 0.2;
    data::tokenize_corpus(test::small_tokenizer(), "data/tok.model", {(data / "corpus.jsonl").string()},
                          (data / "shards").string(), o);

    // Another tokenizer of the same size, trained on other text: its sha256 differs.
    std::vector<std::string> docs;
    for (uint64_t i = 0; i < 40; ++i) docs.push_back(test::sample_text(90000 + i, 2500) + " zebra quokka " + std::to_string(i));
    size_t next = 0;
    data::TokenizerTrainOptions t;
    t.vocab_size = 400;
    t.threads = 1;
    test::write_bytes((data / "other.model").string(), data::train_tokenizer(
                                                            [&](std::string& d) {
                                                                if (next == docs.size()) return false;
                                                                d = docs[next++];
                                                                return true;
                                                            },
                                                            t));
    test::Rng rng{99};
    std::string garbage(3000, '\0');
    for (auto& c : garbage) c = static_cast<char>(rng.next());
    test::write_bytes((data / "garbage.model").string(), garbage);
    fs::create_directories(data / "empty");

    const int bos = test::small_tokenizer().bos_id();
    auto u16 = [](std::vector<int> v) { return std::vector<uint16_t>(v.begin(), v.end()); };
    fs::create_directories(data / "magic");
    test::write_raw_shard((data / "magic" / "train_000000.bin").string(), 20240521, 1, 3, u16({bos, 5, 6}));
    fs::create_directories(data / "truncated");
    test::write_raw_shard((data / "truncated" / "train_000000.bin").string(), 20240520, 1, 50, u16({bos, 5, 6}));
    fs::create_directories(data / "big-ids");
    test::write_raw_shard((data / "big-ids" / "train_000000.bin").string(), 20240520, 1, 5, u16({bos, 5, 399, 400, 7}));
    fs::create_directories(data / "gpt2");
    test::write_raw_shard((data / "gpt2" / "fineweb_train_000000.bin").string(), 20240520, 1, 4, u16({50256, 464, 3290, 13}));
    fs::create_directories(data / "uint32");
    test::write_shard((data / "uint32" / "train_000000.bin").string(), {bos, 5, 6, 70000}, 2);

    // Copies of the good shards with one thing wrong in or beside the manifest.
    auto copy_shards = [&](const char* name) {
        fs::copy(data / "shards", data / name, fs::copy_options::recursive);
        return data / name;
    };
    test::write_bytes((copy_shards("bad-manifest") / "manifest.json").string(), "{\"format\": \"l3lab token shards\",\n  \"version\": 1,,\n}");
    const fs::path missing = copy_shards("missing-shard");
    for (const auto& e : fs::directory_iterator(missing))
        if (e.path().filename().string().rfind("val_", 0) == 0) fs::remove(e.path());
    const fs::path recounted = copy_shards("recounted");
    data::Manifest m = data::Manifest::read((recounted / "manifest.json").string());
    for (auto& f : m.files)
        if (f.split == "train") f.tokens += 1;
    test::write_bytes((recounted / "manifest.json").string(), m.to_json());
    // A shard whose first token is not BOS, listed correctly in its manifest.
    const fs::path no_bos = data / "no-bos";
    fs::create_directories(no_bos);
    test::write_shard((no_bos / "train_000000.bin").string(), {5, bos, 6, 7});
    data::Manifest nb = data::Manifest::read((data / "shards" / "manifest.json").string());
    nb.files = {{"train_000000.bin", "train", 4, 1, std::string(64, '0'), "", {}}};
    test::write_bytes((no_bos / "manifest.json").string(), nb.to_json());
}

struct Fixture {
    fs::path path;
    std::vector<std::string> expect;    // the first stderr line contains expect[0]; later ones anywhere
    std::vector<std::vector<std::string>> commands;
};

std::vector<Fixture> fixtures_in(const fs::path& dir, const std::vector<std::vector<std::string>>& default_commands) {
    std::vector<Fixture> out;
    for (const auto& e : fs::directory_iterator(dir)) {
        if (e.path().extension() != ".yaml") continue;
        Fixture f{e.path(), {}, {}};
        for (auto [key, value] : test::fixture_header(e.path())) {
            if (!value.empty() && value.back() == '\r') value.pop_back();
            if (key == "expect" || key == "expect-also") f.expect.push_back(value);
            if (key == "commands") {
                std::istringstream words(value);
                std::string w;
                while (words >> w) f.commands.push_back(w == "sweep-plan" ? std::vector<std::string>{"sweep", "plan"}
                                                                          : std::vector<std::string>{w});
            }
        }
        if (f.commands.empty()) f.commands = default_commands;
        out.push_back(std::move(f));
    }
    std::sort(out.begin(), out.end(), [](const Fixture& a, const Fixture& b) { return a.path < b.path; });
    return out;
}

// Runs every command of every fixture in a fresh working directory holding `data/`; returns the count.
int check_fixtures(const std::vector<Fixture>& fixtures, const fs::path& data_root) {
    int runs = 0;
    for (const auto& f : fixtures) {
        SCOPED_TRACE(f.path.string());
        EXPECT_FALSE(f.expect.empty()) << "the fixture lacks its `# expect:` line";
        if (f.expect.empty()) continue;
        for (const auto& command : f.commands) {
            test::TempDir cwd;
            if (!data_root.empty()) fs::create_directory_symlink(data_root / "data", cwd.path() / "data");
            const auto before = listing(cwd.path());
            std::vector<std::string> args = command;
            args.push_back(f.path.string());
            const auto r = run_l3lab(args, cwd.path().string());
            ++runs;
            const std::string what = "l3lab " + command[0] + (command.size() > 1 ? " " + command[1] : "");
            EXPECT_FALSE(r.timed_out) << what << " hung (killed after " << timeout_s() << " s)";
            EXPECT_EQ(r.code, 2) << what << "\nstderr:\n" << r.err;
            EXPECT_TRUE(r.out.empty()) << what << " wrote to stdout:\n" << r.out;
            EXPECT_EQ(test::crash_trace_in(r.err), "") << what << "\n" << r.err;
            const std::string first = test::first_line(r.err);
            // L3LAB_SHOW_ERRORS=1 prints each stderr: what a new fixture's `# expect:` lines should hold.
            if (std::getenv("L3LAB_SHOW_ERRORS")) std::printf("%s: %s:\n%s", f.path.filename().c_str(), what.c_str(), r.err.c_str());
            EXPECT_NE(first.find(f.expect[0]), std::string::npos) << what << "\nfirst line: " << first << "\nexpected: " << f.expect[0];
            EXPECT_TRUE(located(first)) << what << ": the first line is not located: " << first;
            for (size_t i = 1; i < f.expect.size(); ++i)
                EXPECT_NE(r.err.find(f.expect[i]), std::string::npos) << what << "\nstderr:\n" << r.err << "\nexpected also: " << f.expect[i];
            EXPECT_NE(r.err.find("in the configuration; nothing was run."), std::string::npos) << what << "\n" << r.err;
            EXPECT_EQ(listing(cwd.path()), before) << what << " created files (a run or sweep directory?)";
        }
    }
    return runs;
}

}  // namespace

TEST(BadInputCorpus, ExperimentFilesExitTwoThroughTheBinary) {
    auto fixtures = fixtures_in(kFixtures / "bad_configs", {{"config"}, {"plan"}, {"train"}});
    ASSERT_GE(fixtures.size(), 50u);
    int runs = check_fixtures(fixtures, {});
    std::printf("[ corpus   ] %zu experiment files, %d runs of the binary\n", fixtures.size(), runs);
}

TEST(BadInputCorpus, DataProblemsExitTwoBeforeAnyRunDirectory) {
    test::TempDir root;
    make_data(root.path());
    auto fixtures = fixtures_in(kFixtures / "bad_configs" / "data", {{"train"}});
    ASSERT_GE(fixtures.size(), 15u);
    // The base the fixtures break is itself good: config and plan pass (train would start training).
    test::TempDir cwd;
    fs::create_directory_symlink(root.path() / "data", cwd.path() / "data");
    auto ok = run_l3lab({"plan", (kFixtures / "bad_configs" / "data" / "base-data.yaml.inc").string()}, cwd.path().string());
    EXPECT_EQ(ok.code, 0) << ok.err;
    int runs = check_fixtures(fixtures, root.path());
    std::printf("[ corpus   ] %zu data fixtures, %d runs of the binary\n", fixtures.size(), runs);
}

TEST(BadInputCorpus, SweepFilesExitTwoThroughTheBinary) {
    auto fixtures = fixtures_in(kFixtures / "bad_sweeps", {{"sweep", "plan"}});
    ASSERT_GE(fixtures.size(), 30u);
    int runs = check_fixtures(fixtures, {});
    std::printf("[ corpus   ] %zu sweep files, %d runs of the binary\n", fixtures.size(), runs);
}

// ---------------------------------------------------------------------------------------------
// Mutation fuzzing of the shipped experiments and sweeps.

namespace {

int env_int(const char* name, int fallback) {
    const char* v = std::getenv(name);
    return v && *v ? std::atoi(v) : fallback;
}

// A copy of experiments/ and sweeps/ in which mutated files are written, so that `extends:` and
// `experiment:` paths resolve as they do in the repository.
struct FuzzTree {
    test::TempDir dir;
    std::vector<fs::path> experiments, sweeps;  // originals, in the copy
    FuzzTree() {
        for (const char* sub : {"experiments", "sweeps"}) {
            fs::copy(test::kSourceDir / sub, dir.path() / sub, fs::copy_options::recursive);
            for (const auto& e : fs::directory_iterator(dir.path() / sub))
                if (e.path().extension() == ".yaml") (std::string(sub) == "sweeps" ? sweeps : experiments).push_back(e.path());
        }
        std::sort(experiments.begin(), experiments.end());
        std::sort(sweeps.begin(), sweeps.end());
    }
};

struct FuzzStats {
    int cases = 0, exit0 = 0, exit2 = 0, failures = 0;
    double seconds = 0, slowest = 0;
};

// One case: `target` is replaced by `text`, the command runs on `run_on` (the target itself, or a file
// that extends it), and the original is put back.
void fuzz_case(const std::vector<std::string>& command, const fs::path& target, const fs::path& run_on,
               const std::string& text, const fs::path& cwd, const std::string& label, FuzzStats& stats) {
    const std::string original = test::read_bytes(target.string());
    test::write_bytes(target.string(), text);
    std::vector<std::string> args = command;
    args.push_back(run_on.string());
    const auto before = listing(cwd);
    const auto r = run_l3lab(args, cwd.string());
    test::write_bytes(target.string(), original);
    ++stats.cases;
    stats.seconds += r.seconds;
    stats.slowest = std::max(stats.slowest, r.seconds);
    std::string problem;
    if (r.timed_out) problem = "hung: killed after " + std::to_string(timeout_s()) + " s";
    else if (r.signaled) problem = "killed by signal " + std::to_string(r.code - 128);
    else if (r.code != 0 && r.code != 2) problem = "exit code " + std::to_string(r.code) + " (expected 0 or 2)";
    else if (!test::crash_trace_in(r.err + r.out).empty()) problem = "crash trace '" + test::crash_trace_in(r.err + r.out) + "' in the output";
    else if (r.code == 2 && !located(test::first_line(r.err))) problem = "the first error line is not located";
    else if (r.code == 2 && r.err.find("in the configuration; nothing was run.") == std::string::npos) problem = "no error summary";
    else if (r.code == 0 && r.out.empty()) problem = "exit 0 without output";
    else if (listing(cwd) != before) problem = "files were created in the working directory";
    if (r.code == 0) ++stats.exit0;
    if (r.code == 2) ++stats.exit2;
    if (problem.empty()) return;
    ++stats.failures;
    // Keep the input for a reproducer; the message says how to rerun exactly this case.
    const fs::path keep = fs::temp_directory_path() / ("l3lab-fuzz-" + label + ".yaml");
    test::write_bytes(keep.string(), text);
    std::string cmd;
    for (const auto& a : args) cmd += " " + a;
    ADD_FAILURE() << label << ": " << problem << "\n  command: l3lab" << cmd << "\n  mutated " << target.filename()
                  << " kept at " << keep << "\n  stderr:\n" << r.err.substr(0, 3000);
}

// Seeded cases over `originals`; a quarter of them mutate a file that another one extends.
FuzzStats fuzz(FuzzTree& tree, bool sweeps, int cases, uint64_t seed) {
    FuzzStats stats;
    test::FuzzRng rng{seed};
    const auto& originals = sweeps ? tree.sweeps : tree.experiments;
    std::map<fs::path, std::string> text;
    for (const auto& p : tree.experiments) text[p] = test::read_bytes(p.string());
    for (const auto& p : tree.sweeps) text[p] = test::read_bytes(p.string());
    const int only = env_int("L3LAB_FUZZ_ONLY", -1);
    for (int i = 0; i < cases; ++i) {
        fs::path target = originals[rng.below(originals.size())], run_on = target;
        std::vector<std::string> command = sweeps ? std::vector<std::string>{"sweep", "plan"} : std::vector<std::string>{"plan"};
        if (!sweeps && rng.below(5) == 0) command = {"config"};
        else if (!sweeps && rng.below(4) == 0) command.push_back("--json");
        if (rng.below(4) == 0) {
            // Mutate the base a sweep or an experiment builds on.
            target = tree.dir.path() / "experiments" / (rng.below(2) ? "base.yaml" : "debug.yaml");
            if (!sweeps && target.filename() == "base.yaml") run_on = tree.dir.path() / "experiments" / "debug.yaml";
            if (!sweeps && target.filename() == "debug.yaml") run_on = target;
            if (sweeps) run_on = tree.dir.path() / "sweeps" / (target.filename() == "debug.yaml" ? "tiny.yaml" : "miniseries.yaml");
        }
        std::string mutated = test::mutate(text[target], rng);
        if (only >= 0 && i != only) continue;
        const std::string label = std::string(sweeps ? "sweep" : "experiment") + "-seed" + std::to_string(seed) + "-case" + std::to_string(i);
        fuzz_case(command, target, run_on, mutated, tree.dir.path(), label, stats);
    }
    return stats;
}

void report(const char* what, const FuzzStats& s, uint64_t seed) {
    std::printf("[ fuzz     ] %s: %d mutated files (seed %llu): %d exit 0, %d exit 2, %d failures; %.1f s in the binary, slowest %.2f s\n",
                what, s.cases, static_cast<unsigned long long>(seed), s.exit0, s.exit2, s.failures, s.seconds, s.slowest);
}

}  // namespace

// L3LAB_FUZZ_CASES=N sets the number of experiment cases (default 500; sweeps get half as many),
// L3LAB_FUZZ_SEED another seed, L3LAB_FUZZ_ONLY=i reruns one case.
TEST(BadInputFuzz, MutatedExperimentsExitZeroOrTwoWithALocatedMessage) {
    FuzzTree tree;
    ASSERT_GE(tree.experiments.size(), 5u);
    const uint64_t seed = static_cast<uint64_t>(env_int("L3LAB_FUZZ_SEED", 20240520));
    FuzzStats s = fuzz(tree, false, env_int("L3LAB_FUZZ_CASES", 500), seed);
    report("experiments", s, seed);
    EXPECT_EQ(s.failures, 0);
    if (env_int("L3LAB_FUZZ_ONLY", -1) < 0) {
        EXPECT_GT(s.exit2, s.cases / 3);  // the mutations do break things
    }
}

TEST(BadInputFuzz, MutatedSweepsExitZeroOrTwoWithALocatedMessage) {
    FuzzTree tree;
    ASSERT_GE(tree.sweeps.size(), 3u);
    const uint64_t seed = static_cast<uint64_t>(env_int("L3LAB_FUZZ_SEED", 20240520)) + 1;
    const char* n = std::getenv("L3LAB_FUZZ_CASES");
    FuzzStats s = fuzz(tree, true, n ? std::atoi(n) / 2 : 250, seed);
    report("sweeps", s, seed);
    EXPECT_EQ(s.failures, 0);
    if (env_int("L3LAB_FUZZ_ONLY", -1) < 0) {
        EXPECT_GT(s.exit2, s.cases / 3);
    }
}
