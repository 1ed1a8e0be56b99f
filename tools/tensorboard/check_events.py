#!/usr/bin/env python3
"""Reads l3lab's TensorBoard event files with TensorBoard's own reader and checks them (docs/tracking.md).

    check_events.py RUN_DIR [--killed]     every scalar at every step equals metrics.jsonl, each step once
    check_events.py --logdir DIR --runs N  DIR is a TensorBoard log directory holding N runs (a sweep)
    check_events.py --proto PROTO          PROTO's field numbers equal TensorBoard's own messages'

RUN_DIR's events are loaded from RUN_DIR/tb by tensorboard's EventAccumulator (the class TensorBoard's
backend uses), so a file it cannot parse, a torn record it does not skip, a duplicated or missing step,
or a value that differs from the sidecar fails the check. With --killed (a run killed and not yet
resumed), the events may hold steps past the sidecar's last flush; every sidecar record must be there.
Prints what it compared; exit 0 when it all matches, 1 otherwise. Needs the `tensorboard` wheel (.venv).
"""
import argparse
import json
import math
import os
import re
import sys

import numpy as np
from tensorboard.backend.event_processing import event_accumulator, event_multiplexer

TRAIN_COLUMNS = ["loss", "raw_loss", "lrm", "dt", "tok_per_sec", "mfu", "tokens", "flops", "epoch", "elapsed",
                 "skipped"]


def read_sidecar(run_dir):
    """The records of metrics.jsonl that are complete (a torn last line is ignored, as l3lab does)."""
    train, val, samples, core = {}, {}, [], {}
    with open(os.path.join(run_dir, "metrics.jsonl"), "rb") as f:
        text = f.read().decode("utf-8")
    for line in text.split("\n")[:-1]:
        r = json.loads(line)
        if r.get("kind") == "train":
            train[r["step"]] = r
        elif r.get("kind") == "val":
            val[r["step"]] = r
        elif r.get("kind") == "sample":
            samples.append(r)
        elif r.get("kind") == "core":
            core[r["step"]] = r
    return train, val, samples, core


def same(a, b):
    """Equal as float32: TensorBoard's simple_value is a float; JSON null stands for NaN."""
    b = float("nan") if b is None else b
    if math.isnan(float(a)) and math.isnan(float(b)):
        return True
    return np.float32(a) == np.float32(b)


