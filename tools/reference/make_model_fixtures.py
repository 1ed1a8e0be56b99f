"""Generate golden model-parity fixtures by running the reference nanochat code.

For each case this builds the reference `GPT(GPTConfig(...))` (nanochat/gpt.py) on
CPU in float32 exactly as scripts/base_train.py does (meta device, `to_empty`,
`init_weights()`), sets the L3 bounds from the reference's own
`compute_lzw_allocation` + `allocation_to_bounds` (nanochat/l3.py, l3lab's
`allocation: frequency`) on a seeded sample of token sequences, and then adds
seeded Gaussian noise to every floating parameter so that no gradient is
trivially zero (c_proj, w_mix and ve_gate start at zero in the reference).
It then records, for a seeded batch:

  * logits = model(idx)                                   [B, T, V] float32
  * loss   = model(idx, targets) (mean) and, after backward, every parameter's grad
  * losses = model(idx, targets, loss_reduction='none')   [B*T] float32

It also writes stand-alone `L3Layer` cases (output and gradients of
(out * g).sum() with respect to x and every parameter).

Nothing here re-implements the model: every number comes from the reference's
modules.  Attention on CPU goes through the reference's SDPA fallback
(nanochat/flash_attention.py), which honours sliding windows with an explicit
boolean mask (key j visible to query i iff j <= i and i - j <= window).

Getting the reference checkout (karpathy/nanochat at b7629ef):

    git clone https://github.com/karpathy/nanochat /tmp/nanochat
    mkdir -p /tmp/nanochat-ref
    git -C /tmp/nanochat archive b7629ef | tar -x -C /tmp/nanochat-ref

Only torch (CPU), filelock and safetensors are needed.

Usage:

    .venv/bin/python tools/reference/make_model_fixtures.py \\
        --nanochat /tmp/nanochat-ref --out tests/fixtures/model

`--profile compact` (default, ~8 MB, n_embd 48) or `--profile spec` (MODEL_CASES as first
specified, n_embd 128/192, ~46 MB).  Both use the same case names, seeds and layout; the tests read
every dimension from case.json.  The output is bit-for-bit reproducible on CPU (one thread).

Layout written (one folder per case):

    <out>/<case>/weights.safetensors   full state_dict (parameters float32, L3 `bounds` int64)
    <out>/<case>/batch.safetensors     idx, targets (int64 [B, T]; ~10% of targets are -1)
    <out>/<case>/outputs.safetensors   logits, losses_none, grad.<param name>
    <out>/<case>/alloc_sample.safetensors  (L3 cases) the token sample the bounds came from
    <out>/<case>/case.json
    <out>/l3_layer/<case>/weights.safetensors  kv_weight | k_weight, v_weight; w_up.weight; w_mix.weight; bounds
    <out>/l3_layer/<case>/inputs.safetensors   x [B,T,C] float32, ids [B,T] int64, g [B,T,C] float32
    <out>/l3_layer/<case>/outputs.safetensors  out, grad.x, grad.<param name>
    <out>/l3_layer/<case>/alloc_sample.safetensors
    <out>/l3_layer/<case>/case.json
"""

import argparse
import json
import sys

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import checkout  # noqa: E402  (tools/reference/checkout.py)
from pathlib import Path

REFERENCE = "karpathy/nanochat@b7629eff5d5985b9dc9b0198b45cb7783484b1b2"
GENERATED_BY = "tools/reference/make_model_fixtures.py"
# `git rev-parse b7629ef:<path>` for the files whose code is executed.
EXPECTED_BLOBS = {
    "nanochat/gpt.py": "030a39da16de2a04b0e784cc0b3c1a561baabbd5",
    "nanochat/l3.py": "6f160081614c71b3820b7c594be520342a284d9b",
    "nanochat/flash_attention.py": "89ca42bcf00c603f89670d090f4faeb5b7ade313",
}

SEQ_LEN = 64
BATCH = 2
NOISE_STD = 0.02          # Gaussian noise added to every floating parameter of the GPT cases
IGNORE_FRACTION = 0.10    # fraction of targets set to -1
SAMPLE_ROWS = 100         # rows in the allocation sample (base_train also uses 100 rows of T tokens)

