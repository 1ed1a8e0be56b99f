#!/usr/bin/python3
"""Tests of tools/scaling/fit.py on synthetic sweeps drawn from a known scaling law (CTest: scaling_fit).

The loss of a model with N parameters trained on D tokens is Chinchilla's parametric form
    L(N, D) = E + A / N^alpha + B / D^beta
and at a fixed compute C = K·N·D (K FLOPs per parameter per token) its minimum is at
    N*(C) = G · (C/K)^(beta/(alpha+beta)),   G = (alpha·A / (beta·B))^(1/(alpha+beta)),
    D*(C) = C / (K·N*),
so the fitted exponents must come out as a = beta/(alpha+beta) and b = alpha/(alpha+beta). The grid is the
shipped sweeps/scaling_laws.yaml one (budgets 1e18..1e19, the N of depths 8..20), so the quadratic's
approximation error is the one a real sweep has.

The same cells carry a core_score (the DCLM CORE metric, higher is better) that is an exact inverted parabola
in log10 N per budget, its maximum at the law's N*(C), for the --metric core_score tests.
"""
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np

FIT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fit.py")

# Chinchilla's fitted constants (Hoffmann et al. 2022, approach 3).
E, A, B, ALPHA, BETA = 1.69, 406.4, 410.7, 0.34, 0.28
K = 7.0                      # FLOPs per parameter per token: not 6, so using 6N instead of flops_per_token shows
L3_OFFSET = -0.02            # the L3 arm: the same law, 0.02 lower everywhere
BUDGETS = [1.0e18, 2.15e18, 4.64e18, 1.0e19]
OFF_GRID_BUDGET = 1.0e16     # its optimum (~1e7) lies below the smallest model: the fit must refuse it
DEPTHS = [8, 10, 12, 14, 16, 18, 20]
N_OF_DEPTH = {8: 41.9e6, 10: 70.1e6, 12: 110e6, 14: 164e6, 16: 235e6, 18: 324e6, 20: 435e6,
              22: 570e6, 24: 730e6}
TRUE_A = BETA / (ALPHA + BETA)
TRUE_B = ALPHA / (ALPHA + BETA)
EXPONENT_TOLERANCE = 0.01    # measured error on this grid: 0.0005 (a = 0.4521 vs 0.4516)
N_OPT_TOLERANCE = 0.03       # relative, per budget; measured: at most 1.1%
CORE_CURVATURE = 0.05        # core_score falls by this at one decade of N from the optimum
L3_CORE_OFFSET = 0.01        # the L3 arm's core_score: 0.01 higher everywhere (better, as its bpb is)

COLUMNS = ["index", "id", "dir", "state", "horizon.target_flops", "model.depth", "l3_at_fraction", "seed",
           "depth", "n_l3_layers", "target_flops", "target_param_data_ratio", "params_total", "params_scaling",
           "params_l3", "flops_per_token", "num_iterations", "total_batch_size", "tokens", "total_flops",
           "final_val_bpb", "min_val_bpb", "core_score", "wall_time_s", "step", "last_error"]


def loss(n, d, l3):
    return E + A / n ** ALPHA + B / d ** BETA + (L3_OFFSET if l3 else 0.0)


def true_n_opt(c):
    g = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA))
    return g * (c / K) ** TRUE_A


def core_peak(c, l3):
    return 0.1 + 0.04 * math.log10(c / 1e18) + (L3_CORE_OFFSET if l3 else 0.0)


def core(n, c, l3):
    """An inverted parabola in log10 N at each budget, its maximum core_peak at true_n_opt(c)."""
    return core_peak(c, l3) - CORE_CURVATURE * (math.log10(n) - math.log10(true_n_opt(c))) ** 2


