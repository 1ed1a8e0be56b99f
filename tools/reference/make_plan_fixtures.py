"""Generate golden "plan" fixtures by running the reference nanochat code.

The plan is everything scripts/base_train.py works out before its first training
step: parameter counts, FLOPs per token, training horizon, total batch size,
gradient accumulation, LR / weight-decay scaling and the L3 embedding count.

Nothing here re-derives that math.  The script reads the text of the reference's
scripts/base_train.py, cuts out the relevant segments by anchor strings (failing
loudly if an anchor is missing) and executes them with `exec` in a prepared
namespace: the reference's own argparse block (so its defaults apply), its
build_model_meta, its L3 n_emb auto-derivation, the meta-device model
construction, the scaling-laws block, the horizon block and the gradient
accumulation block.  Data loading, tokenizer, compile and training are skipped;
the model stays the plain (uncompiled) meta-device GPT.

Getting the reference checkout (karpathy/nanochat at b7629ef):

    git clone https://github.com/karpathy/nanochat /tmp/nanochat
    mkdir -p /tmp/nanochat-ref
    git -C /tmp/nanochat archive b7629ef | tar -x -C /tmp/nanochat-ref

The checkout is verified by the git blob hashes of the files that are executed.
Only torch (CPU is enough) and filelock are needed.

Usage:

    .venv/bin/python tools/reference/make_plan_fixtures.py \\
        --nanochat /tmp/nanochat-ref --out tests/fixtures/plan

Writes reference_plans.json (hand-picked cases) and reference_plans_random.json
(seeded random cases).  Each case lists the reference CLI flags, the equivalent
l3lab overrides and the values the reference computed ("expect").
"""

import argparse
import contextlib
import io
import json
import math
import random
import sys

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import checkout  # noqa: E402  (tools/reference/checkout.py)
import textwrap
from pathlib import Path

REFERENCE = "karpathy/nanochat@b7629eff5d5985b9dc9b0198b45cb7783484b1b2 scripts/base_train.py"
GENERATED_BY = "tools/reference/make_plan_fixtures.py"
# `git rev-parse b7629ef:<path>` for the files whose code is executed.
EXPECTED_BLOBS = {
    "scripts/base_train.py": "a6b6211bb5195703315ede44e3f8b4bb537a0be3",
    "nanochat/gpt.py": "030a39da16de2a04b0e784cc0b3c1a561baabbd5",
    "nanochat/l3.py": "6f160081614c71b3820b7c594be520342a284d9b",
}
RANDOM_SEED = 20261129
NUM_RANDOM_CASES = 60


# ----------------------------------------------------------------------------
# Reference checkout and its code segments

def verify_checkout(root):
    checkout.verify_checkout(root, EXPECTED_BLOBS)


def segment(text, start, end=None):
    """Text from the line holding `start` up to (excluding) the line holding `end`."""
    if text.count(start) != 1:
        raise RuntimeError(f"anchor not found exactly once in base_train.py: {start!r}")
    i = text.find(start)
    i = text.rfind("\n", 0, i) + 1
    if end is None:
        j = text.find("\n", i)
    else:
        j = text.find(end, i)
        if j < 0:
            raise RuntimeError(f"end anchor not found in base_train.py: {end!r}")
        j = text.rfind("\n", 0, j) + 1
    return textwrap.dedent(text[i:j])


class Reference:
    """The plan-relevant part of scripts/base_train.py, runnable per case."""

    def __init__(self, root):
        sys.path.insert(0, str(root))
        import torch
        from nanochat.gpt import GPT, GPTConfig
        self.torch, self.GPT, self.GPTConfig = torch, GPT, GPTConfig
        src = (root / "scripts" / "base_train.py").read_text()
        parts = [
            ("argparse", "parser = argparse.ArgumentParser", "user_config = vars(args)"),
            ("build_model_meta", "def build_model_meta", "# L3 precomputation"),
            ("l3_n_emb", "l3_n_emb = args.l3_n_emb", None),
            ("l3_auto", "    if l3_n_emb == 0:", "    # Read a sample of training data"),
            ("model", "model = build_model_meta(args.depth, l3_after_layers=args.l3_after_layers, l3_n_emb=l3_n_emb)", None),
            ("scaling", "param_counts = model.num_scaling_params()", "# Initialize the Optimizer"),
            ("horizon", "# num_iterations: either it is given", "# Learning rate schedule"),
            ("grad_accum", "tokens_per_fwdbwd = args.device_batch_size", "# Go!"),
            ("optimizer", "optimizer = model.setup_optimizer(", "if resuming:"),
        ]
        self.code = {name: compile(segment(src, start, end), f"base_train.py<{name}>", "exec")
                     for name, start, end in parts}

    def plan(self, flags, vocab_size, world_size):
        log = io.StringIO()
        ns = {
            "argparse": argparse, "math": math, "torch": self.torch,
            "GPT": self.GPT, "GPTConfig": self.GPTConfig,
            "print0": lambda *a, **k: print(*a, **k, file=log),
            "vocab_size": vocab_size, "ddp_world_size": world_size,
        }
        argv = sys.argv
        sys.argv = ["base_train.py", *flags]
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                exec(self.code["argparse"], ns)
                exec(self.code["build_model_meta"], ns)
                exec(self.code["l3_n_emb"], ns)
                if ns["args"].l3_after_layers:
                    exec(self.code["l3_auto"], ns)
                for name in ("model", "scaling", "optimizer", "horizon", "grad_accum"):
                    exec(self.code[name], ns)
        except SystemExit as e:  # argparse error
            raise RuntimeError(f"argparse rejected {flags}: {log.getvalue()}") from e
        finally:
            sys.argv = argv
        return expect_from(ns), log.getvalue()


