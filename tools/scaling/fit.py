#!/usr/bin/python3
"""Scaling-law analysis of a collected l3lab sweep: isoFLOP fits, compute-optimal power laws, L3 vs dense.

    tools/scaling/fit.py SWEEP_DIR | results.csv | results.h5 [--out DIR]
                         [--metric final_val_bpb|min_val_bpb|core_score] [--where KEY=VALUE ...]

Reads the table `l3lab sweep collect` writes (docs/sweeps.md; results.csv, or results.h5 with the same
columns under /cells) and writes, into --out (default <sweep_dir>/analysis/):
  isoflop.png, optimal.png, l3_vs_dense.png, report.md and fit.json (the report's numbers).
The method, its assumptions and every output are described in docs/scaling.md.
Runs Debian's python3 with python3-numpy and python3-matplotlib (python3-h5py only for results.h5).
Bad input exits 2 with a message naming the file (and the line, for a CSV), never a traceback.
"""
import argparse
import csv
import json
import math
import os
import sys

import numpy as np

# Columns `sweep collect` writes after the swept keys (docs/sweeps.md). Anything else is a swept key.
DERIVED_COLUMNS = (
    "depth", "n_l3_layers", "target_flops", "target_param_data_ratio", "params_total", "params_scaling",
    "params_l3", "flops_per_token", "num_iterations", "total_batch_size", "tokens", "total_flops",
    "final_val_bpb", "min_val_bpb", "core_score", "wall_time_s", "step", "last_error",
)
LEADING_COLUMNS = ("index", "id", "dir", "state")
REQUIRED_COLUMNS = LEADING_COLUMNS + (
    "n_l3_layers", "target_flops", "params_scaling", "flops_per_token", "tokens", "total_flops",
    "final_val_bpb", "min_val_bpb",
)
# Per completed cell, these must hold a number for the cell to enter a fit (the metric is added).
NUMERIC_NEEDED = ("n_l3_layers", "params_scaling", "total_flops")
STATES = ("completed", "failed", "running", "interrupted", "pending")
SIZE_AND_SEED_KEYS = ("seed", "horizon.target_flops")
# The metrics a fit can use. The validation bpbs are losses (lower is better); core_score, the DCLM CORE
# metric, is a centred accuracy (higher is better), so its isoFLOP optimum is a maximum.
METRICS = ("final_val_bpb", "min_val_bpb", "core_score")
HIGHER_IS_BETTER = frozenset({"core_score"})


def better_sign(metric):
    """+1 for a loss, -1 for a score: sign * value is lower-is-better for every metric, so the optimum,
    the best cell and "L3 better" are each decided in one place whatever the metric's direction."""
    return -1.0 if metric in HIGHER_IS_BETTER else 1.0


def optimum_word(metric):
    return "maximum" if metric in HIGHER_IS_BETTER else "minimum"


def l3_better_side(metric):
    """Which side of 0 a difference L3 - dense (in the metric's own units) is on when L3 is better."""
    return "above 0" if metric in HIGHER_IS_BETTER else "below 0"


class InputError(Exception):
    """Bad input: reported as one message and exit code 2."""


# ---------------------------------------------------------------------------------------------- reading

def resolve_input(path):
    """(results file, sweep directory) for a sweep directory or a results.csv / results.h5 path."""
    if os.path.isdir(path):
        for name in ("results.csv", "results.h5"):
            candidate = os.path.join(path, name)
            if os.path.isfile(candidate):
                return candidate, path
        raise InputError(f"{path}: no results.csv or results.h5 in this directory "
                         f"(run `l3lab sweep collect SWEEP.yaml` first)")
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file or directory")
    if not os.path.isfile(path):
        raise InputError(f"{path}: not a regular file")
    return path, os.path.dirname(os.path.abspath(path))