def check_run(run_dir, killed):
    acc = event_accumulator.EventAccumulator(os.path.join(run_dir, "tb"),
                                             size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    train, val, samples, core = read_sidecar(run_dir)
    problems, compared = [], 0
    expected = {"train/" + c: {s: r.get(c) for s, r in train.items()} for c in TRAIN_COLUMNS}
    expected["val/bpb"] = {s: r.get("bpb") for s, r in val.items()}
    expected["val/loss"] = {s: r["loss"] for s, r in val.items() if "loss" in r}
    expected["core/metric"] = {s: r.get("core_metric") for s, r in core.items()}
    for s, r in core.items():
        for t in r["tasks"]:
            for column in ("centered", "accuracy"):
                expected.setdefault(f"core/{t['task']}/{column}", {})[s] = t.get(column)
    tags = set(acc.Tags()["scalars"])
    for tag, want in expected.items():
        if not want:
            continue
        if tag not in tags:
            problems.append(f"{tag}: missing")
            continue
        events = acc.Scalars(tag)
        steps = [e.step for e in events]
        if steps != sorted(set(steps)):
            problems.append(f"{tag}: steps not each once in order: {steps[:20]}...")
        got = {e.step: e.value for e in events}
        for step, value in want.items():
            if step not in got:
                problems.append(f"{tag}: step {step} missing")
            elif not same(got[step], value):
                problems.append(f"{tag}: step {step}: {got[step]} != {value}")
            compared += 1
        extra = sorted(set(got) - set(want))
        if extra and not killed:
            problems.append(f"{tag}: steps not in metrics.jsonl: {extra[:10]}")
        if extra and killed and min(extra) <= max(want):
            problems.append(f"{tag}: steps before the sidecar's last that it does not hold: {extra[:10]}")
    texts = set(acc.Tags()["tensors"])
    for text in ("config", "provenance"):
        if text not in texts:
            problems.append(f"text '{text}' missing")
    if "config" in texts:
        config = acc.Tensors("config")[0].tensor_proto.string_val[0].decode("utf-8")
        with open(os.path.join(run_dir, "config.yaml"), encoding="utf-8") as f:
            first = f.readline().strip()
        if first and first not in config:
            problems.append("text 'config' does not hold the run's config.yaml")
    if samples and "samples" not in texts:
        problems.append("samples missing")
    print(f"{run_dir}: {compared} scalar values compared over {len(expected)} tags "
          f"({len(train)} train steps, {len(val)} evaluations, {len(core)} CORE evaluations), texts {sorted(texts)}")
    return problems


def check_logdir(logdir, runs):
    multiplexer = event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
    names = sorted(multiplexer.Runs())
    print(f"{logdir}: {len(names)} runs: {names}")
    problems = []
    if len(names) != runs:
        problems.append(f"expected {runs} runs, found {len(names)}")
    for name in names:
        if "train/loss" not in multiplexer.GetAccumulator(name).Tags()["scalars"]:
            problems.append(f"run {name}: no train/loss")
    return problems


def proto_fields(path):
    """{message path: {field name: number}} of a .proto file (nested messages as Outer.Inner)."""
    out, stack = {}, []
    for raw in open(path, encoding="utf-8"):
        line = raw.split("//")[0].strip()
        m = re.match(r"(message|enum)\s+(\w+)\s*\{", line)
        if m:
            stack.append((m.group(1), m.group(2)))
            if m.group(1) == "message":
                out[".".join(n for _, n in stack)] = {}
            continue
        if line.startswith("oneof"):
            stack.append(("oneof", ""))
            continue
        if line == "}":
            stack.pop()
            continue
        m = re.match(r"(?:repeated\s+)?[\w.]+\s+(\w+)\s*=\s*(\d+);", line)
        if m and stack:
            messages = [n for kind, n in stack if kind == "message"]
            if stack[-1][0] in ("message", "oneof"):
                out[".".join(messages)][m.group(1)] = int(m.group(2))
    return out


def check_proto(path):
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2
    theirs = {"Event": event_pb2.Event, "Summary": summary_pb2.Summary, "Summary.Value": summary_pb2.Summary.Value,
              "SummaryMetadata": summary_pb2.SummaryMetadata,
              "SummaryMetadata.PluginData": summary_pb2.SummaryMetadata.PluginData,
              "TensorShapeProto": tensor_shape_pb2.TensorShapeProto,
              "TensorShapeProto.Dim": tensor_shape_pb2.TensorShapeProto.Dim, "TensorProto": tensor_pb2.TensorProto}
    problems, n = [], 0
    for message, fields in proto_fields(path).items():
        if message not in theirs:
            problems.append(f"{message}: not a message TensorBoard knows here")
            continue
        by_name = {f.name: f.number for f in theirs[message].DESCRIPTOR.fields}
        for name, number in fields.items():
            n += 1
            if by_name.get(name) != number:
                problems.append(f"{message}.{name} = {number}, TensorBoard's is {by_name.get(name)}")
    print(f"{path}: {n} fields checked against TensorBoard's descriptors")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", nargs="?")
    parser.add_argument("--killed", action="store_true")
    parser.add_argument("--logdir")
    parser.add_argument("--runs", type=int, default=0)
    parser.add_argument("--proto")
    args = parser.parse_args()
    if args.proto:
        problems = check_proto(args.proto)
    elif args.logdir:
        problems = check_logdir(args.logdir, args.runs)
    elif args.run_dir:
        problems = check_run(args.run_dir, args.killed)
    else:
        parser.error("give a run directory, --logdir or --proto")
    for p in problems[:40]:
        print("  " + p)
    print("ok" if not problems else f"{len(problems)} problems")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
