"""The reference's training step on one GPU, as nanochat's scripts/base_train.py (commit b7629ef) runs it:
PYTORCH_ALLOC_CONF=expandable_segments:True, torch.set_float32_matmul_precision("high"), the model built on
the meta device then to_empty(cuda) + init_weights (bf16 embedding tables), torch.compile(model,
dynamic=False), bf16 autocast around forward, model.setup_optimizer with base_train's batch-size scaling
(the optimizer's own @torch.compile'd fused steps), zero_grad(set_to_none=True), loss.item() and
torch.cuda.synchronize() around each timed step. Attention goes through nanochat/flash_attention.py:
Flash Attention 3 when the `kernels` package can fetch it (not on an offline machine), else PyTorch SDPA
with an explicit mask for the sliding-window layers - what base_train does on the same machine.

Batches: consecutive rows of T+1 tokens of l3lab's token shards (tools/gpu/make_shards.py); with L3 layers
the bounds come from l3lab's allocation cache (--l3-rows, JSON {"rows": [...]}) so that both sides look
up the same rows (the reference's own rule would give every token about the same few rows).

Prints one JSON line: median step time after --warmup steps, tokens/s, MFU (estimate_flops against
nanochat's get_peak_flops table), peak memory (torch.cuda.max_memory_allocated), or {"error": "OOM"}.

    python3 tools/gpu/bench_reference.py --nanochat DIR --shards DIR --depth 12 [--l3-after-layers 3,7
        --l3-rows rows.json] [--device-batch-size 32] [--steps 15] [--warmup 5]
"""
import os

os.environ.setdefault("PYTORCH_ALLOC_CONF", "expandable_segments:True")  # base_train's first line

import argparse
import contextlib
import glob
import io
import json
import math
import statistics
import sys
import time


