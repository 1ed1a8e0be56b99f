"""Generate golden optimizer fixtures by running the reference nanochat code.

The reference's single-process `MuonAdamW` (nanochat/optim.py) runs eagerly on CPU in float32
(torch.compile is disabled before nanochat is imported, so `adamw_step_fused` and
`muon_step_fused` execute op by op).  Each case is a set of parameters with their optimizer groups
and five steps of seeded random gradients; before every step the schedule update of
scripts/base_train.py is executed verbatim (lr = initial_lr * lrm; Muon momentum and weight decay),
with base_train's own `get_lr_multiplier`, `get_muon_momentum` and `get_weight_decay` cut out of
its text by anchors and `exec`-ed (as tools/reference/make_plan_fixtures.py does).  Nothing here
re-implements the optimizer or the schedules.

Cases:
  gpt   a tiny reference GPT (2 layers, n_embd 32, one untied L3 layer), grouped by the model's own
        setup_optimizer() with base_train's default learning rates times a batch-LR scale and a
        scaled weight decay;
  hand  tall, wide and square matrices of several shapes (two to three of a shape, so Muon stacks
        them), a Muon group with ns_steps 3, an embedding with AdamW weight decay, a bfloat16
        embedding, a vector and a 0-D scalar with beta1 0.96.

Layout (per case):
  <out>/<case>/case.json               groups (reference param_groups, params by name), schedule
                                       settings and the per-step lrm / momentum / weight decay
  <out>/<case>/params0.safetensors     initial parameters
  <out>/<case>/grads.safetensors       "step<k>.<name>": the gradient of step k (k = 0..4)
  <out>/<case>/after1.safetensors      parameters after one step
  <out>/<case>/after5.safetensors      parameters after five steps
  <out>/<case>/after5_fp32_polar.safetensors  Muon parameters after five steps of the reference with
                                       its bfloat16 casts made float32 casts (see fp32_polar)
  <out>/<case>/state5.safetensors      optimizer state after five steps, per parameter:
                                       <name>.exp_avg, <name>.exp_avg_sq, <name>.step (int64, AdamW);
                                       <name>.momentum_buffer [R, C], <name>.second_momentum_buffer
                                       [R, 1] or [1, C] (Muon: row i of the reference's stacked
                                       buffers, which it keeps in the state of the group's first
                                       parameter)
  <out>/schedules.json                 base_train's schedule values for a range of steps/horizons
  <out>/tolerance.json                 how far the reference's own Muon results move under changes
                                       that only alter bfloat16 rounding (see measure_tolerance)

Getting the reference checkout (karpathy/nanochat at b7629ef):

    git clone https://github.com/karpathy/nanochat /tmp/nanochat
    mkdir -p /tmp/nanochat-ref
    git -C /tmp/nanochat archive b7629ef | tar -x -C /tmp/nanochat-ref

Only torch (CPU), filelock and safetensors are needed.

Usage:

    .venv/bin/python tools/reference/make_optim_fixtures.py \\
        --nanochat /tmp/nanochat-ref --out tests/fixtures/optim
"""

import os

# Before torch is imported: the reference decorates its step kernels with torch.compile.
os.environ["TORCH_COMPILE_DISABLE"] = "1"

import argparse
import contextlib
import io
import json
import sys

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import checkout  # noqa: E402  (tools/reference/checkout.py)
import textwrap
import types
from pathlib import Path

REFERENCE = "karpathy/nanochat@b7629eff5d5985b9dc9b0198b45cb7783484b1b2"
GENERATED_BY = "tools/reference/make_optim_fixtures.py"
# `git rev-parse b7629ef:<path>` for the files whose code is executed.
EXPECTED_BLOBS = {
    "nanochat/optim.py": "42d862b4ff9082c9861143f0166162565e7913f6",
    "nanochat/gpt.py": "030a39da16de2a04b0e784cc0b3c1a561baabbd5",
    "nanochat/l3.py": "6f160081614c71b3820b7c594be520342a284d9b",
    "scripts/base_train.py": "a6b6211bb5195703315ede44e3f8b4bb537a0be3",
}
NUM_STEPS = 5
THREADS = 1  # fixtures are made single-threaded (tolerance.json also measures 2 threads)