def read_csv_table(path):
    """(column names in file order, rows as lists of strings, 1-based line number of each row)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            try:
                header = next(reader)
            except StopIteration:
                raise InputError(f"{path}: empty file (expected a header row)") from None
            rows, lines = [], []
            for row in reader:
                if not row or all(not field.strip() for field in row):
                    continue
                if len(row) != len(header):
                    raise InputError(f"{path}:{reader.line_num}: {len(row)} fields, the header has "
                                     f"{len(header)}")
                rows.append(row)
                lines.append(reader.line_num)
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise InputError(f"{path}: malformed CSV: {e}") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    header = [name.strip() for name in header]
    return header, rows, [f"{path}:{line}" for line in lines]


def read_h5_table(path):
    """The same table from results.h5: one 1-D dataset per column under /cells; strings decoded."""
    try:
        import h5py
    except ImportError:
        raise InputError(f"{path}: reading results.h5 needs h5py (Debian: python3-h5py); "
                         f"give results.csv instead") from None
    try:
        with h5py.File(path, "r") as f:
            if "cells" not in f or not isinstance(f["cells"], h5py.Group):
                raise InputError(f"{path}: no group /cells (is this a `sweep collect` results.h5?)")
            group = f["cells"]
            header, columns = [], {}
            for name, dataset in group.items():
                if not isinstance(dataset, h5py.Dataset) or dataset.ndim != 1:
                    raise InputError(f"{path}: /cells/{name} is not a 1-D dataset")
                header.append(name)
                columns[name] = dataset[()]
    except InputError:
        raise
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read as HDF5: {e}") from None
    lengths = {len(values) for values in columns.values()}
    if len(lengths) > 1:
        raise InputError(f"{path}: the datasets under /cells have different lengths {sorted(lengths)}")
    n = lengths.pop() if lengths else 0

    def as_text(value):
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        if isinstance(value, (float, np.floating)):
            return "" if math.isnan(value) else repr(float(value))
        return str(value)

    rows = [[as_text(columns[name][i]) for name in header] for i in range(n)]
    # h5py lists datasets by name, not in file order: put the known columns back in the CSV's order so
    # the swept keys (the rest) can still be told apart.
    known = [c for c in LEADING_COLUMNS + DERIVED_COLUMNS if c in header]
    swept = [c for c in header if c not in known]
    order = [c for c in LEADING_COLUMNS if c in header] + swept + [c for c in DERIVED_COLUMNS if c in header]
    index = [header.index(c) for c in order]
    rows = [[row[i] for i in index] for row in rows]
    return order, rows, [f"{path}: /cells row {i}" for i in range(n)]


def parse_number(text, where, column):
    """A float, or None for a missing value (empty, NaN); anything else is bad input."""
    text = text.strip()
    if text == "" or text.lower() in ("nan", "none", "null"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{where}: {column}: expected a number, got {text!r}") from None
    return None if math.isnan(value) else value


def load_cells(path):
    """Every row of the results table as a dict, with the numeric columns parsed; plus the swept keys."""
    if path.endswith((".h5", ".hdf5")):
        header, rows, places = read_h5_table(path)
    else:
        header, rows, places = read_csv_table(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)} "
                         f"(expected the table `l3lab sweep collect` writes; see docs/sweeps.md)")
    first_derived = min(header.index(c) for c in DERIVED_COLUMNS if c in header)
    swept = [c for c in header[:first_derived] if c not in LEADING_COLUMNS]
    numeric = [c for c in DERIVED_COLUMNS if c in header and c != "last_error"]
    cells = []
    for row, where in zip(rows, places):
        raw = dict(zip(header, row))
        cell = {"where": where, "raw": raw, "swept": {k: raw[k].strip() for k in swept},
                "state": raw["state"].strip(), "dir": raw["dir"].strip(), "index": raw["index"].strip()}
        if cell["state"] not in STATES:
            raise InputError(f"{where}: state: expected one of {'|'.join(STATES)}, got {cell['state']!r}")
        for column in numeric:
            cell[column] = parse_number(raw[column], where, column)
        cells.append(cell)
    if not cells:
        raise InputError(f"{path}: no rows (the sweep has no cells)")
    return cells, swept


def apply_filters(cells, wheres, path):
    """Keep the cells whose column KEY equals VALUE for every --where KEY=VALUE (numbers compare as numbers)."""
    for clause in wheres:
        key, sep, value = clause.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise InputError(f"--where {clause!r}: expected KEY=VALUE")
        if key not in cells[0]["raw"]:
            raise InputError(f"--where {clause!r}: {path} has no column {key!r}")

        def matches(cell):
            field = cell["raw"][key].strip()
            if field == value:
                return True
            try:
                return float(field) == float(value)
            except ValueError:
                return False

        cells = [c for c in cells if matches(c)]
        if not cells:
            raise InputError(f"--where {clause!r}: no cell of {path} matches")
    return cells


# --------------------------------------------------------------------------------------------- grouping

def budget_of(cell):
    """The compute budget C: the target_flops rule's value, else the plan's total FLOPs to 3 digits."""
    target = cell["target_flops"]
    if target is not None and target > 0:
        return target
    return float(f"{cell['total_flops']:.3g}")


def select_cells(cells, metric):
    """(cells usable in the fits, {reason: [cell dirs]} for every cell left out)."""
    used, excluded = [], {}
    for cell in cells:
        if cell["state"] != "completed":
            reason = f"state {cell['state']}"
        else:
            absent = [c for c in (metric,) + NUMERIC_NEEDED if cell[c] is None]
            if absent:
                reason = f"completed but missing {', '.join(absent)}"
            elif cell["params_scaling"] <= 0 or cell["total_flops"] <= 0:
                reason = "completed but params_scaling or total_flops <= 0"
            else:
                used.append(cell)
                continue
        excluded.setdefault(reason, []).append(cell["dir"] or cell["index"])
    return used, excluded


def l3_arm_keys(cells, swept):
    """Swept keys that set the L3 layers, when L3 cells differ in them: each value is then its own arm."""
    l3_cells = [c for c in cells if c["n_l3_layers"] > 0]
    keys = [k for k in swept if k == "l3_at_fraction" or k.startswith("model.l3.")]
    return [k for k in keys if len({c["swept"][k] for c in l3_cells}) > 1]


def arm_of(cell, split_keys):
    if cell["n_l3_layers"] == 0:
        return "dense"
    if not split_keys:
        return "l3"
    return "l3 [" + ",".join(f"{k}={cell['swept'][k]}" for k in split_keys) + "]"


# ---------------------------------------------------------------------------------------------- fitting

def interp_loglog(x, xs, ys):
    """y at x by linear interpolation of log y against log x over the points (xs, ys)."""
    order = np.argsort(xs)
    return float(np.exp(np.interp(np.log(x), np.log(np.asarray(xs)[order]), np.log(np.asarray(ys)[order]))))


def fit_isoflop(budget, cells, metric):
    """Quadratic fit of the metric in log10 N for one budget and arm, and the compute-optimal point: the
    vertex, a minimum for a loss and a maximum for a score such as core_score."""
    n = np.array([c["params_scaling"] for c in cells], dtype=float)
    values = np.array([c[metric] for c in cells], dtype=float)
    sign = better_sign(metric)
    best = int(np.argmin(sign * values))
    x = np.log10(n)
    fit = {"budget": budget, "cells": len(cells), "n_min": float(n.min()), "n_max": float(n.max()),
           "sizes": int(len(np.unique(n))), "coeffs": None, "ok": False, "problem": None, "problem_kind": None,
           "n_opt": None, "metric_opt": None, "d_opt": None, "ratio": None, "d_method": None,
           "best_observed": float(values[best]), "best_observed_dir": cells[best]["dir"]}
    if fit["sizes"] < 3:
        fit["problem"] = f"only {fit['sizes']} distinct model size(s); a quadratic needs 3"
        fit["problem_kind"] = "sizes"
        return fit
    # The metric itself is fitted, so the reported coefficients are the metric's; only the test of the
    # curvature depends on the direction.
    a, b, c = np.polyfit(x, values, 2)
    fit["coeffs"] = [float(a), float(b), float(c)]
    if sign * a <= 0:
        fit["problem"] = (f"curvature a = {a:.4g} >= 0: the points have no maximum (no ∩ shape)"
                          if sign < 0 else
                          f"curvature a = {a:.4g} <= 0: the points have no minimum (no U shape)")
        fit["problem_kind"] = "shape"
        return fit
    x_opt = -b / (2 * a)
    if not x.min() <= x_opt <= x.max():
        fit["problem"] = (f"{optimum_word(metric)} at N = {10 ** x_opt:.3g} lies outside the sampled range "
                          f"[{n.min():.3g}, {n.max():.3g}]")
        fit["problem_kind"] = "outside"
        return fit
    n_opt = 10 ** x_opt
    fit["ok"] = True
    fit["n_opt"] = float(n_opt)
    fit["metric_opt"] = float(a * x_opt ** 2 + b * x_opt + c)
    fpt = [(cl["params_scaling"], cl["flops_per_token"]) for cl in cells if cl["flops_per_token"]]
    if len(fpt) == len(cells):
        # The plan's FLOPs per token (matmuls + attention) at N*, interpolated between the sampled models.
        flops_per_token = interp_loglog(n_opt, [p[0] for p in fpt], [p[1] for p in fpt])
        fit["d_method"] = "flops_per_token"
    else:
        flops_per_token = 6 * n_opt
        fit["d_method"] = "6N"
    fit["d_opt"] = float(budget / flops_per_token)
    fit["ratio"] = fit["d_opt"] / fit["n_opt"]
    return fit


def fit_power_law(budgets, values):
    """value = k * C^exponent by least squares in log10; the slope's standard error needs 3+ points."""
    x, y = np.log10(budgets), np.log10(values)
    slope, intercept = np.polyfit(x, y, 1)
    out = {"exponent": float(slope), "log10_coefficient": float(intercept), "points": len(x),
           "stderr": None, "r2": None}
    if len(x) >= 3:
        residuals = y - (slope * x + intercept)
        sxx = float(np.sum((x - x.mean()) ** 2))
        out["stderr"] = float(math.sqrt(float(np.sum(residuals ** 2)) / (len(x) - 2) / sxx))
        sst = float(np.sum((y - y.mean()) ** 2))
        out["r2"] = float(1 - np.sum(residuals ** 2) / sst) if sst > 0 else None
    return out


