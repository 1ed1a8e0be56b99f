"""CORE on one checkpoint: nanochat's evaluate_core against `l3lab eval --core`, same weights, bundle and threads.

    PYTHONPATH=.fixtures-venv .venv/bin/python tools/bench/bench_core.py --nanochat /tmp/nanochat-ref \\
        --checkpoint /tmp/curves/nanochat_base/base_checkpoints/l3lab-export \\
        --tokenizer /tmp/curves/nanochat_base/tokenizer --examples 200 --threads 2 --repeats 3

--checkpoint is a nanochat checkpoint directory (model_<step>.pt as a plain dict + meta_<step>.json; `l3lab
export` writes one), --tokenizer nanochat's tokenizer/ directory with token_bytes.pt. The bundle is
tools/reference/make_core_fixtures.py's synthetic tasks (those with a delimiter) with --examples examples each. Interleaved repeats;
both sides load the model once per repeat (l3lab: the whole command, process start included). The two
core_metric values must be equal.
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "reference"))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nanochat", required=True, type=Path)
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--tokenizer", required=True, type=Path)
    p.add_argument("--examples", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--l3lab", default=str(ROOT / "build" / "l3lab"))
    args = p.parse_args()
    from make_core_fixtures import make_tasks, write_bundle

    base = Path(tempfile.mkdtemp(prefix="bench-core-"))
    # the tasks whose language-modeling prompts keep a space before the continuation: with an empty
    # delimiter another tokenizer may merge across the boundary, which nanochat's evaluate_example asserts against
    tasks = [t for t in make_tasks(random.Random(7)) if t[3] != ""]
    for t in tasks:  # more examples: the generator's rows repeated with a counter in them
        rows = t[5]
        grown = []
        for i in range(args.examples):
            r = dict(rows[i % len(rows)])
            key = "query" if "query" in r else "continuation" if "context_options" in r else "context"
            r[key] = f"{i} " + r[key]
            grown.append(r)
        rows[:] = grown
    write_bundle(base / "eval_bundle", tasks)
    shutil.copytree(args.tokenizer, base / "tokenizer")
    os.environ["NANOCHAT_BASE_DIR"] = str(base)
    sys.path.insert(0, str(args.nanochat))
    import torch
    torch.set_num_threads(args.threads)
    from nanochat.checkpoint_manager import build_model, find_last_step
    from scripts.base_eval import evaluate_core

    step = find_last_step(str(args.checkpoint))
    ref_times, our_times = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        model, tokenizer, _ = build_model(str(args.checkpoint), step, torch.device("cpu"), "eval")
        ref = evaluate_core(model, tokenizer, "cpu", max_per_task=-1)
        ref_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        out = subprocess.run([args.l3lab, "eval", str(args.checkpoint), "--tokenizer", str(base / "tokenizer"), "--core",
                              "--bundle", str(base / "eval_bundle"), "--max-per-task", "-1", "--json"], check=True,
                             capture_output=True, text=True,
                             env=dict(os.environ, OMP_NUM_THREADS=str(args.threads), L3LAB_PROGRESS="off"))
        our_times.append(time.perf_counter() - t0)
        ours = json.loads(out.stdout)
        assert abs(ours["core_metric"] - ref["core_metric"]) < 1e-9, (ours["core_metric"], ref["core_metric"])
    n = sum(len(t[5]) for t in tasks)
    print(f"{n:,} examples in {len(tasks)} tasks, {args.threads} threads; core_metric {ref['core_metric']:.6f} on both sides")
    print(f"nanochat evaluate_core: {statistics.median(ref_times):.2f} s; l3lab eval --core: {statistics.median(our_times):.2f} s "
          f"(medians of {args.repeats})")
    shutil.rmtree(base)


if __name__ == "__main__":
    main()