# Schedule of the optimizer cases: num_iterations 6 with these ratios puts steps 0-1 in warmup,
# 2-3 flat and 4 in the warmdown, so five steps see all three phases.
CASE_SCHEDULE = dict(num_iterations=6, warmup_ratio=0.34, warmdown_ratio=0.5, final_lr_frac=0.05)
BATCH_LR_SCALE = (2 ** 18 / 2 ** 19) ** 0.5   # base_train's sqrt(B / B_ref) for B = 2^18
WEIGHT_DECAY_SCALED = 0.2 * BATCH_LR_SCALE * 1.37  # 0.2 * sqrt(B/B_ref) * D_ref/D with D_ref/D = 1.37

GPT_CONFIG = dict(sequence_len=64, vocab_size=32, n_layer=2, n_head=2, n_kv_head=2, n_embd=32,
                  window_pattern="SL", l3_after_layers="0", l3_n_emb=64, l3_d_up=32, l3_k_max=8,
                  l3_tie_kv=False)


def verify_checkout(root):
    checkout.verify_checkout(root, EXPECTED_BLOBS)


def segment(text, start, end):
    """Text from the line holding `start` up to (excluding) the line holding `end`, dedented."""
    if text.count(start) != 1:
        raise RuntimeError(f"anchor not found exactly once in base_train.py: {start!r}")
    i = text.find(start)
    i = text.rfind("\n", 0, i) + 1
    j = text.find(end, i)
    if j < 0:
        raise RuntimeError(f"end anchor not found in base_train.py: {end!r}")
    j = text.rfind("\n", 0, j) + 1
    return textwrap.dedent(text[i:j])


# ----------------------------------------------------------------------------
# The reference

