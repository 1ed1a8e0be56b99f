// Sweep files and `l3lab sweep plan`: expansion, validation, ids, directory names, L3 placement.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "runner/config/errors.h"
#include "runner/sweep/sweep.h"
#include "test_util.h"

using namespace l3lab;
using l3lab::test::TempDir;

namespace {

// A sweep file next to a small experiment (the debug model) in a temp dir.
std::string write_sweep(const TempDir& dir, const std::string& body, const std::string& experiment_extra = "") {
    dir.write("exp.yaml", "extends: [" + (test::kSourceDir / "experiments" / "debug.yaml").string() + "]\nname: exp\n" +
                              experiment_extra);
    return dir.write("sweep.yaml", "name: s\nexperiment: exp.yaml\n" + body);
}

std::string load_error(const std::string& path) {
    try {
        sweep::load_sweep(path);
    } catch (const config::ConfigException& e) {
        return e.what();
    }
    return "";
}

}  // namespace

TEST(Sweep, ExpansionOrderFirstKeySlowestSeedsFastest) {
    TempDir dir;
    auto s = sweep::load_sweep(write_sweep(dir,
                                           "grid:\n  model.depth: [2, 4]\n  model.softcap: [10, 20, 30]\n"
                                           "zip:\n  - batch.device_batch_size: [2, 4]\n    eval.every: [5, 7]\n"
                                           "seeds: [1, 2]\n"));
    ASSERT_EQ(s.cells.size(), 2u * 3 * 2 * 2);
    EXPECT_EQ(s.swept_keys, (std::vector<std::string>{"model.depth", "model.softcap", "batch.device_batch_size",
                                                      "eval.every", "seed"}));
    const auto& c0 = s.cells[0];
    EXPECT_EQ(c0.experiment.model.depth, 2);
    EXPECT_EQ(c0.experiment.model.softcap, 10);
    EXPECT_EQ(c0.experiment.batch.device_batch_size, 2);
    EXPECT_EQ(c0.experiment.eval_every, 5);
    EXPECT_EQ(c0.experiment.seed, 1);
    EXPECT_EQ(s.cells[1].experiment.seed, 2);                        // seeds fastest
    EXPECT_EQ(s.cells[2].experiment.batch.device_batch_size, 4);     // then the zip group, together
    EXPECT_EQ(s.cells[2].experiment.eval_every, 7);
    EXPECT_EQ(s.cells[4].experiment.model.softcap, 20);
    EXPECT_EQ(s.cells[12].experiment.model.depth, 4);                // first grid key slowest
    EXPECT_EQ(s.cells[12].experiment.model.softcap, 10);
    EXPECT_EQ(c0.dir, "0000-depth=2,softcap=10.0,device_batch_size=2,every=5,seed=1");
    EXPECT_EQ(s.cells[23].dir, "0023-depth=4,softcap=30.0,device_batch_size=4,every=7,seed=2");
    for (size_t i = 0; i < s.cells.size(); ++i) EXPECT_EQ(s.cells[i].index, static_cast<int>(i));
    EXPECT_EQ(s.on_failure, "continue");
    EXPECT_EQ(s.sweep_dir(), "sweeps_out/s");
}

TEST(Sweep, DefaultSeedIsNotSwept) {
    TempDir dir;
    auto s = sweep::load_sweep(write_sweep(dir, "grid:\n  model.depth: [2, 4]\n"));
    ASSERT_EQ(s.cells.size(), 2u);
    EXPECT_EQ(s.cells[0].experiment.seed, 42);
    EXPECT_EQ(s.cells[1].dir, "0001-depth=4");
}

TEST(Sweep, ZipLengthMismatch) {
    TempDir dir;
    auto path = write_sweep(dir, "zip:\n  - model.depth: [2, 4, 6]\n    batch.device_batch_size: [2, 4]\n");
    auto msg = load_error(path);
    EXPECT_NE(msg.find(path + ":5:30: zip[0].batch.device_batch_size: has 2 values but model.depth has 3"),
              std::string::npos)
        << msg;
}

TEST(Sweep, UnknownKeysAreLocatedWithSuggestions) {
    TempDir dir;
    auto path = write_sweep(dir, "gird:\n  model.depth: [2]\nset:\n  model.dpeth: 3\n");
    auto msg = load_error(path);
    EXPECT_NE(msg.find(path + ":3:1: gird: unknown sweep key; did you mean 'grid'?"), std::string::npos) << msg;
    EXPECT_NE(msg.find(path + ":6:3: set.model.dpeth: 'model.dpeth' is not an experiment key; did you mean 'model.depth'?"),
              std::string::npos)
        << msg;
}

