"""The GPU check's numbers (tools/gpu/check.sh): an l3lab run summarized like the reference's benchmark
(tools/gpu/bench_reference.py), and the table of both with the issue's targets.

    python3 tools/gpu/table.py summarize-l3lab --name d12 --run RUN_DIR --log CONSOLE_LOG --warmup 4
    python3 tools/gpu/table.py table --logs LOGS_DIR --names d12 d20 d12-l3 d20-l3

Per step l3lab logs `dt` (host clock around the step, which ends with the loss's .item()), tokens/s and MFU
(FLOPs per token from `l3lab plan`, the reference's estimate_flops, against nanochat's peak-FLOPs table);
the summary's peak memory is torch.cuda.max_memory_allocated's counterpart. Statistics: the median over the
steps after the warm-up, for both sides.
"""
import argparse
import json
import os
import re
import statistics
import sys

TARGETS = {  # issue 8: tokens/s ratio against the reference, and MFU on dense d20
    "d12": 1.0, "d20": 1.0, "d12-l3": 1.5, "d20-l3": 1.5,
}
MFU_TARGET = ("d20", 45.0)


def summarize_l3lab(args):
    out = {"side": "l3lab", "name": args.name}
    text = ""
    for path in (os.path.join(args.run, "train.log"), args.log):
        if path and os.path.exists(path):
            text += open(path, errors="replace").read()
    steps = []
    for line in text.splitlines():
        m = re.search(r"step (\d+)/(\d+) .*\| dt: ([\d.]+)ms \| tok/sec: ([\d,]+) \| mfu: ([\d.]+)", line)
        if m:
            steps.append((int(m.group(1)), float(m.group(3)), float(m.group(5))))
    steps = sorted(dict((s[0], s) for s in steps).values())
    batch = re.search(r"training \d+ steps of ([\d,]+) tokens \((\d+) x (\d+) x (\d+)\)", text)
    if batch:
        out["tokens_per_step"] = int(batch.group(1).replace(",", ""))
        out["batch"] = int(batch.group(3))
    if "out of memory" in text.lower():
        out["error"] = "OOM"
    if not steps:
        out.setdefault("error", "no step was logged: " + " | ".join(text.strip().splitlines()[-3:])[-300:])
        print(json.dumps(out))
        return
    timed = [s for s in steps if s[0] >= args.warmup] or steps
    dt = statistics.median(s[1] for s in timed) / 1e3
    tokens = out.get("tokens_per_step", 0)
    out.update({"steps": len(steps), "warmup": args.warmup, "median_ms": round(dt * 1e3, 2),
                "steps_per_s": round(1 / dt, 3), "tok_per_s": round(tokens / dt) if tokens else None,
                "mfu": round(statistics.median(s[2] for s in timed), 2)})
    summary = os.path.join(args.run, "summary.json")
    if os.path.exists(summary):
        s = json.load(open(summary))
        if "peak_memory_mib" in s:
            out["peak_memory_mib"] = round(s["peak_memory_mib"], 1)
    m = re.search(r"Peak memory usage: ([\d.]+)MiB", text)
    if m and "peak_memory_mib" not in out:
        out["peak_memory_mib"] = float(m.group(1))
    print(json.dumps(out))


def load(path):
    if not os.path.exists(path):
        return {"error": "not run"}
    lines = [l for l in open(path).read().splitlines() if l.strip().startswith("{")]
    if not lines:
        return {"error": "no result"}
    merged = {}
    for l in lines:
        try:
            merged.update(json.loads(l))
        except json.JSONDecodeError:
            pass
    return merged


def cell(r, key, fmt):
    if "skipped" in r:
        return "skipped"
    if "error" in r:
        return "OOM" if r["error"] == "OOM" else "failed"
    v = r.get(key)
    return fmt.format(v) if v is not None else "-"


def table(args):
    print("| config | batch | l3lab steps/s | ref steps/s | l3lab tok/s | ref tok/s | tok/s ratio | target | "
          "l3lab MFU % | ref MFU % | l3lab peak GiB | ref peak GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    notes = []
    for name in args.names:
        a = load(os.path.join(args.logs, f"{name}.l3lab.json"))
        b = load(os.path.join(args.logs, f"{name}.reference.json"))
        ratio, verdict = "-", "-"
        target = TARGETS.get(name)
        if a.get("tok_per_s") and b.get("tok_per_s") and "error" not in a and "error" not in b:
            r = a["tok_per_s"] / b["tok_per_s"]
            ratio = f"{r:.2f}x"
            verdict = f">= {target}x: " + ("met" if r >= target else "NOT met")
        elif a.get("tok_per_s") and "error" not in a and b.get("error") == "OOM":
            ratio, verdict = "ref OOM", f">= {target}x: met (reference out of memory)"
        gib = lambda r: cell({**r, "peak_gib": r["peak_memory_mib"] / 1024} if r.get("peak_memory_mib") else r,
                             "peak_gib", "{:.1f}")
        print(f"| {name} | {a.get('batch', b.get('batch', '-'))} x {b.get('seq', 2048)} | "
              f"{cell(a, 'steps_per_s', '{:.2f}')} | {cell(b, 'steps_per_s', '{:.2f}')} | "
              f"{cell(a, 'tok_per_s', '{:,}')} | {cell(b, 'tok_per_s', '{:,}')} | {ratio} | {verdict} | "
              f"{cell(a, 'mfu', '{:.1f}')} | {cell(b, 'mfu', '{:.1f}')} | {gib(a)} | {gib(b)} |")
        for side, r in (("l3lab", a), ("reference", b)):
            if "error" in r and r["error"] not in ("OOM",):
                notes.append(f"{name} {side}: {r['error']}")
            if "skipped" in r:
                notes.append(f"{name} {side}: skipped ({r['skipped']})")
        if name == MFU_TARGET[0] and a.get("mfu") is not None and "error" not in a:
            notes.append(f"MFU on dense {name}: {a['mfu']:.1f}% (target >= {MFU_TARGET[1]:.0f}%: "
                         f"{'met' if a['mfu'] >= MFU_TARGET[1] else 'NOT met'})")
    device = next((load(os.path.join(args.logs, f"{n}.reference.json")).get("device") for n in args.names), None)
    if device:
        notes.append(f"device: {device}")
    for n in notes:
        print(f"- {n}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("summarize-l3lab")
    s.add_argument("--name", required=True)
    s.add_argument("--run", required=True)
    s.add_argument("--log")
    s.add_argument("--warmup", type=int, default=4)
    t = sub.add_parser("table")
    t.add_argument("--logs", required=True)
    t.add_argument("--names", nargs="+", required=True)
    args = ap.parse_args()
    summarize_l3lab(args) if args.command == "summarize-l3lab" else table(args)


if __name__ == "__main__":
    sys.exit(main())