def analyse(cells, swept, metric):
    used, excluded = select_cells(cells, metric)
    if not used:
        counts = ", ".join(f"{len(v)} {k}" for k, v in sorted(excluded.items()))
        hint = ""
        if any("missing core_score" in reason for reason in excluded):
            hint = ("; core_score is empty where CORE never ran: it runs only when eval.core_every > 0 in the "
                    "sweep's experiment (or its overrides), with nanochat's eval bundle (docs/training.md)")
        raise InputError(f"no completed cell with a {metric} to fit ({len(cells)} cells: {counts}){hint}")
    split_keys = l3_arm_keys(used, swept)
    groups = {}
    for cell in used:
        cell["arm"] = arm_of(cell, split_keys)
        cell["budget"] = budget_of(cell)
        groups.setdefault((cell["arm"], cell["budget"]), []).append(cell)
    arms = sorted({arm for arm, _ in groups}, key=lambda a: (a != "dense", a))
    warnings = []

    # Cells of one group at the same N that differ in a swept key other than the seed are pooled.
    other_keys = [k for k in swept if k not in SIZE_AND_SEED_KEYS and k not in split_keys]
    for (arm, budget), members in sorted(groups.items()):
        by_size = {}
        for cell in members:
            by_size.setdefault(cell["params_scaling"], []).append(cell)
        varying = sorted({k for same in by_size.values() for k in other_keys
                          if len({c["swept"][k] for c in same}) > 1})
        if varying:
            warnings.append(f"{arm}, C = {budget:.3g}: cells of the same size differ in {', '.join(varying)}; "
                            f"they are pooled into one fit (select with --where KEY=VALUE)")

    fits = {arm: [fit_isoflop(budget, groups[(a, budget)], metric)
                  for (a, budget) in sorted(groups) if a == arm] for arm in arms}
    for arm in arms:
        for fit in fits[arm]:
            if not fit["ok"]:
                warnings.append(f"{arm}, C = {fit['budget']:.3g}: no N*: {fit['problem']}")

    laws = {}
    for arm in arms:
        good = [f for f in fits[arm] if f["ok"]]
        if len(good) < 2:
            warnings.append(f"{arm}: {len(good)} budget(s) with an N*; the power laws need 2")
            continue
        budgets = np.array([f["budget"] for f in good])
        law_n = fit_power_law(budgets, [f["n_opt"] for f in good])
        law_d = fit_power_law(budgets, [f["d_opt"] for f in good])
        c_ref = math.sqrt(budgets.min() * budgets.max())
        n_ref = 10 ** (law_n["log10_coefficient"] + law_n["exponent"] * math.log10(c_ref))
        d_ref = 10 ** (law_d["log10_coefficient"] + law_d["exponent"] * math.log10(c_ref))
        laws[arm] = {"n": law_n, "d": law_d, "ratio_exponent": law_d["exponent"] - law_n["exponent"],
                     "c_ref": c_ref, "ratio_at_c_ref": d_ref / n_ref}

    comparison = []
    if "dense" in arms:
        dense = {f["budget"]: f for f in fits["dense"]}
        for arm in arms[1:]:
            for fit in fits[arm]:
                base = dense.get(fit["budget"])
                if base is None:
                    continue
                # Differences are L3 - dense in the metric's own units for every metric; which sign means
                # "L3 better" is l3_better_side(metric).
                row = {"arm": arm, "budget": fit["budget"],
                       "dense_best": base["best_observed"], "dense_dir": base["best_observed_dir"],
                       "l3_best": fit["best_observed"], "l3_dir": fit["best_observed_dir"],
                       "delta_best": fit["best_observed"] - base["best_observed"],
                       "dense_fit": base["metric_opt"], "l3_fit": fit["metric_opt"], "delta_fit": None}
                if base["ok"] and fit["ok"]:
                    row["delta_fit"] = fit["metric_opt"] - base["metric_opt"]
                row.update(seed_deltas(groups[("dense", fit["budget"])], groups[(arm, fit["budget"])], metric))
                comparison.append(row)
            if not any(r["arm"] == arm for r in comparison):
                warnings.append(f"{arm}: no budget in common with dense; nothing to compare at equal FLOPs")
    elif len(arms) > 0 and arms != ["dense"]:
        warnings.append("no completed dense cell: no L3 vs dense comparison")

    result = {"metric": metric, "higher_is_better": metric in HIGHER_IS_BETTER,
              "cells_total": len(cells), "cells_used": len(used), "excluded": excluded,
              "arms": arms, "split_keys": split_keys, "fits": fits, "laws": laws, "comparison": comparison,
              "warnings": warnings, "used": used}
    result["verdict"] = verdict(result)
    return result