class Reference:
    def __init__(self, root):
        sys.path.insert(0, str(root))
        import torch
        torch._dynamo.config.disable = True
        import nanochat.gpt as gpt_mod
        import nanochat.optim as optim_mod
        self.torch, self.gpt, self.optim = torch, gpt_mod, optim_mod
        src = (root / "scripts" / "base_train.py").read_text()
        # get_lr_multiplier, get_muon_momentum, get_weight_decay (they read args, num_iterations and
        # weight_decay_scaled from their globals at call time).
        self.schedule_code = compile(segment(src, "def get_lr_multiplier(it):", "# Training loop"),
                                     "base_train.py<schedules>", "exec")
        # The per-step update of the groups, ending with optimizer.step().
        self.step_code = compile(segment(src, "    lrm = get_lr_multiplier(step)",
                                         "    model.zero_grad(set_to_none=True)"),
                                 "base_train.py<step>", "exec")

    def schedules(self, num_iterations, warmup_ratio, warmdown_ratio, final_lr_frac, weight_decay_scaled):
        ns = {"args": types.SimpleNamespace(warmup_ratio=warmup_ratio, warmdown_ratio=warmdown_ratio,
                                            final_lr_frac=final_lr_frac),
              "num_iterations": num_iterations, "weight_decay_scaled": weight_decay_scaled}
        exec(self.schedule_code, ns)
        return ns

    def run(self, case, variant=None):
        """Runs NUM_STEPS steps of the case; returns (after1, after5, state5) keyed by parameter name.

        variant (tolerance measurements only): None, "unstacked" (every Muon parameter in a group
        of its own), ("perturbed", seed) (every float32 gradient moved by one ulp up or down, the
        direction drawn per element), "fp32_polar" (the bfloat16 casts in muon_step_fused turned
        into float32 casts), "gemm_fp32" (bfloat16 matmuls as float32 matmuls rounded once to
        bfloat16: another correct bfloat16 GEMM, which sums in another order)."""
        torch = self.torch
        params = {n: t.clone() for n, t in case["params0"].items()}
        groups = []
        for spec in case["groups"]:
            names = spec["params"]
            if variant == "unstacked" and spec["kind"] == "muon":
                for n in names:
                    groups.append(dict(spec, params=[params[n]]))
            else:
                groups.append(dict(spec, params=[params[n] for n in names]))
        # What setup_optimizer does: build the optimizer from the groups, then record initial_lr.
        optimizer = self.optim.MuonAdamW(groups)
        for group in optimizer.param_groups:
            group["initial_lr"] = group["lr"]
        ns = self.schedules(**case["schedule"])
        ns["optimizer"] = optimizer
        after1 = None
        noise = torch.Generator().manual_seed(variant[1]) if isinstance(variant, tuple) else None
        if isinstance(variant, tuple):
            variant = "fp32_polar" if variant[0] == "perturbed_fp32_polar" else None
        ctx = {"fp32_polar": fp32_polar, "gemm_fp32": gemm_fp32}.get(variant, lambda t: contextlib.nullcontext())(torch)
        with ctx, torch.no_grad():
            for step in range(NUM_STEPS):
                for n, p in params.items():
                    g = case["grads"][step][n].clone()
                    if noise is not None and g.dtype == torch.float32:
                        up = torch.rand(g.shape, generator=noise) < 0.5
                        g = torch.nextafter(g, torch.where(up, float("inf"), float("-inf")))
                    p.grad = g
                ns["step"] = step
                exec(self.step_code, ns)
                for p in params.values():
                    p.grad = None
                if step == 0:
                    after1 = {n: p.clone() for n, p in params.items()}
        return after1, {n: p.clone() for n, p in params.items()}, self.state_by_name(optimizer, params)

    def state_by_name(self, optimizer, params):
        torch = self.torch
        name_of = {id(p): n for n, p in params.items()}
        out = {}
        for group in optimizer.param_groups:
            if group["kind"] == "adamw":
                for p in group["params"]:
                    st = optimizer.state[p]
                    if not st:
                        continue
                    n = name_of[id(p)]
                    out[n + ".exp_avg"] = st["exp_avg"].clone()
                    out[n + ".exp_avg_sq"] = st["exp_avg_sq"].clone()
                    out[n + ".step"] = torch.tensor(st["step"], dtype=torch.int64)
            else:
                st = optimizer.state[group["params"][0]]
                for i, p in enumerate(group["params"]):
                    n = name_of[id(p)]
                    out[n + ".momentum_buffer"] = st["momentum_buffer"][i].clone()
                    out[n + ".second_momentum_buffer"] = st["second_momentum_buffer"][i].clone()
        return out


@contextlib.contextmanager
def fp32_polar(torch):
    """Makes `Tensor.bfloat16()` a float32 cast, so muon_step_fused runs Polar Express (and the rest
    of its update, which follows g's dtype) in float32: the bfloat16-free version of the same step."""
    original = torch.Tensor.bfloat16
    torch.Tensor.bfloat16 = lambda self, *a, **k: self.float()
    try:
        yield
    finally:
        torch.Tensor.bfloat16 = original


@contextlib.contextmanager
def gemm_fp32(torch):
    """Makes `a @ b` on bfloat16 tensors a float32 product rounded once to bfloat16: what any bfloat16
    GEMM with float32 accumulation computes, up to the order of the sums (oneDNN, cuBLAS, ...)."""
    original = torch.Tensor.__matmul__

    def matmul(a, b):
        if a.dtype == torch.bfloat16:
            return original(a.float(), b.float()).to(torch.bfloat16)
        return original(a, b)
    torch.Tensor.__matmul__ = matmul
    try:
        yield
    finally:
        torch.Tensor.__matmul__ = original


# ----------------------------------------------------------------------------
# Cases

def group_spec(group, name_of, name):
    """A reference param_group as JSON, parameters by name (everything but params and initial_lr)."""
    spec = {"name": name}
    for k, v in group.items():
        if k in ("params", "initial_lr"):
            continue
        spec[k] = list(v) if isinstance(v, tuple) else v
    spec["params"] = [name_of[id(p)] for p in group["params"]]
    return spec