# GPTConfig fields exactly as passed to the reference (sequence_len is SEQ_LEN everywhere).
# --profile spec.
MODEL_CASES = {
    "two_l3_tied": dict(
        seed=1001, n_layer=4, n_embd=128, n_head=2, n_kv_head=2, vocab_size=300,
        window_pattern="SSSL", l3_after_layers="1,2", l3_n_emb=1500, l3_d_up=96,
        l3_k_max=16, l3_tie_kv=True),
    "one_l3_untied": dict(
        seed=1002, n_layer=2, n_embd=128, n_head=4, n_kv_head=4, vocab_size=257,
        window_pattern="L", l3_after_layers="0", l3_n_emb=700, l3_d_up=64,
        l3_k_max=8, l3_tie_kv=False),
    "gqa_sl_dense": dict(
        seed=1003, n_layer=3, n_embd=128, n_head=4, n_kv_head=2, vocab_size=200,
        window_pattern="SL"),
    "gqa_l3_window": dict(
        seed=1004, n_layer=5, n_embd=192, n_head=3, n_kv_head=1, vocab_size=333,
        window_pattern="SSL", l3_after_layers="3", l3_n_emb=2000, l3_d_up=128,
        l3_k_max=32, l3_tie_kv=True),
}

# Same cases shrunk to n_embd 48 (and smaller L3 tables) so that the whole fixture tree stays
# around 8 MB; every structural feature of the "spec" cases is kept (layer counts, window patterns,
# GQA ratios, L3 placement and tying, vocabulary padding).  This is the default profile and what
# tests/fixtures/model holds; --profile spec writes the larger MODEL_CASES (~46 MB).
COMPACT_CASES = {
    "two_l3_tied": dict(
        seed=1001, n_layer=4, n_embd=48, n_head=2, n_kv_head=2, vocab_size=300,
        window_pattern="SSSL", l3_after_layers="1,2", l3_n_emb=700, l3_d_up=32,
        l3_k_max=16, l3_tie_kv=True),
    "one_l3_untied": dict(
        seed=1002, n_layer=2, n_embd=48, n_head=4, n_kv_head=4, vocab_size=257,
        window_pattern="L", l3_after_layers="0", l3_n_emb=400, l3_d_up=32,
        l3_k_max=8, l3_tie_kv=False),
    "gqa_sl_dense": dict(
        seed=1003, n_layer=3, n_embd=48, n_head=4, n_kv_head=2, vocab_size=200,
        window_pattern="SL"),
    "gqa_l3_window": dict(
        seed=1004, n_layer=5, n_embd=48, n_head=3, n_kv_head=1, vocab_size=333,
        window_pattern="SSL", l3_after_layers="3", l3_n_emb=1000, l3_d_up=32,
        l3_k_max=32, l3_tie_kv=True),
}

L3_LAYER_CASES = {
    "tied": dict(seed=2001, n_embd=64, n_emb=600, vocab_size=100, d_up=48, k_max=12, tie_kv=True),
    "untied": dict(seed=2002, n_embd=64, n_emb=500, vocab_size=120, d_up=32, k_max=9, tie_kv=False),
}


def verify_checkout(root):
    checkout.verify_checkout(root, EXPECTED_BLOBS)


def zipf_sample(gen, vocab_size, rows, cols):
    """Seeded token sample with a skewed (Zipf-like, randomly permuted) unigram distribution,
    so that the frequency ranking the reference allocation sorts by is not trivial."""
    import torch
    ranks = torch.arange(1, vocab_size + 1, dtype=torch.float64)
    probs = (1.0 / ranks)[torch.randperm(vocab_size, generator=gen)]
    flat = torch.multinomial(probs, rows * cols, replacement=True, generator=gen)
    return flat.view(rows, cols).to(torch.int64)


def reference_bounds(l3mod, sample, vocab_size, n_emb, k_max):
    alloc = l3mod.compute_lzw_allocation(sample.tolist(), vocab_size, n_emb, k_max)
    bounds = l3mod.allocation_to_bounds(alloc)
    assert bounds.dtype.is_floating_point is False and bounds.numel() == vocab_size + 1
    return alloc, bounds


def save(path, tensors):
    from safetensors.torch import save_file
    # safetensors refuses shared storage (the reference hands the *same* bounds tensor to every
    # L3 layer), so every tensor is cloned into its own contiguous storage.
    save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, str(path))