def seed_of(cell):
    return cell["swept"].get("seed", "")


def seed_deltas(dense_cells, l3_cells, metric):
    """L3 - dense of the best cell per seed (the lowest loss, the highest score), for the seeds both arms
    ran at this budget: the per-seed differences in the metric's units, their mean and their spread
    (sample standard deviation; None for one seed)."""
    sign = better_sign(metric)

    def best_by_seed(cells):
        best = {}
        for c in cells:
            if seed_of(c) not in best or sign * c[metric] < sign * best[seed_of(c)]:
                best[seed_of(c)] = c[metric]
        return best
    dense, l3 = best_by_seed(dense_cells), best_by_seed(l3_cells)
    seeds = sorted(set(dense) & set(l3))
    deltas = [l3[k] - dense[k] for k in seeds]
    out = {"seeds": seeds, "delta_by_seed": deltas, "delta_mean": None, "delta_std": None}
    if deltas:
        out["delta_mean"] = float(np.mean(deltas))
        if len(deltas) >= 2:
            out["delta_std"] = float(np.std(deltas, ddof=1))
    return out


def verdict(result):
    """What the sweep supports, in a sentence or three, with the reasons when it does not support a fit."""
    lines = []
    with_n = {arm: [f for f in result["fits"][arm] if f["ok"]] for arm in result["arms"]}
    if not any(with_n.values()):
        optimum = optimum_word(result["metric"])
        no_shape = ("no ∩ shape (the fitted parabola opens upwards)" if result["metric"] in HIGHER_IS_BETTER
                    else "no U shape (the fitted parabola opens downwards)")
        kinds = {}
        for arm in result["arms"]:
            for f in result["fits"][arm]:
                kind = {"shape": no_shape, "outside": f"the {optimum} outside the sampled sizes"}.get(
                    f["problem_kind"], "fewer than 3 model sizes")
                kinds[kind] = kinds.get(kind, 0) + 1
        reasons = "; ".join(f"{n} isoFLOP curve{'s' if n > 1 else ''} with {kind}" for kind, n in sorted(kinds.items()))
        lines.append(f"This sweep cannot support a scaling-law fit: no budget of any arm has an isoFLOP {optimum} "
                     f"inside its sampled sizes ({reasons}). Its budgets are too small, or its sizes too few or "
                     "too narrow, for the models to show the trade-off between size and tokens; see "
                     "docs/scaling.md.")
    else:
        for arm in result["arms"]:
            n = len(with_n[arm])
            total = len(result["fits"][arm])
            if arm in result["laws"]:
                lines.append(f"{arm}: N* at {n} of {total} budgets; power laws fitted.")
            else:
                lines.append(f"{arm}: N* at {n} of {total} budgets; the power laws need 2, so none is fitted.")
    if result["comparison"]:
        seeds = {len(r["seeds"]) for r in result["comparison"]}
        if max(seeds) < 2:
            lines.append("L3 vs dense: one seed per budget, so the differences have no seed spread and cannot "
                         "be told from noise (add seeds: [...] to the sweep).")
        else:
            lines.append(f"L3 vs dense: the mean over {max(seeds)} seeds with their spread, per budget.")
    return lines



