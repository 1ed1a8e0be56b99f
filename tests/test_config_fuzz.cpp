// The mutation fuzzing of tests/test_bad_input.cpp, in-process, for the sanitizer build
// (l3lab_sanitize_tests): the config, plan, shape and sweep code compiled with AddressSanitizer and
// UBSan loads and plans every mutated file; only ConfigException may come out, every error located.
// Files that load are also written back with `l3lab config`'s emitter and reloaded: the same config.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <map>

#include "bad_input_util.h"
#include "runner/config/errors.h"
#include "runner/config/experiment.h"
#include "runner/plan/plan.h"
#include "runner/sweep/sweep.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace l3lab;

namespace {

int env_int(const char* name, int fallback) {
    const char* v = std::getenv(name);
    return v && *v ? std::atoi(v) : fallback;
}

void spill(const fs::path& p, const std::string& text) {
    std::ofstream(p, std::ios::binary | std::ios::trunc).write(text.data(), static_cast<std::streamsize>(text.size()));
}

struct Outcome {
    int loaded = 0, refused = 0;
};

// Every error must say where: a file (or override) and, from the file's own text, a line.
void check_errors(const config::ConfigException& e, const std::string& context) {
    EXPECT_FALSE(e.errors().empty()) << context;
    for (const auto& err : e.errors()) {
        EXPECT_FALSE(err.where.file.empty()) << context << "\nunlocated: " << err.str();
        EXPECT_NE(err.where.file, "<unknown>") << context;
        EXPECT_FALSE(err.message.empty()) << context;
    }
}

void run_case(bool sweep, const fs::path& run_on, const std::string& context, Outcome& out) {
    try {
        if (sweep) {
            auto s = sweep::load_sweep(run_on.string());
            EXPECT_FALSE(sweep::plan_table(s, {}).empty()) << context;
            EXPECT_FALSE(sweep::plan_json(s, {}).empty()) << context;
        } else {
            auto e = config::load_experiment(run_on.string(), {});
            auto p = plan::make_plan(e);
            (void)p;
            // Round trip through the emitter of `l3lab config`.
            const std::string yaml = config::to_yaml(e);
            const fs::path back = run_on.parent_path() / "roundtrip.yaml";
            spill(back, yaml);
            auto again = config::load_experiment(back.string(), {});
            EXPECT_EQ(config::to_yaml(again), yaml) << context;
        }
        ++out.loaded;
    } catch (const config::ConfigException& e) {
        ++out.refused;
        check_errors(e, context + "\n" + e.what());
    } catch (const std::exception& e) {
        ADD_FAILURE() << context << "\nescaped: " << typeid(e).name() << ": " << e.what();
    }
}

Outcome fuzz(bool sweep, int cases, uint64_t seed) {
    test::TempDir dir;
    for (const char* sub : {"experiments", "sweeps"}) fs::copy(test::kSourceDir / sub, dir.path() / sub, fs::copy_options::recursive);
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(dir.path() / (sweep ? "sweeps" : "experiments")))
        if (e.path().extension() == ".yaml") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    std::map<fs::path, std::string> original;
    for (const char* sub : {"experiments", "sweeps"})
        for (const auto& e : fs::directory_iterator(dir.path() / sub)) original[e.path()] = test::slurp(e.path());
    Outcome out;
    test::FuzzRng rng{seed};
    for (int i = 0; i < cases; ++i) {
        fs::path target = files[rng.below(files.size())], run_on = target;
        if (rng.below(4) == 0) {
            target = dir.path() / "experiments" / (rng.below(2) ? "base.yaml" : "debug.yaml");
            run_on = sweep ? dir.path() / "sweeps" / (target.filename() == "debug.yaml" ? "tiny.yaml" : "miniseries.yaml")
                           : dir.path() / "experiments" / "debug.yaml";
        }
        const std::string text = test::mutate(original[target], rng);
        spill(target, text);
        run_case(sweep, run_on, "case " + std::to_string(i) + " (seed " + std::to_string(seed) + "), " +
                                    target.filename().string() + " mutated to:\n" + text.substr(0, 2000),
                 out);
        spill(target, original[target]);
    }
    return out;
}

}  // namespace

TEST(ConfigFuzzInProcess, MutatedExperimentsLoadOrRaiseLocatedConfigErrors) {
    const uint64_t seed = static_cast<uint64_t>(env_int("L3LAB_FUZZ_SEED", 20240520)) + 100;
    const int n = env_int("L3LAB_FUZZ_CASES", 800);
    Outcome o = fuzz(false, n, seed);
    std::printf("[ fuzz     ] in-process experiments: %d mutated files (seed %llu): %d loaded and planned, %d refused\n",
                n, static_cast<unsigned long long>(seed), o.loaded, o.refused);
    EXPECT_GT(o.refused, n / 3);
}

TEST(ConfigFuzzInProcess, MutatedSweepsLoadOrRaiseLocatedConfigErrors) {
    const uint64_t seed = static_cast<uint64_t>(env_int("L3LAB_FUZZ_SEED", 20240520)) + 101;
    const int n = env_int("L3LAB_FUZZ_CASES", 800) / 4;  // a sweep plans up to 56 cells: slower under ASan
    Outcome o = fuzz(true, n, seed);
    std::printf("[ fuzz     ] in-process sweeps: %d mutated files (seed %llu): %d loaded and planned, %d refused\n", n,
                static_cast<unsigned long long>(seed), o.loaded, o.refused);
    EXPECT_GT(o.refused, n / 3);
}