def write_json(path, obj):
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def make_model_case(name, spec, out_dir, gpt_mod, l3_mod, profile):
    import torch
    seed = spec["seed"]
    fields = {k: v for k, v in spec.items() if k != "seed"}
    fields["sequence_len"] = SEQ_LEN
    config = gpt_mod.GPTConfig(**fields)
    V = config.vocab_size

    # Build exactly as base_train.py does: meta -> to_empty(cpu) -> init_weights().
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = gpt_mod.GPT(config)
    model.to_empty(device="cpu")
    model.init_weights()

    gen = torch.Generator().manual_seed(seed)
    alloc_info = None
    sample = None
    if len(model.l3_layers) > 0:
        sample = zipf_sample(gen, V, SAMPLE_ROWS, SEQ_LEN)
        alloc, bounds = reference_bounds(l3_mod, sample, V, config.l3_n_emb, config.l3_k_max)
        for layer in model.l3_layers.values():
            layer.set_bounds(bounds)     # same tensor for every layer, as in base_train.py
        alloc_info = dict(min=min(alloc), max=max(alloc), total=sum(alloc),
                          alloc=alloc)

    # Noise on every floating parameter (zero-initialised matrices become non-zero).
    with torch.no_grad():
        for pname, p in model.named_parameters():
            assert p.dtype == torch.float32, (pname, p.dtype)
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * NOISE_STD)

    idx = torch.randint(0, V, (BATCH, SEQ_LEN), generator=gen, dtype=torch.int64)
    targets = torch.randint(0, V, (BATCH, SEQ_LEN), generator=gen, dtype=torch.int64)
    ignore = torch.rand((BATCH, SEQ_LEN), generator=gen) < IGNORE_FRACTION
    targets[ignore] = -1

    with torch.no_grad():
        logits = model(idx)
    model.zero_grad(set_to_none=True)
    loss = model(idx, targets)
    loss.backward()
    grads = {}
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        grads["grad." + pname] = p.grad
    with torch.no_grad():
        losses_none = model(idx, targets, loss_reduction="none")

    sd = model.state_dict()
    # consistency checks of what we are about to save
    assert logits.dtype == torch.float32 and logits.shape == (BATCH, SEQ_LEN, V)
    assert losses_none.shape == (BATCH * SEQ_LEN,)
    valid = targets.view(-1) != -1
    assert torch.allclose(losses_none[valid].mean(), loss.detach(), rtol=1e-6, atol=1e-6)
    assert bool((losses_none[~valid] == 0).all())

    d = out_dir / name
    d.mkdir(parents=True, exist_ok=True)
    save(d / "weights.safetensors", sd)
    save(d / "batch.safetensors", {"idx": idx, "targets": targets})
    save(d / "outputs.safetensors", {"logits": logits, "losses_none": losses_none, **grads})
    if sample is not None:
        save(d / "alloc_sample.safetensors", {"sample": sample})
    padded = model.transformer.wte.weight.shape[0]
    case = {
        "gpt_config": fields,
        "padded_vocab_size": padded,
        "window_sizes": [list(w) for w in model.window_sizes],
        "loss_mean": loss.item(),
        "num_ignored_targets": int((~valid).sum()),
        "noise_std": NOISE_STD,
        "profile": profile,
        "l3_allocation": ({"rule": "frequency (reference compute_lzw_allocation)",
                           "sample": f"alloc_sample.safetensors 'sample' int64 [{SAMPLE_ROWS}, {SEQ_LEN}]",
                           "min": alloc_info["min"], "max": alloc_info["max"],
                           "total": alloc_info["total"]} if alloc_info else None),
        "state_dict": {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)}
                       for k, v in sd.items()},
        "rotary_buffers": {"cos": {"dtype": str(model.cos.dtype).replace("torch.", ""),
                                   "shape": list(model.cos.shape), "persistent": False}},
        "reference": REFERENCE,
        "generated_by": GENERATED_BY,
        "torch": torch.__version__,
        "seed": seed,
    }
    write_json(d / "case.json", case)
    return loss.item()