def seeded_grads(torch, gen, params, scales, zero_rows):
    """NUM_STEPS steps of N(0, scale^2) gradients; tables listed in zero_rows get about a third of
    their rows zeroed per step (rows no token touched, whose AdamW update is 0 / eps)."""
    steps = []
    for _ in range(NUM_STEPS):
        grads = {}
        for n, p in params.items():
            g = torch.randn(p.shape, generator=gen, dtype=torch.float32) * scales.get(n, 0.01)
            if n in zero_rows:
                g[torch.rand(p.shape[0], generator=gen) < 0.33] = 0
            grads[n] = g.to(p.dtype)
        steps.append(grads)
    return steps


def gpt_case(ref):
    torch = ref.torch
    torch.manual_seed(4242)
    with contextlib.redirect_stdout(io.StringIO()):
        with torch.device("meta"):
            model = ref.gpt.GPT(ref.gpt.GPTConfig(**GPT_CONFIG))
        model.to_empty(device="cpu")
        model.init_weights()
        gen = torch.Generator().manual_seed(4243)
        with torch.no_grad():
            for p in model.parameters():   # zero-initialised matrices become non-zero
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)
        # base_train's call with its default learning rates (the argparse defaults) times the
        # batch-LR scale, and the scaled weight decay.
        optimizer = model.setup_optimizer(
            unembedding_lr=0.004 * BATCH_LR_SCALE, embedding_lr=0.3 * BATCH_LR_SCALE,
            scalar_lr=0.5 * BATCH_LR_SCALE, adam_betas=(0.8, 0.95),
            matrix_lr=0.02 * BATCH_LR_SCALE, weight_decay=WEIGHT_DECAY_SCALED)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    name_of = {id(p): n for n, p in model.named_parameters()}
    names = ["lm_head", "wte", "value_embeds", "resid_lambdas", "x0_lambdas", "l3_tables"]
    groups = []
    for i, g in enumerate(optimizer.param_groups):
        if g["kind"] == "adamw":
            name = names[i]
        else:
            r, c = g["params"][0].shape
            name = f"matrix_{r}x{c}"
        groups.append(group_spec(g, name_of, name))
    scales = {n: (0.5 if n.endswith("lambdas") else 0.01) for n in params}
    tables = {n for n in params if n == "transformer.wte.weight" or n.startswith("value_embeds.") or
              n.endswith(("kv_weight", "k_weight", "v_weight"))}
    grads = seeded_grads(torch, gen, params, scales, tables)
    return {"params0": params, "groups": groups, "grads": grads,
            "extra": {"gpt_config": GPT_CONFIG, "batch_lr_scale": BATCH_LR_SCALE,
                      "weight_decay_scaled": WEIGHT_DECAY_SCALED,
                      "setup_optimizer": "unembedding_lr=0.004*s, embedding_lr=0.3*s, scalar_lr=0.5*s, "
                                         "matrix_lr=0.02*s, adam_betas=(0.8, 0.95), weight_decay=wd "
                                         "(s = batch_lr_scale, wd = weight_decay_scaled)"}}


HAND_MATRICES = {   # name -> shape; Muon groups below are one per shape, as setup_optimizer makes them
    "tall.0": (48, 16), "tall.1": (48, 16), "tall.2": (48, 16),
    "wide.0": (16, 40), "wide.1": (16, 40),
    "square.0": (24, 24), "square.1": (24, 24),
    "flat.0": (3, 50),
    "odd.0": (33, 7),   # its own group with ns_steps 3
}