def token_rows(shards, T, torch):
    parts = []
    for path in sorted(glob.glob(os.path.join(shards, "train_*.bin"))):
        data = open(path, "rb").read()
        n = int.from_bytes(data[8:12], "little")
        parts.append(torch.frombuffer(bytearray(data[1024:1024 + 2 * n]), dtype=torch.int16).to(torch.int64) & 0xFFFF)
    stream = torch.cat(parts)
    rows = stream.numel() // (T + 1)
    return stream[: rows * (T + 1)].view(rows, T + 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nanochat", required=True, help="reference checkout (nanochat at b7629ef)")
    ap.add_argument("--shards", required=True)
    ap.add_argument("--vocab-size", type=int, default=32768)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--aspect-ratio", type=int, default=64)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--max-seq-len", type=int, default=2048)
    ap.add_argument("--window-pattern", default="SSSL")
    ap.add_argument("--l3-after-layers", default="")
    ap.add_argument("--l3-rows", help="JSON with the per-token row counts (l3lab's allocation cache file)")
    ap.add_argument("--l3-k-max", type=int, default=512)
    ap.add_argument("--device-batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=5, help="leading steps (compilation) left out of the median")
    ap.add_argument("--compile", choices=["model", "none"], default="model")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                    help="cpu: a smoke test of this script on a machine without a GPU (no autocast, no timing meaning)")
    args = ap.parse_args()

    sys.path.insert(0, os.path.abspath(args.nanochat))
    import torch
    from nanochat.common import get_peak_flops
    from nanochat.gpt import GPT, GPTConfig

    quiet = contextlib.redirect_stdout(io.StringIO())
    cuda = args.device == "cuda"
    device = torch.device(args.device)
    torch.manual_seed(42)
    if cuda:
        torch.cuda.manual_seed(42)
        torch.set_float32_matmul_precision("high")
    synchronize = torch.cuda.synchronize if cuda else (lambda: None)
    max_memory = torch.cuda.max_memory_allocated if cuda else (lambda: 0)
    B, T, V = args.device_batch_size, args.max_seq_len, args.vocab_size

    def build_model_meta(depth, l3_after_layers="", l3_n_emb=0):  # base_train's
        base_dim = depth * args.aspect_ratio
        model_dim = ((base_dim + args.head_dim - 1) // args.head_dim) * args.head_dim
        num_heads = model_dim // args.head_dim
        config = GPTConfig(sequence_len=T, vocab_size=V, n_layer=depth, n_head=num_heads, n_kv_head=num_heads,
                           n_embd=model_dim, window_pattern=args.window_pattern, l3_after_layers=l3_after_layers,
                           l3_n_emb=l3_n_emb, l3_d_up=0, l3_k_max=args.l3_k_max)
        with torch.device("meta"):
            return GPT(config)

    bounds, n_emb = None, 0
    if args.l3_after_layers:
        rows = json.load(open(args.l3_rows))["rows"]
        assert len(rows) == V, f"{args.l3_rows}: {len(rows)} rows for a vocabulary of {V}"
        n_emb = sum(rows)
        bounds = torch.tensor([0] + rows, dtype=torch.long).cumsum(0).to(device)

    with quiet:
        model = build_model_meta(args.depth, args.l3_after_layers, n_emb)
        model.to_empty(device=device)
        model.init_weights()
    if bounds is not None:
        for layer in model.l3_layers.values():
            layer.set_bounds(bounds)
    orig_model = model
    if args.compile == "model":
        model = torch.compile(model, dynamic=False)

    # base_train's horizon-free scaling: batch-size LR scale and weight decay relative to d12 at 2^19 tokens.
    def scaling_params(m):
        c = m.num_scaling_params()
        return c["transformer_matrices"] + c["lm_head"]
    total_batch_size = B * T
    target_tokens = 10.5 * scaling_params(orig_model)
    with quiet:
        D_REF = 10.5 * scaling_params(build_model_meta(12))
    B_REF = 2 ** 19
    batch_lr_scale = (total_batch_size / B_REF) ** 0.5
    weight_decay = 0.2 * math.sqrt(total_batch_size / B_REF) * (D_REF / target_tokens)
    with quiet:
        optimizer = orig_model.setup_optimizer(unembedding_lr=0.004 * batch_lr_scale, embedding_lr=0.3 * batch_lr_scale,
                                               scalar_lr=0.5 * batch_lr_scale, adam_betas=(0.8, 0.95),
                                               matrix_lr=0.02 * batch_lr_scale, weight_decay=weight_decay)
    flops_per_token = orig_model.estimate_flops()
    device_name = torch.cuda.get_device_name(0) if cuda else "cpu"
    peak_flops = get_peak_flops(device_name) if cuda else float("inf")
    data = token_rows(args.shards, T, torch)
    autocast = torch.amp.autocast(device_type="cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    result = {"side": "reference", "depth": args.depth, "l3_after_layers": args.l3_after_layers, "batch": B,
              "seq": T, "compile": args.compile, "device": device_name, "torch": torch.__version__}
    dts = []
    try:
        row = 0
        for step in range(args.steps):
            if row + B > data.size(0):
                row = 0
            chunk = data[row:row + B].pin_memory().to(device, non_blocking=True) if cuda else data[row:row + B]
            row += B
            x, y = chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()
            synchronize()
            t0 = time.time()
            with autocast:
                loss = model(x, y)
            loss.backward()
            frac = min(step / 300, 1)
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"]
                if group["kind"] == "muon":
                    group["momentum"] = (1 - frac) * 0.85 + frac * 0.95
                    group["weight_decay"] = weight_decay
            optimizer.step()
            model.zero_grad(set_to_none=True)
            loss_f = loss.item()
            synchronize()
            dts.append(time.time() - t0)
            print(f"reference step {step:03d} | loss {loss_f:.4f} | dt {dts[-1] * 1000:.1f} ms", file=sys.stderr, flush=True)
    except torch.OutOfMemoryError:
        result.update({"error": "OOM", "steps_done": len(dts),
                       "peak_memory_mib": max_memory() / 2 ** 20})
        print(json.dumps(result))
        return
    timed = dts[args.warmup:] or dts
    dt = statistics.median(timed)
    result.update({
        "steps": len(dts), "warmup": args.warmup, "first_steps_ms": [round(d * 1e3, 1) for d in dts[:args.warmup]],
        "median_ms": round(dt * 1e3, 2), "tok_per_s": round(total_batch_size / dt),
        "steps_per_s": round(1 / dt, 3), "mfu": round(100 * flops_per_token * total_batch_size / dt / peak_flops, 2),
        "peak_memory_mib": round(max_memory() / 2 ** 20, 1),
        "flops_per_token": flops_per_token, "l3_n_emb": n_emb,
    })
    print(json.dumps(result))


if __name__ == "__main__":
    main()