def make_l3_case(name, spec, out_dir, l3_mod):
    import torch
    seed = spec["seed"]
    C, n_emb, V, d_up, k_max, tie = (spec[k] for k in ("n_embd", "n_emb", "vocab_size", "d_up", "k_max", "tie_kv"))
    gen = torch.Generator().manual_seed(seed)
    layer = l3_mod.L3Layer(C, n_emb, d_up, tie)
    with torch.no_grad():
        for pname, p in layer.named_parameters():
            if pname in ("kv_weight", "k_weight", "v_weight"):
                p.copy_(torch.randn(p.shape, generator=gen))                       # N(0, 1)
            else:   # w_up.weight, w_mix.weight: uniform(+-sqrt(3/fan_in)) (non-zero, unlike the reference's w_mix init)
                s = 3 ** 0.5 * p.shape[1] ** -0.5
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * s)
    sample = zipf_sample(gen, V, SAMPLE_ROWS, SEQ_LEN)
    alloc, bounds = reference_bounds(l3_mod, sample, V, n_emb, k_max)
    layer.set_bounds(bounds)

    x = torch.randn((BATCH, SEQ_LEN, C), generator=gen).requires_grad_(True)
    ids = torch.randint(0, V, (BATCH, SEQ_LEN), generator=gen, dtype=torch.int64)
    g = torch.randn((BATCH, SEQ_LEN, C), generator=gen)
    out = layer(x, ids)
    (out * g).sum().backward()
    grads = {"grad.x": x.grad}
    for pname, p in layer.named_parameters():
        assert p.grad is not None, pname
        grads["grad." + pname] = p.grad

    sd = layer.state_dict()
    d = out_dir / "l3_layer" / name
    d.mkdir(parents=True, exist_ok=True)
    save(d / "weights.safetensors", sd)
    save(d / "inputs.safetensors", {"x": x.detach(), "ids": ids, "g": g})
    save(d / "outputs.safetensors", {"out": out.detach(), **grads})
    save(d / "alloc_sample.safetensors", {"sample": sample})
    case = {
        "l3_config": {"n_embd": C, "n_emb": n_emb, "d_up": d_up, "tie_kv": tie,
                      "vocab_size": V, "k_max": k_max},
        "l3_allocation": {"rule": "frequency (reference compute_lzw_allocation)",
                          "sample": f"alloc_sample.safetensors 'sample' int64 [{SAMPLE_ROWS}, {SEQ_LEN}]",
                          "min": min(alloc), "max": max(alloc), "total": sum(alloc)},
        "objective": "sum(out * g); grads w.r.t. x and every parameter",
        "state_dict": {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)}
                       for k, v in sd.items()},
        "reference": REFERENCE,
        "generated_by": GENERATED_BY,
        "torch": torch.__version__,
        "seed": seed,
    }
    write_json(d / "case.json", case)
    return float((out.detach() * g).sum())


def make_init_case(out_dir, gpt_mod):
    """The reference's seeded initialisation: torch.manual_seed(seed), build on meta, to_empty, init_weights.

    libtorch shares PyTorch's CPU generator, so l3lab's init_weights() after the same seed and the same
    call order must give these exact tensors."""
    import torch
    config = dict(sequence_len=64, vocab_size=300, n_layer=3, n_head=2, n_kv_head=2, n_embd=48,
                  window_pattern="SL", l3_after_layers="0,2", l3_n_emb=600, l3_d_up=32, l3_k_max=8,
                  l3_tie_kv=False)
    seed = 1234
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = gpt_mod.GPT(gpt_mod.GPTConfig(**config))
    model.to_empty(device="cpu")
    model.init_weights()
    case_dir = out_dir / "init"
    case_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if not k.endswith(".bounds")}
    save(case_dir / "weights.safetensors", tensors)
    write_json(case_dir / "case.json", {"gpt_config": config, "seed": seed, "reference": REFERENCE,
                                        "generated_by": "tools/reference/make_model_fixtures.py",
                                        "torch": torch.__version__})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nanochat", required=True, type=Path, help="reference checkout (nanochat at b7629ef)")
    ap.add_argument("--out", required=True, type=Path, help="output folder, e.g. tests/fixtures/model")
    ap.add_argument("--profile", choices=("spec", "compact"), default="compact",
                    help="spec: the cases as specified (~46 MB); compact: n_embd 48 versions (~8 MB)")
    args = ap.parse_args()

    root = args.nanochat.resolve()
    verify_checkout(root)
    sys.path.insert(0, str(root))
    import torch
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    import nanochat.gpt as gpt_mod
    import nanochat.l3 as l3_mod
    import nanochat.flash_attention as fa_mod
    if fa_mod.HAS_FA3:
        sys.exit("error: FA3 is active; fixtures must come from the CPU SDPA path")

    args.out.mkdir(parents=True, exist_ok=True)
    cases = MODEL_CASES if args.profile == "spec" else COMPACT_CASES
    for name, spec in cases.items():
        loss = make_model_case(name, spec, args.out, gpt_mod, l3_mod, args.profile)
        print(f"{name}: loss_mean={loss:.8f}")
    for name, spec in L3_LAYER_CASES.items():
        obj = make_l3_case(name, spec, args.out, l3_mod)
        print(f"l3_layer/{name}: sum(out*g)={obj:.6f}")
    make_init_case(args.out, gpt_mod)
    print("init: seeded reference initialisation")


if __name__ == "__main__":
    main()