def hand_case(ref):
    torch = ref.torch
    gen = torch.Generator().manual_seed(5151)
    params = {}
    for n, shape in HAND_MATRICES.items():
        params[n] = torch.randn(shape, generator=gen) * shape[1] ** -0.5
    params["embed"] = torch.randn((40, 16), generator=gen)
    params["embed_bf16"] = torch.randn((20, 16), generator=gen).bfloat16()
    params["vector"] = 1.0 + 0.1 * torch.randn((7,), generator=gen)
    params["scalar"] = torch.randn((), generator=gen)
    adam = dict(kind="adamw", betas=[0.8, 0.95], eps=1e-10)
    muon = dict(kind="muon", lr=0.02, momentum=0.95, ns_steps=5, beta2=0.95, weight_decay=0.2)
    groups = [
        dict(adam, name="embed", lr=0.3, weight_decay=0.1, params=["embed", "embed_bf16"]),
        dict(adam, name="scalars", lr=0.005, betas=[0.96, 0.95], weight_decay=0.0, params=["vector", "scalar"]),
    ]
    for shape in sorted({s for n, s in HAND_MATRICES.items() if not n.startswith("odd")}):
        members = [n for n, s in HAND_MATRICES.items() if s == shape and not n.startswith("odd")]
        groups.append(dict(muon, name=f"matrix_{shape[0]}x{shape[1]}", params=members))
    groups.append(dict(muon, name="odd", ns_steps=3, params=["odd.0"]))
    scales = {"vector": 0.1, "scalar": 0.3}
    grads = seeded_grads(torch, gen, params, scales, {"embed", "embed_bf16"})
    return {"params0": params, "groups": groups, "grads": grads, "extra": {}}


# ----------------------------------------------------------------------------
# Tolerance: how far bfloat16 rounding alone moves the reference's Muon results

PERTURB_TRIALS = 8


def second_moment_error(case, base_state, other_state):
    """Worst max|other - base| / max|base| of the Muon second-moment buffers after five steps."""
    muon = [n for g in case["groups"] if g["kind"] == "muon" for n in g["params"]]
    worst = 0.0
    for n in muon:
        b, o = base_state[n + ".second_momentum_buffer"].double(), other_state[n + ".second_momentum_buffer"].double()
        worst = max(worst, (o - b).abs().max().item() / b.abs().max().item())
    return worst


def update_errors(case, base, other, which):
    """Over Muon parameters: the worst max|other - base| relative to the size of the reference's
    update (max|base - p0|) and to the parameter (max|base|), and the worst mean|other - base| /
    mean|base - p0| (a systematic error moves this one, a few flipped roundings hardly do)."""
    muon = [n for g in case["groups"] if g["kind"] == "muon" for n in g["params"]]
    out = {"max_rel_to_update": 0.0, "max_rel_to_param": 0.0, "mean_rel_to_update": 0.0}
    for n in muon:
        p0, b, o = case["params0"][n].double(), base[which][n].double(), other[which][n].double()
        diff, upd = (o - b).abs(), (b - p0).abs()
        out["max_rel_to_update"] = max(out["max_rel_to_update"], diff.max().item() / upd.max().item())
        out["max_rel_to_param"] = max(out["max_rel_to_param"], diff.max().item() / b.abs().max().item())
        out["mean_rel_to_update"] = max(out["mean_rel_to_update"], diff.mean().item() / upd.mean().item())
    return out


def adamw_errors(case, base, other, which):
    adam = [n for g in case["groups"] if g["kind"] == "adamw" for n in g["params"]]
    worst = 0.0
    for n in adam:
        b, o = base[which][n].double(), other[which][n].double()
        worst = max(worst, (o - b).abs().max().item() / max(b.abs().max().item(), 1e-30))
    return worst


def worst_of(results):
    return {w: {k: max(r[w][k] for r in results) for k in results[0][w]} for w in ("after1", "after5")}