def make_rows():
    """The cells of a 5-budget x 7-depth x L3 off/on sweep, plus failed, bpb-less and pending cells."""
    rows = []

    def add(budget, depth, l3, state="completed", bpb=True, error=""):
        n = N_OF_DEPTH[depth]
        fpt = K * n
        batch = 524288
        iters = max(1, round(budget / (fpt * batch)))
        tokens = iters * batch
        value = loss(n, tokens, l3)
        i = len(rows)
        frac = "0.25+0.75" if l3 else "none"
        rows.append({
            "index": i, "id": f"{i:012x}", "dir": f"{i:04d}-target_flops={budget:.3g},depth={depth},"
                                                 f"l3_at_fraction={frac},seed=42",
            "state": state, "horizon.target_flops": f"{budget:.2e}", "model.depth": depth,
            "l3_at_fraction": frac, "seed": 42, "depth": depth, "n_l3_layers": 2 if l3 else 0,
            "target_flops": budget, "target_param_data_ratio": -1, "params_total": int(3 * n),
            "params_scaling": int(n), "params_l3": int(n) if l3 else 0, "flops_per_token": fpt,
            "num_iterations": iters, "total_batch_size": batch, "tokens": tokens, "total_flops": fpt * tokens,
            "final_val_bpb": value if bpb else "", "min_val_bpb": value - 0.001 if bpb else "",
            "core_score": core(n, budget, l3) if bpb else "",
            "wall_time_s": 100.0 if bpb else "", "step": iters if bpb else 0, "last_error": error,
        })

    for budget in [OFF_GRID_BUDGET] + BUDGETS:
        for depth in DEPTHS:
            for l3 in (False, True):
                add(budget, depth, l3)
    # Cells the fit must leave out, placed where a bpb of 0 would wreck the 1e18 dense fit.
    add(1.0e18, 22, False, state="failed", bpb=False, error="CUDA out of memory")
    add(1.0e18, 24, False, state="completed", bpb=False)
    add(1.0e18, 24, True, state="pending", bpb=False)
    return rows


def write_csv(path, rows, columns=COLUMNS):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row.get(c, "") for c in columns])


def write_h5(path, rows):
    import h5py
    with h5py.File(path, "w") as f:
        group = f.create_group("cells")
        text = h5py.string_dtype("utf-8")
        for column in COLUMNS:
            values = [row[column] for row in rows]
            if all(isinstance(v, (int, float)) or v == "" for v in values) and column not in ("id", "dir"):
                group.create_dataset(column, data=np.array([np.nan if v == "" else v for v in values], float))
            else:
                group.create_dataset(column, data=[str(v) for v in values], dtype=text)