def expect_from(ns):
    args, model = ns["args"], ns["model"]
    cfg = model.config
    if args.num_iterations > 0:
        rule = "num_iterations"
    elif args.target_flops > 0:
        rule = "target_flops"
    else:
        rule = "target_param_data_ratio"
    has_l3 = bool(args.l3_after_layers)
    return {
        "n_layer": cfg.n_layer,
        "n_embd": cfg.n_embd,
        "n_head": cfg.n_head,
        "n_kv_head": cfg.n_kv_head,
        "head_dim": cfg.n_embd // cfg.n_head,
        "vocab_size": cfg.vocab_size,
        "padded_vocab_size": model.transformer.wte.weight.shape[0],
        "params": dict(ns["param_counts"]),
        "scaling_params": ns["num_scaling_params"],
        "flops_per_token": ns["num_flops_per_token"],
        "num_iterations": ns["num_iterations"],
        "horizon_rule": rule,
        "total_batch_size": ns["total_batch_size"],
        "grad_accum_steps": ns["grad_accum_steps"],
        "total_tokens": ns["total_tokens"],
        "tokens_per_scaling_param": ns["total_batch_size"] * ns["num_iterations"] / ns["num_scaling_params"],
        "total_flops": float(ns["num_flops_per_token"] * ns["total_tokens"]),
        "batch_lr_scale": ns["batch_lr_scale"],
        "weight_decay_scaled": ns["weight_decay_scaled"],
        "l3_n_emb": ns["l3_n_emb"] if has_l3 else 0,
        "l3_d_up": (args.l3_d_up if args.l3_d_up > 0 else 4 * cfg.n_embd) if has_l3 else 0,
        # setup_optimizer()'s param groups, in its order (AdamW groups, then one Muon group per shape)
        "optimizer_groups": [
            {"kind": g["kind"], "lr": g["lr"], "weight_decay": g["weight_decay"],
             "numel": sum(p.numel() for p in g["params"]),
             **({"beta1": g["betas"][0], "beta2": g["betas"][1], "eps": g["eps"]} if g["kind"] == "adamw"
                else {"beta2": g["beta2"], "ns_steps": g["ns_steps"]})}
            for g in ns["optimizer"].param_groups],
    }


# ----------------------------------------------------------------------------
# Reference flags -> l3lab overrides

def yaml_float(x):
    """Shortest exact float text with a dot and a signed exponent: 1.0e+18, 2.15e+18."""
    for digits in range(1, 18):
        s = f"{x:.{digits}e}"
        if float(s) == x:
            return s
    return f"{x:.17e}"


def auto_or(value, auto):
    return "auto" if int(value) == auto else str(int(value))


OVERRIDE_MAP = {
    "depth": ("model.depth", str),
    "aspect-ratio": ("model.aspect_ratio", str),
    "head-dim": ("model.head_dim", str),
    "max-seq-len": ("model.sequence_len", str),
    "window-pattern": ("model.window_pattern", str),
    "l3-after-layers": ("model.l3.after_layers", lambda v: "[" + ",".join(v.split(",")) + "]"),
    "l3-n-emb": ("model.l3.n_emb", lambda v: auto_or(v, 0)),
    "l3-d-up": ("model.l3.d_up", lambda v: auto_or(v, 0)),
    "l3-k-max": ("model.l3.k_max", str),
    "num-iterations": ("horizon.num_iterations", str),
    "target-flops": ("horizon.target_flops", lambda v: yaml_float(float(v))),
    "target-param-data-ratio": ("horizon.target_param_data_ratio", lambda v: repr(float(v))),
    "device-batch-size": ("batch.device_batch_size", str),
    "total-batch-size": ("batch.total_batch_size", lambda v: auto_or(v, -1)),
    "weight-decay": ("optimizer.weight_decay", lambda v: repr(float(v))),
}