# --------------------------------------------------------------------------------------------- plotting

def arm_style(arms):
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    return {arm: colors[i % len(colors)] for i, arm in enumerate(arms)}


def plot_isoflop(result, path, plt):
    arms = result["arms"]
    fig, axes = plt.subplots(1, len(arms), figsize=(6.5 * len(arms), 5), squeeze=False)
    budgets = sorted({f["budget"] for arm in arms for f in result["fits"][arm]})
    colors = dict(zip(budgets, plt.cm.viridis(np.linspace(0, 0.9, len(budgets)))))
    metric = result["metric"]
    for ax, arm in zip(axes[0], arms):
        for fit in result["fits"][arm]:
            color = colors[fit["budget"]]
            members = sorted((c for c in result["used"] if c["arm"] == arm and c["budget"] == fit["budget"]),
                             key=lambda c: c["params_scaling"])
            ax.plot([c["params_scaling"] for c in members], [c[metric] for c in members], "o", color=color,
                    label=f"{fit['budget']:.3g}")
            if fit["coeffs"] is not None:
                x = np.linspace(math.log10(fit["n_min"]) - 0.05, math.log10(fit["n_max"]) + 0.05, 100)
                ax.plot(10 ** x, np.polyval(fit["coeffs"], x), "--", color=color, linewidth=1.5)
            if fit["ok"]:
                ax.plot([fit["n_opt"]], [fit["metric_opt"]], "*", color=color, markersize=16,
                        markeredgecolor="black", zorder=5)
        ax.set_xscale("log")
        ax.set_xlabel("N (params_scaling: transformer matrices + lm_head)")
        ax.set_ylabel(f"{metric} ({'higher' if metric in HIGHER_IS_BETTER else 'lower'} is better)")
        ax.set_title(f"IsoFLOP curves: {arm}  (* = fitted N*, the {optimum_word(metric)})")
        ax.grid(True, alpha=0.3)
        ax.legend(title="C (FLOPs)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_optimal(result, path, plt):
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    style = arm_style(result["arms"])
    titles = (("n_opt", "N*", "n"), ("d_opt", "D* (tokens)", "d"), ("ratio", "D*/N* (tokens per param)", None))
    for ax, (key, label, law_key) in zip(axes, titles):
        for arm in result["arms"]:
            good = [f for f in result["fits"][arm] if f["ok"]]
            if not good:
                continue
            c = np.array([f["budget"] for f in good])
            marker, size = ("o", 9) if arm == "dense" else ("s", 6)   # dense stays visible under an equal L3
            ax.plot(c, [f[key] for f in good], marker, color=style[arm], markersize=size, label=arm)
            law = result["laws"].get(arm)
            if law and law_key:
                fit = law[law_key]
                cx = np.logspace(math.log10(c.min()) - 0.2, math.log10(c.max()) + 0.2, 50)
                ax.plot(cx, 10 ** (fit["log10_coefficient"] + fit["exponent"] * np.log10(cx)), "--",
                        color=style[arm], alpha=0.8, label=f"{arm}: ∝ C^{fit['exponent']:.3f}")
        ax.set_xscale("log")
        ax.set_yscale("log" if law_key else "linear")
        ax.set_xlabel("C (FLOPs)")
        ax.set_ylabel(label)
        ax.set_title(f"compute-optimal {label}")
        ax.grid(True, alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no budget with a valid N*", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_l3_vs_dense(result, path, plt):
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    style = arm_style(result["arms"])
    metric = result["metric"]
    for arm in result["arms"]:
        members = [c for c in result["used"] if c["arm"] == arm]
        left.plot([c["total_flops"] for c in members], [c[metric] for c in members], "o", color=style[arm],
                  alpha=0.35, markersize=5)
        fits = result["fits"][arm]
        left.plot([f["budget"] for f in fits], [f["best_observed"] for f in fits], "-o", color=style[arm],
                  label=f"{arm}: best cell per budget")
    left.set_xscale("log")
    left.set_xlabel("C (total_flops of each cell)")
    left.set_ylabel(f"{metric} ({'higher' if metric in HIGHER_IS_BETTER else 'lower'} is better)")
    left.set_title(f"{metric} vs compute (dots: every completed cell)")
    left.grid(True, alpha=0.3)
    left.legend(fontsize=8)
    rows = result["comparison"]
    for arm in result["arms"][1:]:
        mine = [r for r in rows if r["arm"] == arm]
        if not mine:
            continue
        right.plot([r["budget"] for r in mine], [r["delta_best"] for r in mine], "-o", color=style[arm],
                   label=f"{arm}: best cell")
        seeded = [r for r in mine if r["delta_std"] is not None]
        if seeded:
            # The per-seed differences: their mean with ± one sample standard deviation as error bars.
            right.errorbar([r["budget"] for r in seeded], [r["delta_mean"] for r in seeded],
                           yerr=[r["delta_std"] for r in seeded], fmt="s:", color=style[arm], capsize=4,
                           alpha=0.8, label=f"{arm}: per-seed mean ± std ({max(len(r['seeds']) for r in seeded)} seeds)")
        fitted = [r for r in mine if r["delta_fit"] is not None]
        if fitted:
            right.plot([r["budget"] for r in fitted], [r["delta_fit"] for r in fitted], "--*", color=style[arm],
                       markersize=10, label=f"{arm}: fitted {optimum_word(metric)}")
    right.axhline(0, color="black", linewidth=1)
    right.set_xscale("log")
    right.set_xlabel("C (FLOPs)")
    right.set_ylabel(f"Δ {metric}: L3 − dense ({l3_better_side(metric)}: L3 better)")
    right.set_title("L3 vs dense at equal FLOPs")
    right.grid(True, alpha=0.3)
    if rows:
        right.legend(fontsize=8)
    else:
        right.text(0.5, 0.5, "no budget with both dense and L3 cells", transform=right.transAxes, ha="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- report

def fmt(value, spec=".4g"):
    return "—" if value is None else format(value, spec)


def write_report(result, source, path):
    metric = result["metric"]
    optimum = optimum_word(metric)
    opt = optimum[:3]   # "min" / "max" in the table headers
    lines = ["# Scaling-law fit", "",
             f"Input: `{source}`. Metric: `{metric}` "
             f"({'higher' if metric in HIGHER_IS_BETTER else 'lower'} is better). "
             "N = `params_scaling` (transformer matrices + lm_head). "
             f"C = `target_flops` when the cell used that rule, else `total_flops` to 3 significant digits.",
             "IsoFLOP fit per budget and arm: "
             f"`{metric} = a·(log10 N)² + b·log10 N + c` (least squares); N* at its {optimum}. "
             "D* = C / flops_per_token(N*), the plan's FLOPs per token interpolated log-log between the "
             "sampled sizes (`6N*` where a cell lacks flops_per_token: see the D* column). "
             "Method and assumptions: docs/scaling.md.", ""]
    lines += ["## Verdict", ""] + [f"- {v}" for v in result["verdict"]] + [""]
    lines += ["## Cells", "", "| cells | count |", "|---|---:|",
              f"| in the table | {result['cells_total']} |", f"| used in the fits | {result['cells_used']} |"]
    for reason, dirs in sorted(result["excluded"].items()):
        lines.append(f"| excluded: {reason} | {len(dirs)} |")
    lines.append("")
    for reason, dirs in sorted(result["excluded"].items()):
        shown = ", ".join(f"`{d}`" for d in dirs[:20]) + (f" and {len(dirs) - 20} more" if len(dirs) > 20 else "")
        lines.append(f"- {reason}: {shown}")
    if result["split_keys"]:
        lines += ["", f"L3 cells differ in {', '.join(result['split_keys'])}: each value is its own arm."]
    lines.append("")

    lines += ["## IsoFLOP fits", "",
              f"| arm | C | cells | sizes | N range | a | b | c | N* | fitted {opt} | D* | D*/N* | D* from | "
              "best cell |",
              "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for arm in result["arms"]:
        for f in result["fits"][arm]:
            a, b, c = f["coeffs"] if f["coeffs"] else (None, None, None)
            lines.append(
                f"| {arm} | {f['budget']:.3g} | {f['cells']} | {f['sizes']} | {f['n_min']:.3g}–{f['n_max']:.3g} "
                f"| {fmt(a)} | {fmt(b)} | {fmt(c)} | {fmt(f['n_opt'], '.4g')} | {fmt(f['metric_opt'], '.4f')} "
                f"| {fmt(f['d_opt'], '.4g')} | {fmt(f['ratio'], '.2f')} | {f['d_method'] or 'no fit'} "
                f"| {f['best_observed']:.4f} `{f['best_observed_dir']}` |")
    lines.append("")

    lines += ["## Compute-optimal power laws", "",
              "Log-log least squares over the budgets with a valid N*: N* = k·C^a, D* = k'·C^b. "
              "D* is derived from N* and C, so b is not independent: b = 1 − a exactly when flops_per_token "
              "is proportional to N, and close to it otherwise.", "",
              "| arm | budgets | a (N* ∝ C^a) | ± | b (D* ∝ C^b) | ± | b − a | D*/N* at C_ref | C_ref | R² (N*) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for arm in result["arms"]:
        law = result["laws"].get(arm)
        if not law:
            lines.append(f"| {arm} | — | — | — | — | — | — | — | — | — |")
            continue
        lines.append(f"| {arm} | {law['n']['points']} | {law['n']['exponent']:.4f} | {fmt(law['n']['stderr'], '.4f')} "
                     f"| {law['d']['exponent']:.4f} | {fmt(law['d']['stderr'], '.4f')} | {law['ratio_exponent']:.4f} "
                     f"| {law['ratio_at_c_ref']:.2f} | {law['c_ref']:.3g} | {fmt(law['n']['r2'], '.4f')} |")
    lines += ["", "± is the slope's standard error (needs 3 or more budgets). C_ref is the geometric mean of "
              "the smallest and largest budget fitted.", ""]

    lines += ["## L3 vs dense at equal FLOPs", ""]
    if result["comparison"]:
        lines += [f"Δ = L3 − dense in `{metric}` ({l3_better_side(metric)}: L3 is better at the same compute). "
                  f"The best cell is the one with the {'highest' if metric in HIGHER_IS_BETTER else 'lowest'} "
                  f"`{metric}`. Per seed: the "
                  "best L3 cell minus the best dense cell of that seed; the mean over the seeds both arms ran, "
                  "± their sample standard deviation (a difference smaller than about twice it is not "
                  "distinguishable from seed noise).", "",
                  "| arm | C | dense best cell | L3 best cell | Δ best | seeds | Δ per seed: mean | ± std | "
                  f"dense fitted {opt} | L3 fitted {opt} | Δ fitted |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in result["comparison"]:
            lines.append(f"| {r['arm']} | {r['budget']:.3g} | {r['dense_best']:.4f} | {r['l3_best']:.4f} "
                         f"| {r['delta_best']:+.4f} | {len(r['seeds'])} | {fmt(r['delta_mean'], '+.4f')} "
                         f"| {fmt(r['delta_std'], '.4f')} | {fmt(r['dense_fit'], '.4f')} | {fmt(r['l3_fit'], '.4f')} "
                         f"| {fmt(r['delta_fit'], '+.4f')} |")
    else:
        lines.append("No budget has both dense and L3 completed cells.")
    lines.append("")

    lines += ["## Warnings", ""]
    lines += [f"- {w}" for w in result["warnings"]] or ["None."]
    lines += ["", "## Plots", "",
              "- `isoflop.png`: the metric against N per budget, one panel per arm; dashed: the quadratic "
              "fits; stars: N*.",
              "- `optimal.png`: N*, D* and D*/N* against C with the power-law fits.",
              "- `l3_vs_dense.png`: the metric of every cell against its C, the best cell per budget per arm, "
              "and Δ (L3 − dense) per budget.", ""]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


# fit.json's names before core_score, when every metric was a loss: a reader of an older fit.json still finds
# them for the bpb metrics, where they mean exactly what they did. They are left out for a higher-is-better
# metric, where "min" would be the wrong word and the value is not a bpb.
LEGACY_FIT_KEYS = {"min_observed": "best_observed", "min_observed_dir": "best_observed_dir",
                   "bpb_opt": "metric_opt"}
LEGACY_COMPARISON_KEYS = {"dense_min": "dense_best", "l3_min": "l3_best", "delta_min": "delta_best"}


def write_json(result, source, path):
    out = {k: v for k, v in result.items() if k != "used"}
    out["source"] = source
    if not out["higher_is_better"]:
        out["fits"] = {arm: [dict(f, **{old: f[new] for old, new in LEGACY_FIT_KEYS.items()}) for f in fits]
                       for arm, fits in out["fits"].items()}
        out["comparison"] = [dict(r, **{old: r[new] for old, new in LEGACY_COMPARISON_KEYS.items()})
                             for r in out["comparison"]]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


# ------------------------------------------------------------------------------------------------- main

def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Scaling-law analysis of a collected l3lab sweep (docs/scaling.md).")
    parser.add_argument("input", help="sweep directory, results.csv or results.h5")
    parser.add_argument("--out", help="output directory (default: <sweep_dir>/analysis)")
    parser.add_argument("--metric", default="final_val_bpb", choices=METRICS,
                        help="what each cell contributes: final_val_bpb or min_val_bpb (validation bpb, lower "
                             "is better) or core_score (the DCLM CORE metric, higher is better: the isoFLOP "
                             "optimum is a maximum; cells without CORE are left out) (default: final_val_bpb)")
    parser.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                        help="keep only cells whose column KEY equals VALUE (repeatable)")
    args = parser.parse_args(argv)
    try:
        source, sweep_dir = resolve_input(args.input)
        cells, swept = load_cells(source)
        if args.metric not in cells[0]:
            raise InputError(f"{source}: no {args.metric} column (collected by an older l3lab; rerun "
                             f"`l3lab sweep collect SWEEP.yaml`)")
        cells = apply_filters(cells, args.where, source)
        result = analyse(cells, swept, args.metric)
        out = args.out or os.path.join(sweep_dir, "analysis")
        try:
            os.makedirs(out, exist_ok=True)
        except OSError as e:
            raise InputError(f"{out}: cannot create the output directory: {e.strerror}") from None
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        try:
            plot_isoflop(result, os.path.join(out, "isoflop.png"), plt)
            plot_optimal(result, os.path.join(out, "optimal.png"), plt)
            plot_l3_vs_dense(result, os.path.join(out, "l3_vs_dense.png"), plt)
            write_report(result, source, os.path.join(out, "report.md"))
            write_json(result, source, os.path.join(out, "fit.json"))
        except OSError as e:
            raise InputError(f"{e.filename or out}: cannot write: {e.strerror}") from None
    except InputError as e:
        print(f"fit.py: error: {e}", file=sys.stderr)
        return 2
    print(f"{len(result['used'])} of {len(cells)} cells fitted; wrote isoflop.png, optimal.png, "
          f"l3_vs_dense.png, report.md, fit.json to {out}")
    for arm, law in result["laws"].items():
        print(f"  {arm}: N* ∝ C^{law['n']['exponent']:.3f}, D* ∝ C^{law['d']['exponent']:.3f}, "
              f"D*/N* = {law['ratio_at_c_ref']:.1f} at C = {law['c_ref']:.3g}")
    for r in result["comparison"]:
        spread = (f"; per seed {r['delta_mean']:+.4f} ± {r['delta_std']:.4f} over {len(r['seeds'])} seeds"
                  if r["delta_std"] is not None else "")
        print(f"  {r['arm']} − dense at C = {r['budget']:.3g}: {r['delta_best']:+.4f} (best cells{spread}; "
              f"{l3_better_side(args.metric)}: L3 better)")
    for v in result["verdict"]:
        print(f"  {v}")
    for w in result["warnings"]:
        print(f"  warning: {w}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