def run_fit(*args):
    proc = subprocess.run([sys.executable, FIT, *args], capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


class SyntheticSweep(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="l3lab-fit-")
        cls.sweep = os.path.join(cls.tmp, "scaling-laws")
        os.makedirs(cls.sweep)
        cls.rows = make_rows()
        write_csv(os.path.join(cls.sweep, "results.csv"), cls.rows)
        cls.rc, cls.out, cls.err = run_fit(cls.sweep)   # default --out: <sweep_dir>/analysis
        cls.analysis = os.path.join(cls.sweep, "analysis")
        with open(os.path.join(cls.analysis, "fit.json")) as f:
            cls.fit = json.load(f)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp)

    def test_runs_and_writes_every_output(self):
        self.assertEqual(self.rc, 0, self.err)
        for name in ("isoflop.png", "optimal.png", "l3_vs_dense.png"):
            with open(os.path.join(self.analysis, name), "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n", name)
            self.assertGreater(os.path.getsize(os.path.join(self.analysis, name)), 10000, name)
        with open(os.path.join(self.analysis, "report.md")) as f:
            report = f.read()
        for heading in ("## Cells", "## IsoFLOP fits", "## Compute-optimal power laws",
                        "## L3 vs dense at equal FLOPs", "## Warnings"):
            self.assertIn(heading, report)

    def test_exponents_match_the_law(self):
        for arm in ("dense", "l3"):
            law = self.fit["laws"][arm]
            self.assertEqual(law["n"]["points"], len(BUDGETS), arm)
            self.assertAlmostEqual(law["n"]["exponent"], TRUE_A, delta=EXPONENT_TOLERANCE, msg=arm)
            self.assertAlmostEqual(law["d"]["exponent"], TRUE_B, delta=EXPONENT_TOLERANCE, msg=arm)
            print(f"\n{arm}: a = {law['n']['exponent']:.4f} (true {TRUE_A:.4f}), "
                  f"b = {law['d']['exponent']:.4f} (true {TRUE_B:.4f})", file=sys.stderr)

    def test_optimum_per_budget_and_tokens_from_flops_per_token(self):
        fits = {f["budget"]: f for f in self.fit["fits"]["dense"]}
        for c in BUDGETS:
            f = fits[c]
            self.assertTrue(f["ok"], f["problem"])
            self.assertAlmostEqual(f["n_opt"] / true_n_opt(c), 1.0, delta=N_OPT_TOLERANCE, msg=c)
            self.assertEqual(f["d_method"], "flops_per_token")
            self.assertAlmostEqual(f["d_opt"] * K * f["n_opt"] / c, 1.0, delta=1e-9)   # not 6N
            self.assertAlmostEqual(f["ratio"], f["d_opt"] / f["n_opt"], delta=1e-9)

    def test_out_of_range_minimum_is_refused(self):
        for arm in ("dense", "l3"):
            f = next(f for f in self.fit["fits"][arm] if f["budget"] == OFF_GRID_BUDGET)
            self.assertFalse(f["ok"])
            self.assertIsNone(f["n_opt"])
            self.assertIsNone(f["d_opt"])
            self.assertTrue(any(w.startswith(f"{arm}, C = 1e+16: no N*") for w in self.fit["warnings"]),
                            self.fit["warnings"])

    def test_failed_and_missing_cells_excluded_and_counted(self):
        self.assertEqual(self.fit["cells_total"], len(self.rows))
        self.assertEqual(self.fit["cells_used"], (len(BUDGETS) + 1) * len(DEPTHS) * 2)
        excluded = {k: len(v) for k, v in self.fit["excluded"].items()}
        self.assertEqual(excluded, {"state failed": 1, "state pending": 1,
                                    "completed but missing final_val_bpb": 1})
        with open(os.path.join(self.analysis, "report.md")) as f:
            report = f.read()
        self.assertIn("| excluded: state failed | 1 |", report)
        self.assertIn("| excluded: completed but missing final_val_bpb | 1 |", report)
        f18 = next(f for f in self.fit["fits"]["dense"] if f["budget"] == 1.0e18)
        self.assertEqual(f18["cells"], len(DEPTHS))
        self.assertAlmostEqual(f18["n_max"], N_OF_DEPTH[20])

    def test_l3_vs_dense_at_equal_flops(self):
        rows = {r["budget"]: r for r in self.fit["comparison"] if r["arm"] == "l3"}
        self.assertEqual(sorted(rows), sorted([OFF_GRID_BUDGET] + BUDGETS))
        for c in BUDGETS:
            self.assertAlmostEqual(rows[c]["delta_best"], L3_OFFSET, delta=1e-9)
            self.assertAlmostEqual(rows[c]["delta_fit"], L3_OFFSET, delta=1e-6)
        self.assertAlmostEqual(rows[OFF_GRID_BUDGET]["delta_best"], L3_OFFSET, delta=1e-9)
        self.assertIsNone(rows[OFF_GRID_BUDGET]["delta_fit"])
        with open(os.path.join(self.analysis, "report.md")) as f:
            report = f.read()
        self.assertIn("(below 0: L3 is better at the same compute)", report)
        self.assertIn("N* at its minimum", report)
        self.assertIn("| dense fitted min | L3 fitted min |", report)
        self.assertIn("below 0: L3 better", self.out)

    def test_fit_json_keeps_the_names_it_had_before_core_score(self):
        self.assertFalse(self.fit["higher_is_better"])
        for f in self.fit["fits"]["dense"]:
            self.assertEqual(f["min_observed"], f["best_observed"])
            self.assertEqual(f["min_observed_dir"], f["best_observed_dir"])
            self.assertEqual(f["bpb_opt"], f["metric_opt"])
        for r in self.fit["comparison"]:
            self.assertEqual((r["dense_min"], r["l3_min"], r["delta_min"]),
                             (r["dense_best"], r["l3_best"], r["delta_best"]))

    def test_h5_input_gives_the_same_fit(self):
        try:
            import h5py  # noqa: F401
        except ImportError:
            self.skipTest("no h5py")
        path = os.path.join(self.tmp, "results.h5")
        write_h5(path, self.rows)
        out = os.path.join(self.tmp, "h5-analysis")
        rc, _, err = run_fit(path, "--out", out)
        self.assertEqual(rc, 0, err)
        with open(os.path.join(out, "fit.json")) as f:
            fit = json.load(f)
        self.assertEqual(fit["excluded"], self.fit["excluded"])
        for arm in ("dense", "l3"):
            self.assertAlmostEqual(fit["laws"][arm]["n"]["exponent"], self.fit["laws"][arm]["n"]["exponent"],
                                   delta=1e-12)