def measure_tolerance(ref, cases):
    torch = ref.torch
    out = {"metric": "over Muon parameters, after 1 and 5 steps: max|variant - reference| / max|reference - "
                     "params0| (max_rel_to_update), / max|reference| (max_rel_to_param), and mean|variant - "
                     "reference| / mean|reference - params0| (mean_rel_to_update); worst parameter",
           "variants": {
               "threads2": "the reference itself with torch.set_num_threads(2) instead of 1",
               "unstacked": "every Muon parameter in a group of its own (other bmm batch shapes)",
               "perturbed": f"every float32 gradient moved by one ulp up or down (random per element), "
                            f"worst of {PERTURB_TRIALS} seeds: float32-level noise, which changes the Muon "
                            "result only where it flips a bfloat16 rounding or a cautious-decay mask bit",
               "gemm_fp32": "bfloat16 matmuls computed as float32 matmuls rounded once to bfloat16: "
                            "another correct bfloat16 GEMM (float32 accumulation in another order), as "
                            "on other CPUs or on CUDA",
               "fp32_polar_perturbed": "fp32_polar with perturbed gradients, against fp32_polar: the "
                                       "float32 version's own sensitivity to float32 rounding",
               "fp32_polar": "muon_step_fused with its bfloat16 casts made float32 casts (Polar Express, "
                             "the NorMuon scale and lr/wd in float32): the total effect of bfloat16",
           },
           "cases": {}}
    for name, case in cases.items():
        def errors(r, reference=case["result"]):
            base = dict(zip(("after1", "after5"), reference[:2]))
            other = dict(zip(("after1", "after5"), r[:2]))
            e = {w: update_errors(case, base, other, w) for w in ("after1", "after5")}
            e["adamw_rel_to_param_after5"] = adamw_errors(case, base, other, "after5")
            e["second_moment_rel_after5"] = second_moment_error(case, reference[2], r[2])
            return e

        res = {}
        torch.set_num_threads(2)
        res["threads2"] = errors(ref.run(case))
        torch.set_num_threads(THREADS)
        res["unstacked"] = errors(ref.run(case, "unstacked"))
        trials = [errors(ref.run(case, ("perturbed", seed))) for seed in range(PERTURB_TRIALS)]
        res["perturbed"] = worst_of(trials)
        for key in ("adamw_rel_to_param_after5", "second_moment_rel_after5"):
            res["perturbed"][key] = max(t[key] for t in trials)
        res["gemm_fp32"] = errors(ref.run(case, "gemm_fp32"))
        fp32 = ref.run(case, "fp32_polar")
        res["fp32_polar"] = errors(fp32)
        # The float32 version's own sensitivity: the same perturbed gradients, against fp32_polar.
        torch.set_num_threads(THREADS)
        trials = [errors(ref.run(case, ("perturbed_fp32_polar", seed)), reference=fp32)
                  for seed in range(PERTURB_TRIALS)]
        res["fp32_polar_perturbed"] = worst_of(trials)
        for key in ("adamw_rel_to_param_after5", "second_moment_rel_after5"):
            res["fp32_polar_perturbed"][key] = max(t[key] for t in trials)
        out["cases"][name] = res
    return out


# ----------------------------------------------------------------------------
# Schedules

def schedule_cases(ref):
    out = []
    horizons = [1, 2, 3, 5, 6, 10, 37, 100, 301, 1000, 4315]
    settings = [(0.0, 0.5, 0.0), (0.0, 0.2, 0.0), (0.25, 0.5, 0.0), (0.15, 0.25, 0.1), (0.1, 0.0, 0.05),
                (0.0, 1.0, 0.05), (0.34, 0.5, 0.05), (0.5, 0.5, 0.0)]
    for n in horizons:
        for warmup, warmdown, final in settings:
            ns = ref.schedules(n, warmup, warmdown, final, 0.2 * 1.37)
            if n <= 40:
                steps = list(range(n + 1))
            else:
                steps = sorted({0, 1, 2, n // 7, n // 3, n // 2, n - n // 2, n - n // 4, n - 2, n - 1, n,
                                round(warmup * n), round(warmup * n) - 1,
                                n - round(warmdown * n), n - round(warmdown * n) + 1} & set(range(n + 1)))
            try:
                lrm = [ns["get_lr_multiplier"](s) for s in steps]
            except ZeroDivisionError:
                continue
            out.append({"num_iterations": n, "warmup_ratio": warmup, "warmdown_ratio": warmdown,
                        "final_lr_frac": final, "weight_decay_scaled": 0.2 * 1.37, "steps": steps,
                        "lr_multiplier": lrm,
                        "weight_decay": [ns["get_weight_decay"](s) for s in steps]})
    ns = ref.schedules(1, 0.0, 0.5, 0.0, 0.0)
    momentum_steps = list(range(0, 320)) + [450, 1000, 100000]
    return {"reference": REFERENCE + " scripts/base_train.py", "generated_by": GENERATED_BY,
            "cases": out,
            "muon_momentum": {"steps": momentum_steps,
                              "values": [ns["get_muon_momentum"](s) for s in momentum_steps]}}