def overrides_for(flags, vocab_size):
    out = [f"model.vocab_size={vocab_size}"]
    for flag in flags:
        name, value = flag[2:].split("=", 1)
        key, fmt = OVERRIDE_MAP[name]
        out.append(f"{key}={fmt(value)}")
    return out


# ----------------------------------------------------------------------------
# Cases

def case(name, flags, vocab_size=32768, world_size=1):
    return {"name": name, "flags": list(flags), "vocab_size": vocab_size, "world_size": world_size}


def hand_cases():
    cases = []
    # Cross product: depth x L3 x horizon rule.
    l3_layers = {4: "1", 12: "3,7", 20: "5,13", 26: "3,11,19"}
    rules = {
        "iters": ["--num-iterations=1000"],
        "flops": ["--target-flops=1e18"],
        "ratio": [],  # the default --target-param-data-ratio=10.5
    }
    for depth in (4, 12, 20, 26):
        # small models get a small auto batch: shrink the micro-batch to fit it
        base = [f"--depth={depth}"] + (["--device-batch-size=4"] if depth == 4 else [])
        world = 1 if depth == 4 else 8
        for l3 in (False, True):
            extra = [f"--l3-after-layers={l3_layers[depth]}"] if l3 else []
            for rule, rflags in rules.items():
                name = f"d{depth}_{'l3' if l3 else 'nol3'}_{rule}"
                cases.append(case(name, base + extra + rflags, world_size=world))
    # Aspect ratio, head dim (model_dim rounded up to a multiple), window patterns.
    cases += [
        case("d12_aspect32", ["--depth=12", "--aspect-ratio=32", "--device-batch-size=16"]),
        case("d16_aspect48", ["--depth=16", "--aspect-ratio=48"], world_size=8),
        case("d8_aspect96", ["--depth=8", "--aspect-ratio=96", "--device-batch-size=16"]),
        case("d10_head64_round", ["--depth=10", "--aspect-ratio=50", "--head-dim=64"], world_size=2),
        case("d9_aspect40_head64_round", ["--depth=9", "--aspect-ratio=40", "--head-dim=64",
                                          "--device-batch-size=16"]),
        case("d10_head96_round", ["--depth=10", "--head-dim=96"], world_size=2),
        case("d12_head96", ["--depth=12", "--head-dim=96"], world_size=8),
        case("d12_window_L", ["--depth=12", "--window-pattern=L"], world_size=8),
        case("d12_window_SL", ["--depth=12", "--window-pattern=SL"], world_size=8),
        case("d13_window_SSL", ["--depth=13", "--window-pattern=SSL"], world_size=8),
        case("d12_window_lower_sssl", ["--depth=12", "--window-pattern=sssl"], world_size=8),
    ]
    # Sequence lengths, device batch sizes, explicit total batch sizes, world sizes.
    cases += [
        case("d6_seq512_dbs16", ["--depth=6", "--max-seq-len=512", "--device-batch-size=16"]),
        case("d8_seq1024_dbs4_world2", ["--depth=8", "--max-seq-len=1024", "--device-batch-size=4"], world_size=2),
        case("d4_seq64_dbs1_tbs4096", ["--depth=4", "--max-seq-len=64", "--device-batch-size=1",
                                       "--total-batch-size=4096", "--num-iterations=20"]),
        case("d4_cpu_example", ["--depth=4", "--max-seq-len=512", "--device-batch-size=1",
                                "--total-batch-size=512", "--num-iterations=20"]),
        case("d12_tbs524288_world8", ["--depth=12", "--total-batch-size=524288"], world_size=8),
        case("d12_tbs262144_dbs16_world2", ["--depth=12", "--total-batch-size=262144",
                                            "--device-batch-size=16"], world_size=2),
        case("d20_tbs1048576_world8", ["--depth=20", "--total-batch-size=1048576"], world_size=8),
        case("d20_tbs_auto_explicit", ["--depth=20", "--total-batch-size=-1"], world_size=8),
        case("d16_seq1024_dbs16_world8", ["--depth=16", "--max-seq-len=1024", "--device-batch-size=16"], world_size=8),
    ]
    # Vocab sizes (including ones that get padded to a multiple of 64).
    cases += [
        case("d12_vocab50257", ["--depth=12"], vocab_size=50257, world_size=8),
        case("d12_vocab65536", ["--depth=12"], vocab_size=65536, world_size=8),
        case("d6_vocab8192", ["--depth=6", "--max-seq-len=512", "--device-batch-size=8"], vocab_size=8192),
        case("d2_vocab100_seq64", ["--depth=2", "--max-seq-len=64", "--device-batch-size=4"], vocab_size=100),
        case("d8_l3_vocab50257", ["--depth=8", "--l3-after-layers=2,5", "--device-batch-size=16"], vocab_size=50257),
    ]
    # L3 knobs.
    cases += [
        case("d12_l3_nemb100000", ["--depth=12", "--l3-after-layers=5", "--l3-n-emb=100000"], world_size=8),
        case("d12_l3_nemb_auto_explicit", ["--depth=12", "--l3-after-layers=5", "--l3-n-emb=0"], world_size=8),
        case("d12_l3_dup1024", ["--depth=12", "--l3-after-layers=5", "--l3-d-up=1024"], world_size=8),
        case("d12_l3_dup_auto_explicit", ["--depth=12", "--l3-after-layers=5", "--l3-d-up=0"], world_size=8),
        case("d12_l3_kmax64", ["--depth=12", "--l3-after-layers=5", "--l3-k-max=64"], world_size=8),
        case("d12_l3_four_layers", ["--depth=12", "--l3-after-layers=1,3,5,7"], world_size=8),
        case("d8_l3_unsorted_layers", ["--depth=8", "--l3-after-layers=6,0,3", "--device-batch-size=16"]),
        case("d4_l3_all_knobs", ["--depth=4", "--max-seq-len=512", "--device-batch-size=4",
                                 "--l3-after-layers=0,2", "--l3-n-emb=40000", "--l3-d-up=768",
                                 "--l3-k-max=64", "--num-iterations=100"]),
    ]
    # Tiny configs.
    cases += [
        case("d1_seq64", ["--depth=1", "--max-seq-len=64", "--device-batch-size=1"]),
        case("d2_seq64", ["--depth=2", "--max-seq-len=64", "--device-batch-size=1"]),
        case("d1_seq64_l3", ["--depth=1", "--max-seq-len=64", "--device-batch-size=1",
                             "--l3-after-layers=0"]),
        case("d2_seq64_tbs256_iters10", ["--depth=2", "--max-seq-len=64", "--device-batch-size=2",
                                         "--total-batch-size=256", "--num-iterations=10"], vocab_size=8192),
    ]
    # Weight decay and data:param ratios.
    cases += [
        case("d12_wd0.1", ["--depth=12", "--weight-decay=0.1"], world_size=8),
        case("d12_ratio8", ["--depth=12", "--target-param-data-ratio=8"], world_size=8),
        case("d12_ratio20", ["--depth=12", "--target-param-data-ratio=20"], world_size=8),
        case("d20_ratio8_wd0.1", ["--depth=20", "--target-param-data-ratio=8", "--weight-decay=0.1"], world_size=8),
        case("d12_iters_ratio_off", ["--depth=12", "--num-iterations=500", "--target-param-data-ratio=-1"],
             world_size=8),
    ]
    # runs/scaling_laws.sh: fixed FLOPs budgets with the data:param ratio disabled.
    # (d8's auto batch, 2**18 tokens, is below 8 ranks x 32 x 2048: the reference
    # asserts there with 8 ranks, so d8 runs on 4.)
    for flops in ("1e18", "2.15e18"):
        for depth in range(8, 21, 2):
            cases.append(case(f"scaling_{flops}_d{depth}",
                              [f"--depth={depth}", f"--target-flops={flops}",
                               "--target-param-data-ratio=-1"], world_size=4 if depth == 8 else 8))
    return cases