class CoreSweep(unittest.TestCase):
    """The same sweep fitted on core_score: higher is better, so N* is the parabola's maximum and L3 wins above 0."""
    BLANKED = (1.0e19, 20, False)   # a completed cell with a bpb but no CORE (budget, depth, l3)

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="l3lab-fit-core-")
        cls.rows = make_rows()
        budget, depth, l3 = cls.BLANKED
        blanked = [r for r in cls.rows if r["target_flops"] == budget and r["depth"] == depth
                   and (r["n_l3_layers"] > 0) == l3 and r["state"] == "completed"]
        assert len(blanked) == 1
        blanked[0]["core_score"] = ""
        path = os.path.join(cls.tmp, "results.csv")
        write_csv(path, cls.rows)
        cls.analysis = os.path.join(cls.tmp, "core-analysis")
        cls.rc, cls.out, cls.err = run_fit(path, "--metric", "core_score", "--out", cls.analysis)
        with open(os.path.join(cls.analysis, "fit.json")) as f:
            cls.fit = json.load(f)
        with open(os.path.join(cls.analysis, "report.md")) as f:
            cls.report = f.read()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp)

    def test_runs_and_writes_every_output(self):
        self.assertEqual(self.rc, 0, self.err)
        for name in ("isoflop.png", "optimal.png", "l3_vs_dense.png"):
            self.assertGreater(os.path.getsize(os.path.join(self.analysis, name)), 10000, name)
        self.assertEqual(self.fit["metric"], "core_score")
        self.assertTrue(self.fit["higher_is_better"])

    def test_n_opt_at_the_maximum(self):
        for arm, l3 in (("dense", False), ("l3", True)):
            fits = {f["budget"]: f for f in self.fit["fits"][arm]}
            for c in BUDGETS:
                f = fits[c]
                self.assertTrue(f["ok"], f["problem"])
                # the metric itself is fitted: its coefficients, a < 0, and the value at the vertex
                self.assertAlmostEqual(f["coeffs"][0], -CORE_CURVATURE, delta=1e-9)
                self.assertAlmostEqual(f["n_opt"] / true_n_opt(c), 1.0, delta=1e-6, msg=(arm, c))
                self.assertAlmostEqual(f["metric_opt"], core_peak(c, l3), delta=1e-9)
                cores = [r["core_score"] for r in self.rows if r["target_flops"] == c
                         and (r["n_l3_layers"] > 0) == l3 and r["state"] == "completed" and r["core_score"] != ""]
                self.assertAlmostEqual(f["best_observed"], max(cores), delta=1e-12)
                self.assertLess(f["best_observed"], f["metric_opt"])
            law = self.fit["laws"][arm]
            self.assertAlmostEqual(law["n"]["exponent"], TRUE_A, delta=1e-6)

    def test_out_of_range_maximum_is_refused(self):
        for arm in ("dense", "l3"):
            f = next(f for f in self.fit["fits"][arm] if f["budget"] == OFF_GRID_BUDGET)
            self.assertFalse(f["ok"])
            self.assertIn("maximum at N = ", f["problem"])
            self.assertIn("outside the sampled range", f["problem"])

    def test_cells_without_core_are_excluded_with_the_reason(self):
        excluded = {k: len(v) for k, v in self.fit["excluded"].items()}
        self.assertEqual(excluded, {"state failed": 1, "state pending": 1, "completed but missing core_score": 2})
        self.assertEqual(self.fit["cells_used"], (len(BUDGETS) + 1) * len(DEPTHS) * 2 - 1)
        self.assertIn("| excluded: completed but missing core_score | 2 |", self.report)
        f19 = next(f for f in self.fit["fits"]["dense"] if f["budget"] == 1.0e19)
        self.assertEqual(f19["cells"], len(DEPTHS) - 1)

    def test_l3_better_is_above_zero(self):
        rows = {r["budget"]: r for r in self.fit["comparison"] if r["arm"] == "l3"}
        for c in BUDGETS:
            self.assertAlmostEqual(rows[c]["delta_best"], L3_CORE_OFFSET, delta=1e-9)
            self.assertAlmostEqual(rows[c]["delta_fit"], L3_CORE_OFFSET, delta=1e-9)
            self.assertAlmostEqual(rows[c]["delta_mean"], L3_CORE_OFFSET, delta=1e-9)
            self.assertGreater(rows[c]["l3_best"], rows[c]["dense_best"])
        self.assertIn("(above 0: L3 is better at the same compute)", self.report)
        self.assertIn("the highest `core_score`", self.report)
        self.assertNotIn("below 0", self.report)
        self.assertIn("N* at its maximum", self.report)
        self.assertIn("| dense fitted max | L3 fitted max |", self.report)
        self.assertIn("above 0: L3 better", self.out)

    def test_no_bpb_names_in_fit_json(self):
        for key in ("min_observed", "min_observed_dir", "bpb_opt"):
            self.assertNotIn(key, self.fit["fits"]["dense"][0])
        for key in ("dense_min", "l3_min", "delta_min"):
            self.assertNotIn(key, self.fit["comparison"][0])


sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(FIT))
import fit as fitlib  # noqa: E402  (the rules below, checked in-process: no plotting needed)


def cell(n, bpb, budget=1e18, l3=0, fpt="auto", swept=None, target=None, total=None, metric="final_val_bpb"):
    out = {"params_scaling": n, "n_l3_layers": l3, "dir": f"n={n:g}",
           "flops_per_token": K * n if fpt == "auto" else fpt, "target_flops": budget if target is None else target,
           "total_flops": budget if total is None else total, "swept": swept or {}, "state": "completed",
           "index": "0", "raw": {}}
    out[metric] = bpb
    return out


class Rules(unittest.TestCase):
    def test_no_minimum_is_refused(self):
        f = fitlib.fit_isoflop(1e18, [cell(n, b) for n, b in ((1e7, 3.0), (1e8, 2.9), (1e9, 2.0))],
                               "final_val_bpb")
        self.assertFalse(f["ok"])
        self.assertIn("<= 0", f["problem"])
        self.assertIsNone(f["n_opt"])

    def test_two_sizes_are_refused(self):
        f = fitlib.fit_isoflop(1e18, [cell(1e7, 3.0), cell(1e7, 3.1), cell(1e8, 2.9)], "final_val_bpb")
        self.assertFalse(f["ok"])
        self.assertIn("only 2 distinct", f["problem"])

    def test_six_n_when_flops_per_token_is_missing(self):
        cells = [cell(n, b) for n, b in ((1e7, 3.0), (1e8, 2.8), (1e9, 3.0))]
        cells[0]["flops_per_token"] = None
        f = fitlib.fit_isoflop(1e18, cells, "final_val_bpb")
        self.assertTrue(f["ok"])
        self.assertEqual(f["d_method"], "6N")
        self.assertAlmostEqual(f["n_opt"], 1e8, delta=1)
        self.assertAlmostEqual(f["d_opt"], 1e18 / 6e8, delta=1)

    def test_budget_from_total_flops_when_not_the_target_flops_rule(self):
        self.assertEqual(fitlib.budget_of(cell(1e8, 3.0, target=-1, total=2.1487e18)), 2.15e18)
        self.assertEqual(fitlib.budget_of(cell(1e8, 3.0, target=4.64e18, total=4.6391e18)), 4.64e18)

    def test_l3_placements_become_separate_arms(self):
        cells = [cell(1e8, 3.0, l3=0, swept={"l3_at_fraction": "none"}),
                 cell(1e8, 3.0, l3=2, swept={"l3_at_fraction": "0.25+0.75"}),
                 cell(1e8, 3.0, l3=1, swept={"l3_at_fraction": "0.5"})]
        keys = fitlib.l3_arm_keys(cells, ["l3_at_fraction"])
        self.assertEqual(keys, ["l3_at_fraction"])
        self.assertEqual([fitlib.arm_of(c, keys) for c in cells],
                         ["dense", "l3 [l3_at_fraction=0.25+0.75]", "l3 [l3_at_fraction=0.5]"])

    def test_pooling_other_swept_keys_is_warned(self):
        cells = [cell(n, 3.0 + (n - 1e8) ** 2 / 1e17 + lr, swept={"optim.lr": str(lr), "seed": "1"})
                 for n in (1e7, 1e8, 5e8) for lr in (0.0, 0.01)]
        result = fitlib.analyse(cells, ["optim.lr", "seed"], "final_val_bpb")
        self.assertTrue(any("differ in optim.lr" in w for w in result["warnings"]), result["warnings"])


    def test_a_sweep_without_u_shapes_says_it_cannot_support_a_fit(self):
        # the metric only falls with N at every budget, as in a sweep whose budgets are far too small
        cells = [cell(n, 4.0 - 0.1 * math.log10(n), budget=b) for b in (1e17, 1e18) for n in (1e7, 1e8, 1e9)]
        result = fitlib.analyse(cells, [], "final_val_bpb")
        self.assertIn("cannot support a scaling-law fit", result["verdict"][0])
        self.assertIn("no U shape (the fitted parabola opens downwards)", result["verdict"][0])
        self.assertIn("no budget of any arm has an isoFLOP minimum", result["verdict"][0])

    def test_l3_minus_dense_is_the_mean_over_seeds_with_their_spread(self):
        noise = {"1": (0.010, -0.030), "2": (-0.020, 0.000), "3": (0.000, -0.010)}  # seed: (dense, l3)
        cells = []
        for seed, (dense_eps, l3_eps) in noise.items():
            for n in (1e7, 1e8, 5e8):
                base = 3.0 + (math.log10(n) - 8) ** 2
                cells.append(cell(n, base + dense_eps, l3=0, swept={"seed": seed}))
                cells.append(cell(n, base - 0.02 + l3_eps, l3=1, swept={"seed": seed}))
        result = fitlib.analyse(cells, ["seed"], "final_val_bpb")
        row = result["comparison"][0]
        expected = [-0.02 + l3 - dense for dense, l3 in noise.values()]  # the best cell is n = 1e8 in each
        self.assertEqual(row["seeds"], ["1", "2", "3"])
        for got, want in zip(row["delta_by_seed"], expected):
            self.assertAlmostEqual(got, want, delta=1e-12)
        self.assertAlmostEqual(row["delta_mean"], sum(expected) / 3, delta=1e-12)
        mean = sum(expected) / 3
        self.assertAlmostEqual(row["delta_std"], math.sqrt(sum((e - mean) ** 2 for e in expected) / 2), delta=1e-12)
        self.assertIn("mean over 3 seeds", result["verdict"][-1])

    def test_one_seed_is_said_to_have_no_spread(self):
        cells = [cell(n, 3.0 + (math.log10(n) - 8) ** 2 - 0.01 * l3, l3=l3) for n in (1e7, 1e8, 5e8) for l3 in (0, 1)]
        result = fitlib.analyse(cells, [], "final_val_bpb")
        self.assertIsNone(result["comparison"][0]["delta_std"])
        self.assertIn("cannot be told from noise", result["verdict"][-1])

    def test_core_optimum_is_the_maximum_and_a_valley_is_refused(self):
        f = fitlib.fit_isoflop(1e18, [cell(n, v, metric="core_score") for n, v in ((1e7, 0.1), (1e8, 0.2), (1e9, 0.1))],
                               "core_score")
        self.assertTrue(f["ok"], f["problem"])
        self.assertAlmostEqual(f["n_opt"], 1e8, delta=1)
        self.assertAlmostEqual(f["metric_opt"], 0.2, delta=1e-12)
        self.assertEqual((f["best_observed"], f["best_observed_dir"]), (0.2, "n=1e+08"))
        # the same points as a loss have a maximum, not a minimum: refused, and the reverse for CORE
        f = fitlib.fit_isoflop(1e18, [cell(n, v) for n, v in ((1e7, 0.1), (1e8, 0.2), (1e9, 0.1))], "final_val_bpb")
        self.assertFalse(f["ok"])
        self.assertIn("no U shape", f["problem"])
        f = fitlib.fit_isoflop(1e18, [cell(n, v, metric="core_score") for n, v in ((1e7, 0.2), (1e8, 0.1), (1e9, 0.2))],
                               "core_score")
        self.assertFalse(f["ok"])
        self.assertIn(">= 0: the points have no maximum (no ∩ shape)", f["problem"])
        self.assertEqual(f["best_observed"], 0.2)

    def test_a_core_sweep_without_a_maximum_says_so(self):
        # CORE only rises with N at every budget
        cells = [cell(n, 0.1 * math.log10(n) - 0.6, budget=b, metric="core_score")
                 for b in (1e17, 1e18) for n in (1e7, 1e8, 1e9)]
        result = fitlib.analyse(cells, [], "core_score")
        self.assertIn("cannot support a scaling-law fit", result["verdict"][0])
        self.assertIn("no budget of any arm has an isoFLOP maximum", result["verdict"][0])
        self.assertIn("no ∩ shape (the fitted parabola opens upwards)", result["verdict"][0])
        self.assertNotIn("U shape", result["verdict"][0])

    def test_core_seed_deltas_take_the_highest_cell_per_seed(self):
        dense = [cell(n, v, metric="core_score", swept={"seed": s})
                 for s, n, v in (("1", 1e7, 0.10), ("1", 1e8, 0.15), ("2", 1e7, 0.12), ("2", 1e8, 0.11))]
        l3 = [cell(n, v, l3=1, metric="core_score", swept={"seed": s})
              for s, n, v in (("1", 1e7, 0.18), ("1", 1e8, 0.16), ("2", 1e7, 0.10), ("2", 1e8, 0.13))]
        out = fitlib.seed_deltas(dense, l3, "core_score")
        self.assertEqual(out["seeds"], ["1", "2"])
        for got, want in zip(out["delta_by_seed"], (0.18 - 0.15, 0.13 - 0.12)):
            self.assertAlmostEqual(got, want, delta=1e-12)   # > 0: L3 better

    def test_no_core_anywhere_is_an_input_error_that_says_how_to_get_it(self):
        cells = [cell(n, None, metric="core_score") for n in (1e7, 1e8, 1e9)]
        with self.assertRaisesRegex(fitlib.InputError, r"no completed cell with a core_score to fit \(3 cells: "
                                                       r"3 completed but missing core_score\).*eval.core_every > 0"):
            fitlib.analyse(cells, [], "core_score")

    def test_where_selects_cells(self):
        cells = [dict(cell(1e8, 3.0), raw={"optim.lr": lr}) for lr in ("0.01", "0.02", "1e-2")]
        self.assertEqual(len(fitlib.apply_filters(cells, ["optim.lr=0.01"], "results.csv")), 2)
        with self.assertRaisesRegex(fitlib.InputError, "no column 'optim.wd'"):
            fitlib.apply_filters(cells, ["optim.wd=0"], "results.csv")
        with self.assertRaisesRegex(fitlib.InputError, "no cell"):
            fitlib.apply_filters(cells, ["optim.lr=5"], "results.csv")