# ----------------------------------------------------------------------------

def save(path, tensors):
    from safetensors.torch import save_file
    save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, str(path))


def write_json(path, obj):
    path.write_text(json.dumps(obj, indent=1) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nanochat", required=True, type=Path, help="reference checkout (nanochat at b7629ef)")
    ap.add_argument("--out", required=True, type=Path, help="output folder, e.g. tests/fixtures/optim")
    args = ap.parse_args()

    root = args.nanochat.resolve()
    verify_checkout(root)
    ref = Reference(root)
    torch = ref.torch
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)

    cases = {"gpt": gpt_case(ref), "hand": hand_case(ref)}
    for name, case in cases.items():
        case["schedule"] = dict(CASE_SCHEDULE, weight_decay_scaled=WEIGHT_DECAY_SCALED)
        case["result"] = ref.run(case)
        ns = ref.schedules(**case["schedule"])
        per_step = [{"step": s, "lrm": ns["get_lr_multiplier"](s), "momentum": ns["get_muon_momentum"](s),
                     "weight_decay": ns["get_weight_decay"](s)} for s in range(NUM_STEPS)]
        after1, after5, state5 = case["result"]
        d = args.out / name
        d.mkdir(parents=True, exist_ok=True)
        save(d / "params0.safetensors", case["params0"])
        save(d / "grads.safetensors", {f"step{k}.{n}": g for k, grads in enumerate(case["grads"])
                                       for n, g in grads.items()})
        save(d / "after1.safetensors", after1)
        save(d / "after5.safetensors", after5)
        save(d / "state5.safetensors", state5)
        # The same five steps with Polar Express and the rest of the Muon update in float32 (see
        # fp32_polar): checks the Muon formulas at float32 precision, free of bfloat16 flips.
        muon = [n for g in case["groups"] if g["kind"] == "muon" for n in g["params"]]
        fp32 = ref.run(case, "fp32_polar")[1]
        save(d / "after5_fp32_polar.safetensors", {n: fp32[n] for n in muon})
        write_json(d / "case.json", {
            "groups": case["groups"],
            "schedule": case["schedule"],
            "per_step": per_step,
            "params": {n: {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape)}
                       for n, t in case["params0"].items()},
            **case["extra"],
            "num_steps": NUM_STEPS,
            "reference": REFERENCE,
            "generated_by": GENERATED_BY,
            "torch": torch.__version__,
            "threads": THREADS,
        })
        print(f"{name}: {len(case['params0'])} parameters in {len(case['groups'])} groups")

    tol = measure_tolerance(ref, cases)
    tol.update({"reference": REFERENCE, "generated_by": GENERATED_BY, "torch": torch.__version__})
    write_json(args.out / "tolerance.json", tol)
    for name, res in tol["cases"].items():
        for variant, r in res.items():
            a1, a5 = r["after1"], r["after5"]
            print(f"tolerance {name:5s} {variant:20s} max/update {a1['max_rel_to_update']:.2e} "
                  f"{a5['max_rel_to_update']:.2e}  max/param {a1['max_rel_to_param']:.2e} "
                  f"{a5['max_rel_to_param']:.2e}  mean/update {a1['mean_rel_to_update']:.2e} "
                  f"{a5['mean_rel_to_update']:.2e}  AdamW {r['adamw_rel_to_param_after5']:.1e}  "
                  f"second moment {r['second_moment_rel_after5']:.1e}")

    write_json(args.out / "schedules.json", schedule_cases(ref))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