def random_case(rng):
    depth = rng.randint(1, 30)
    aspect = rng.choice([a for a in range(32, 129, 8) if a * depth >= 32] or [128])
    flags = [f"--depth={depth}", f"--aspect-ratio={aspect}",
             f"--head-dim={rng.choice([32, 64, 96, 128])}"]
    seq = rng.choice([64, 128, 256, 1024, 2048])
    flags.append(f"--max-seq-len={seq}")
    flags.append("--window-pattern=" + "".join(rng.choice("SL") for _ in range(rng.randint(1, 4))))
    vocab_size = rng.randint(64, 70000)
    if rng.random() < 0.5:
        layers = rng.sample(range(depth), rng.randint(1, min(3, depth)))
        flags.append("--l3-after-layers=" + ",".join(map(str, layers)))
        if rng.random() < 0.4:
            flags.append(f"--l3-n-emb={rng.randint(vocab_size, 8 * vocab_size)}")
        if rng.random() < 0.4:
            flags.append(f"--l3-d-up={64 * rng.randint(1, 64)}")
        if rng.random() < 0.3:
            flags.append(f"--l3-k-max={rng.choice([16, 64, 128, 512, 1024])}")
    rule = rng.choice(["num_iterations", "target_flops", "target_param_data_ratio"])
    if rule == "num_iterations":
        flags.append(f"--num-iterations={rng.randint(1, 50000)}")
    elif rule == "target_flops":
        flags.append(f"--target-flops={yaml_float(float(f'{10 ** rng.uniform(15, 20):.3g}'))}")
        if rng.random() < 0.5:
            flags.append("--target-param-data-ratio=-1.0")
    else:
        flags.append(f"--target-param-data-ratio={rng.choice([4.0, 8.0, 10.5, 12.0, 20.0, 25.5])}")
    device_batch = rng.choice([1, 2, 4, 8, 16, 32])
    flags.append(f"--device-batch-size={device_batch}")
    world_size = rng.choice([1, 2, 4, 8])
    if rng.random() < 0.5:
        flags.append(f"--total-batch-size={device_batch * seq * world_size * 2 ** rng.randint(0, 5)}")
    if rng.random() < 0.2:
        flags.append(f"--weight-decay={rng.choice([0.0, 0.05, 0.1, 0.3])}")
    return flags, vocab_size, world_size