class BadInput(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="l3lab-fit-bad-")

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def expect_error(self, args, *fragments):
        rc, out, err = run_fit(*args)
        self.assertEqual(rc, 2, f"stdout: {out}\nstderr: {err}")
        self.assertNotIn("Traceback", err)
        self.assertTrue(err.startswith("fit.py: error: "), err)
        for fragment in fragments:
            self.assertIn(fragment, err)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "analysis")))

    def test_missing_file(self):
        self.expect_error([os.path.join(self.tmp, "nope.csv")], "nope.csv", "no such file")

    def test_directory_without_results(self):
        self.expect_error([self.tmp], "no results.csv or results.h5", "sweep collect")

    def test_missing_columns(self):
        path = os.path.join(self.tmp, "results.csv")
        write_csv(path, make_rows()[:3], [c for c in COLUMNS if c not in ("params_scaling", "final_val_bpb")])
        self.expect_error([path], "missing column(s) params_scaling, final_val_bpb")

    def test_no_completed_cells(self):
        rows = make_rows()
        for row in rows:
            row["state"], row["final_val_bpb"] = "failed", ""
        path = os.path.join(self.tmp, "results.csv")
        write_csv(path, rows)
        self.expect_error([path], "no completed cell with a final_val_bpb")

    def test_no_cell_with_core(self):
        rows = make_rows()
        for row in rows:
            row["core_score"] = ""
        path = os.path.join(self.tmp, "results.csv")
        write_csv(path, rows)
        self.expect_error([path, "--metric", "core_score"], "no completed cell with a core_score to fit",
                          "completed but missing core_score", "eval.core_every > 0", "docs/training.md")

    def test_no_core_score_column(self):
        path = os.path.join(self.tmp, "results.csv")
        write_csv(path, make_rows(), [c for c in COLUMNS if c != "core_score"])
        self.expect_error([path, "--metric", "core_score"], "results.csv: no core_score column", "sweep collect")

    def test_not_a_number(self):
        rows = make_rows()
        rows[4]["params_scaling"] = "lots"
        path = os.path.join(self.tmp, "results.csv")
        write_csv(path, rows)
        self.expect_error([path], "results.csv:6: params_scaling: expected a number, got 'lots'")

    def test_not_hdf5(self):
        path = os.path.join(self.tmp, "results.h5")
        with open(path, "w") as f:
            f.write("not hdf5\n")
        self.expect_error([path], "results.h5")


if __name__ == "__main__":
    unittest.main(verbosity=2)