TEST(Sweep, OwnKeysAreValidated) {
    TempDir dir;
    auto path = write_sweep(dir, "on_failure: retry\nseeds: [1, x]\ngrid:\n  model.depth: []\n  seed: [1]\n");
    auto msg = load_error(path);
    EXPECT_NE(msg.find("on_failure: expected continue or abort, got 'retry'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("seeds: expected a seed (an integer >= 0), got 'x'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("grid.model.depth: expected a non-empty list of values"), std::string::npos) << msg;
    EXPECT_NE(msg.find("grid.seed: set seeds with the top-level `seeds:` list"), std::string::npos) << msg;
    TempDir d2;
    EXPECT_NE(load_error(d2.write("s.yaml", "name: 'a b'\n")).find("missing: the base experiment"), std::string::npos);
}

TEST(Sweep, BadValueInGridNamesTheCellAndTheSweepLocation) {
    TempDir dir;
    auto path = write_sweep(dir, "grid:\n  model.depth: [2, abc]\nseeds: [1, 2]\n");
    auto msg = load_error(path);
    // Reported once (not per seed), at the list item in the sweep file, with the first failing cell.
    EXPECT_NE(msg.find(path + ":4:20: model.depth: cell 2 [depth=abc,seed=1]: "), std::string::npos) << msg;
    EXPECT_EQ(msg.find("cell 3"), std::string::npos) << msg;
    // A plan-level error (no such block) is located the same way.
    auto path2 = write_sweep(dir, "grid:\n  model.l3.after_layers: [[0], [5]]\n");
    auto msg2 = load_error(path2);
    EXPECT_NE(msg2.find(path2 + ":4:32: model.l3.after_layers: cell 1 [after_layers=5]:"), std::string::npos) << msg2;
}

TEST(Sweep, StableIds) {
    TempDir dir;
    const std::string body = "grid:\n  model.depth: [2, 4]\nseeds: [1, 2]\n";
    auto a = sweep::load_sweep(write_sweep(dir, body));
    auto b = sweep::load_sweep(write_sweep(dir, body));
    ASSERT_EQ(a.cells.size(), 4u);
    std::set<std::string> ids;
    for (size_t i = 0; i < a.cells.size(); ++i) {
        EXPECT_EQ(a.cells[i].id, b.cells[i].id);
        EXPECT_EQ(a.cells[i].id.size(), 12u);
        ids.insert(a.cells[i].id);
    }
    EXPECT_EQ(ids.size(), 4u);
    // A non-swept key changed in the base experiment: every id changes, no directory name does.
    auto c = sweep::load_sweep(write_sweep(dir, body, "eval:\n  every: 3\n"));
    for (size_t i = 0; i < a.cells.size(); ++i) {
        EXPECT_NE(a.cells[i].id, c.cells[i].id);
        EXPECT_EQ(a.cells[i].dir, c.cells[i].dir);
    }
}

TEST(Sweep, DirectoryNamesAreSanitized) {
    TempDir dir;
    auto s = sweep::load_sweep(write_sweep(dir, "grid:\n  data.train: ['my shards/*.bin', x]\n  model.l3.after_layers: [[], [0, 1]]\n",
                                           "model:\n  depth: 2\n"));
    ASSERT_EQ(s.cells.size(), 4u);
    EXPECT_EQ(s.cells[0].dir, "0000-train=my_shards__.bin,after_layers=none");
}

TEST(Sweep, L3PlacementByFraction) {
    TempDir dir;
    auto s = sweep::load_sweep(write_sweep(dir,
                                           "grid:\n  model.depth: [4, 10, 12]\n  l3_at_fraction: [[], [0.25, 0.75], [0.01, 1.0, 0.02]]\n"));
    ASSERT_EQ(s.cells.size(), 9u);
    using V = std::vector<long long>;
    EXPECT_EQ(s.cells[0].experiment.model.l3.after_layers, V{});
    EXPECT_EQ(s.cells[1].experiment.model.l3.after_layers, (V{0, 2}));   // round(1)-1, round(3)-1
    EXPECT_EQ(s.cells[2].experiment.model.l3.after_layers, (V{0, 3}));   // clamped, deduplicated, sorted
    EXPECT_EQ(s.cells[4].experiment.model.l3.after_layers, (V{1, 7}));   // round(2.5)=2 (half to even), round(7.5)=8
    EXPECT_EQ(s.cells[7].experiment.model.l3.after_layers, (V{2, 8}));
    EXPECT_EQ(s.cells[1].dir, "0001-depth=4,l3_at_fraction=0.25+0.75");
    EXPECT_EQ(s.cells[0].dir, "0000-depth=4,l3_at_fraction=none");
    EXPECT_EQ(s.cells[1].overrides.back(), "model.l3.after_layers=[0, 2]");
    EXPECT_GT(s.cells[1].plan.shape.counts.l3_embeds, 0);

    auto bad = write_sweep(dir, "set:\n  model.l3.after_layers: [0]\ngrid:\n  l3_at_fraction: [[1.5]]\n");
    auto msg = load_error(bad);
    EXPECT_NE(msg.find("grid.l3_at_fraction: expected a depth fraction in (0, 1], got '1.5'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("cannot be combined with model.l3.after_layers"), std::string::npos) << msg;
}

TEST(Sweep, DuplicateCellsAreRefused) {
    TempDir dir;
    auto msg = load_error(write_sweep(dir, "grid:\n  model.depth: [2, 2.0]\n"));
    EXPECT_NE(msg.find("cells 0 and 1 resolve to the same experiment"), std::string::npos) << msg;
}

TEST(Sweep, PlanJson) {
    TempDir dir;
    auto path = write_sweep(dir, "grid:\n  model.depth: [2, 4]\n");
    auto r = test::run_cli({"sweep", "plan", path, "--json", "--peak-flops", "1e12", "--mfu", "0.5"});
    ASSERT_EQ(r.code, 0) << r.err;
    auto j = nlohmann::json::parse(r.out);
    for (const char* k : {"name", "output", "cells", "total_flops", "device_hours", "throughput"})
        EXPECT_TRUE(j.contains(k)) << k;
    ASSERT_EQ(j["cells"].size(), 2u);
    const auto& c = j["cells"][1];
    for (const char* k : {"index", "id", "dir", "overrides", "swept", "params", "scaling_params", "flops_per_token",
                          "num_iterations", "total_batch_size", "total_tokens", "total_flops", "device_hours"})
        EXPECT_TRUE(c.contains(k)) << k;
    EXPECT_EQ(c["swept"]["model.depth"], "4");
    EXPECT_EQ(c["overrides"][0], "model.depth=4");
    EXPECT_TRUE(c["params"].contains("transformer_matrices"));
    EXPECT_DOUBLE_EQ(c["device_hours"].get<double>(), c["total_flops"].get<double>() / (1e12 * 0.5) / 3600);
    EXPECT_DOUBLE_EQ(j["throughput"]["mfu"].get<double>(), 0.5);
}

TEST(Sweep, CliUsage) {
    auto r = test::run_cli({"sweep", "launch", "x.yaml"});
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find("unknown sweep subcommand 'launch' (the sweep subcommands are: plan, run, status, collect, slurm)"),
              std::string::npos)
        << r.err;
    EXPECT_EQ(test::run_cli({"sweep", "run", "x.yaml"}).code, 2);  // no such file
    EXPECT_EQ(test::run_cli({"sweep"}).code, 2);
    EXPECT_EQ(test::run_cli({"sweep", "plan"}).code, 2);
    EXPECT_EQ(test::run_cli({"sweep", "plan", "x.yaml", "--mfu", "2"}).code, 2);
    EXPECT_EQ(test::run_cli({"sweep", "--help"}).code, 0);
}

TEST(Sweep, ShippedSweepsPlan) {
    const auto dir = test::kSourceDir / "sweeps";
    auto s = sweep::load_sweep((dir / "scaling_laws.yaml").string());
    EXPECT_EQ(s.cells.size(), 4u * 7 * 2);
    EXPECT_EQ(s.cells[1].dir, "0001-target_flops=1.0e+18,depth=8,l3_at_fraction=0.25+0.75,seed=42");
    EXPECT_EQ(s.cells[1].experiment.model.l3.after_layers, (std::vector<long long>{1, 5}));
    EXPECT_EQ(s.cells[0].plan.horizon_rule, "target_flops");
    auto r = test::run_cli({"sweep", "plan", (dir / "scaling_laws.yaml").string()});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("total: 56 cells"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("device-hours = FLOPs / (peak 9.89e+14 FLOP/s x MFU 0.45)"), std::string::npos) << r.out;

    auto m = sweep::load_sweep((dir / "miniseries.yaml").string());
    ASSERT_EQ(m.cells.size(), 8u);
    EXPECT_EQ(m.cells[3].experiment.batch.device_batch_size, 32);
    EXPECT_EQ(m.cells[4].experiment.model.depth, 20);
    EXPECT_EQ(m.cells[4].experiment.batch.device_batch_size, 16);
    EXPECT_EQ(m.cells[4].dir, "0004-depth=20,device_batch_size=16");

    auto t = sweep::load_sweep((dir / "tiny.yaml").string());
    ASSERT_EQ(t.cells.size(), 12u);
    EXPECT_EQ(t.cells[3].dir, "0003-target_flops=3.0e+10,depth=2,l3_at_fraction=0.5");
    EXPECT_EQ(t.cells[3].experiment.model.l3.after_layers, (std::vector<long long>{0}));
    EXPECT_TRUE(t.cells[2].experiment.model.l3.after_layers.empty());
    EXPECT_EQ(t.cells[11].plan.horizon_rule, "target_flops");
}