def random_cases(ref, rng, count):
    out, draws = [], 0
    while len(out) < count:
        draws += 1
        flags, vocab_size, world_size = random_case(rng)
        try:
            expect, _ = ref.plan(flags, vocab_size, world_size)
        except (AssertionError, ValueError, ZeroDivisionError, RuntimeError):
            continue  # the reference rejects this configuration: redraw
        if expect["num_iterations"] < 1:
            continue  # a zero-step run is not a useful fixture: redraw
        c = case(f"random_{len(out):02d}", flags, vocab_size, world_size)
        c["expect"] = expect
        out.append(c)
    return out, draws


# ----------------------------------------------------------------------------

def write(path, cases, torch_version):
    for c in cases:
        c["overrides"] = overrides_for(c["flags"], c["vocab_size"])
        c["expect"] = c.pop("expect")  # keep "expect" last
    doc = {"reference": REFERENCE, "generated_by": GENERATED_BY, "torch": torch_version, "cases": cases}
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=False)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nanochat", required=True, type=Path, help="nanochat checkout at b7629ef")
    ap.add_argument("--out", required=True, type=Path, help="output folder, e.g. tests/fixtures/plan")
    ap.add_argument("--verbose", action="store_true", help="print the reference's log for each hand case")
    ap.add_argument("--seed", type=int, default=RANDOM_SEED,
                    help="seed of the random cases (another seed gives a held-out set to check l3lab against)")
    ap.add_argument("--random-cases", type=int, default=NUM_RANDOM_CASES, help="how many random cases")
    ap.add_argument("--random-only", action="store_true",
                    help="write only <out>/reference_plans_random.json (for held-out checks)")
    opts = ap.parse_args()

    verify_checkout(opts.nanochat)
    ref = Reference(opts.nanochat.resolve())
    opts.out.mkdir(parents=True, exist_ok=True)

    if opts.random_only:
        rcases, draws = random_cases(ref, random.Random(opts.seed), opts.random_cases)
        write(opts.out / "reference_plans_random.json", rcases, ref.torch.__version__)
        return

    cases = hand_cases()
    names = [c["name"] for c in cases]
    assert len(set(names)) == len(names), "duplicate case names"
    for c in cases:
        c["expect"], log = ref.plan(c["flags"], c["vocab_size"], c["world_size"])
        if opts.verbose:
            print(f"== {c['name']} {' '.join(c['flags'])} (vocab {c['vocab_size']}, world {c['world_size']})")
            print(log)
        assert c["expect"]["num_iterations"] >= 1, f"{c['name']}: zero-step horizon"
    write(opts.out / "reference_plans.json", cases, ref.torch.__version__)

    rcases, draws = random_cases(ref, random.Random(opts.seed), opts.random_cases)
    print(f"random cases: {len(rcases)} kept of {draws} drawn")
    write(opts.out / "reference_plans_random.json", rcases, ref.torch.__version__)


if __name__ == "__main__":
    main()
