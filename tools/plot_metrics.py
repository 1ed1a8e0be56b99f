#!/usr/bin/python3
"""Training loss and validation bits-per-byte curves of one or many l3lab runs, drawn to a PNG.

    tools/plot_metrics.py RUN_DIR [RUN_DIR ...] --out plot.png [--x step|tokens|flops] [--title TEXT]

Each run is read from its metrics.h5 with SWMR read access, so a live run, a killed one and a finished
one all work; when the view cannot be opened (or h5py is missing) the run's metrics.jsonl is read instead.
Runs Debian's python3 with python3-h5py and python3-matplotlib (tools/bootstrap.sh installs both).
docs/metrics.md describes the files.
"""
import argparse
import json
import os
import re
import sys

import numpy as np

TRAIN_COLUMNS = ("step", "loss", "tokens", "flops")
VAL_COLUMNS = ("step", "bpb")


def read_view(run_dir):
    import h5py  # optional: the sidecar needs only the standard library

    with h5py.File(os.path.join(run_dir, "metrics.h5"), "r", swmr=True) as f:
        out = {}
        for group, names in (("train", TRAIN_COLUMNS), ("val", VAL_COLUMNS)):
            # A live writer extends the columns one by one: keep the rows all of them have.
            n = min(len(f[group][name]) for name in names)
            out[group] = {name: f[group][name][:n] for name in names}
        return out


def read_sidecar(run_dir):
    rows = {"train": [], "val": []}
    with open(os.path.join(run_dir, "metrics.jsonl"), "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break  # torn by a crash
            record = json.loads(line)
            if record.get("kind") in rows:
                rows[record["kind"]].append(record)
    out = {}
    for group, names in (("train", TRAIN_COLUMNS), ("val", VAL_COLUMNS)):
        out[group] = {
            name: np.array([np.nan if r.get(name) is None else r[name] for r in rows[group]], dtype=float)
            for name in names
        }
    return out


def read_run(run_dir):
    try:
        return read_view(run_dir), "metrics.h5"
    except Exception as view_error:  # missing, unreadable, or no h5py
        try:
            return read_sidecar(run_dir), "metrics.jsonl"
        except (OSError, ValueError) as sidecar_error:
            print(f"{run_dir}: no readable metrics (metrics.h5: {view_error}; metrics.jsonl: {sidecar_error})",
                  file=sys.stderr)
            sys.exit(2)


def label_of(run_dir):
    path = os.path.normpath(os.path.abspath(run_dir))
    name = os.path.basename(path)
    # runs/<name>/<YYYYmmdd-HHMMSS>-<cfghash8>: the stamp alone says little, the experiment name does.
    if re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{8}", name):
        return os.path.basename(os.path.dirname(path)) + "/" + name
    return name


def val_x(val, train, axis):
    """x of each eval: it runs at the top of its step, after steps 0..step-1 have trained."""
    if axis == "step" or len(val["step"]) == 0:
        return val["step"]
    if len(train["step"]) == 0:
        return np.full(len(val["step"]), np.nan)
    return np.interp(val["step"] - 1, train["step"], train[axis], left=0.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--x", choices=("step", "tokens", "flops"), default="step", help="x axis (default: step)")
    parser.add_argument("--title", default=None)
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_bpb) = plt.subplots(1, 2, figsize=(13, 5))
    for run_dir in args.runs:
        data, source = read_run(run_dir)
        train, val = data["train"], data["val"]
        label = label_of(run_dir)
        print(f"{label}: {len(train['step'])} train, {len(val['step'])} val records (from {source})")
        ax_loss.plot(train[args.x], train["loss"], label=label, linewidth=1)
        if len(val["step"]):
            ax_bpb.plot(val_x(val, train, args.x), val["bpb"], marker="o", markersize=3, label=label)

    ax_loss.set_title("training loss (debiased EMA)")
    ax_loss.set_ylabel("loss")
    ax_bpb.set_title("validation bits per byte")
    ax_bpb.set_ylabel("bpb")
    for ax in (ax_loss, ax_bpb):
        ax.set_xlabel(args.x)
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize="small")
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
