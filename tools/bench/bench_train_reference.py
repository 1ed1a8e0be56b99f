"""Time the reference's pretraining step (scripts/base_train.py of nanochat at b7629ef) on the CPU, on batches
cut from l3lab's own token shards. The counterpart of the `dt` / `tok/sec` that `build/l3lab train` prints.

    .venv/bin/python tools/bench/bench_train_reference.py --nanochat /tmp/nanochat-ref --threads 2 \\
        --compile model --depth 4 --max-seq-len 256 --window-pattern L --l3-after-layers 1 --l3-k-max 64 \\
        --device-batch-size 8 --total-batch-size 4096 --num-iterations 15

base_train itself needs nanochat's tokenizer and parquet data, so this script repeats what base_train does
around its training step, with base_train's own flag names and defaults:
the model is built as base_train builds it (meta device -> to_empty(cpu) -> init_weights; with L3 layers,
n_emb auto-derived as base_train does and the bounds from the reference's compute_lzw_allocation over 100
sample rows of max_seq_len tokens), the optimizer is model.setup_optimizer(...) with base_train's
arguments and its batch-size LR scaling and weight-decay scaling, and the timed loop is base_train's
(grad-accum micro-steps of forward/backward with the next batch fetched inside the loop, LR/momentum/weight
decay schedules, optimizer.step, zero_grad(set_to_none=True), loss.item(); the gc freeze after step 0).
Evaluation, sampling and checkpoints are left out: only the step is timed, as base_train's `dt` is.

Batches: the uint16 .bin shards (256-int32 header, tokens follow) read as one token stream, cut into
consecutive rows of T+1 tokens (no BOS best-fit packing: it does not change the cost of a step).

--compile:
  none       everything eager: TORCH_COMPILE_DISABLE=1 before torch is imported, so the model and the
             optimizer's @torch.compile'd fused kernels (adamw_step_fused, muon_step_fused) run eagerly
  optimizer  model eager, the optimizer's fused kernels compiled as shipped (inductor, C++ on the CPU)
  model      as base_train: torch.compile(model, dynamic=False), plus the optimizer's compiled kernels

The summary reports tokens/s = total_batch_size / median dt over the steps after --warmup.
With --l3lab-log RUN/train.log the script instead applies the same statistic to an l3lab run's log.
"""

import os
import sys

if "--compile" in sys.argv and sys.argv[sys.argv.index("--compile") + 1] == "none":
    os.environ["TORCH_COMPILE_DISABLE"] = "1"  # must precede `import torch`

import argparse
import contextlib
import gc
import glob
import io
import json
import math
import re
import statistics
import time
from pathlib import Path

import numpy as np


def summarize(dts, total_batch_size, warmup):
    timed = dts[warmup:]
    med = statistics.median(timed)
    return {
        "steps": len(dts),
        "warmup": warmup,
        "first_steps_ms": [round(d * 1e3, 1) for d in dts[:warmup]],
        "median_ms": round(med * 1e3, 2),
        "min_ms": round(min(timed) * 1e3, 2),
        "max_ms": round(max(timed) * 1e3, 2),
        "tok_per_s": round(total_batch_size / med),
    }


def parse_l3lab_log(path, warmup):
    dts, total = [], None
    for line in Path(path).read_text().splitlines():
        m = re.search(r"training \d+ steps of ([\d,]+) tokens", line)
        if m:
            total = int(m.group(1).replace(",", ""))
        m = re.search(r"\| dt: ([\d.]+)ms", line)
        if m and "step " in line:
            dts.append(float(m.group(1)) / 1e3)
    s = summarize(dts, total, warmup)
    s.update({"side": "l3lab", "log": str(path), "total_batch_size": total})
    print(json.dumps(s))


def token_stream(shards_glob):
    files = sorted(glob.glob(shards_glob))
    assert files, f"no shards match {shards_glob}"
    parts = []
    for f in files:
        header = np.fromfile(f, dtype=np.int32, count=256)
        n = int(header[2])
        parts.append(np.fromfile(f, dtype=np.uint16, offset=256 * 4)[:n])
    return np.concatenate(parts)


def batches(stream, B, T, torch):
    """Endless (inputs, targets) of shape (B, T): consecutive rows of T+1 tokens, wrapping around."""
    row = T + 1
    n_rows = len(stream) // row
    rows = stream[: n_rows * row].reshape(n_rows, row)
    i = 0
    while True:
        if i + B > n_rows:
            i = 0
        chunk = torch.from_numpy(rows[i : i + B].astype(np.int64))
        i += B
        yield chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nanochat", type=Path, default=Path("/tmp/nanochat-ref"), help="reference checkout")
    ap.add_argument("--shards", default="data/shards/train_*.bin", help="l3lab training shards (glob)")
    ap.add_argument("--vocab-size", type=int, default=8192, help="the shards' tokenizer's vocabulary")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    ap.add_argument("--compile", choices=["none", "optimizer", "model"], default="model")
    ap.add_argument("--warmup", type=int, default=3, help="leading steps left out of the median")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    ap.add_argument("--l3lab-log", type=Path, help="summarize an l3lab train.log instead of running the reference")
    # base_train's flags (same names and defaults)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--aspect-ratio", type=int, default=64)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--max-seq-len", type=int, default=2048)
    ap.add_argument("--window-pattern", type=str, default="SSSL")
    ap.add_argument("--l3-after-layers", type=str, default="")
    ap.add_argument("--l3-n-emb", type=int, default=0)
    ap.add_argument("--l3-d-up", type=int, default=0)
    ap.add_argument("--l3-k-max", type=int, default=512)
    ap.add_argument("--num-iterations", type=int, default=20)
    ap.add_argument("--target-param-data-ratio", type=float, default=10.5)
    ap.add_argument("--device-batch-size", type=int, default=32)
    ap.add_argument("--total-batch-size", type=int, default=-1)
    ap.add_argument("--embedding-lr", type=float, default=0.3)
    ap.add_argument("--unembedding-lr", type=float, default=0.004)
    ap.add_argument("--weight-decay", type=float, default=0.2)
    ap.add_argument("--matrix-lr", type=float, default=0.02)
    ap.add_argument("--scalar-lr", type=float, default=0.5)
    ap.add_argument("--adam-beta1", type=float, default=0.8)
    ap.add_argument("--adam-beta2", type=float, default=0.95)
    ap.add_argument("--warmup-ratio", type=float, default=0.0)
    ap.add_argument("--warmdown-ratio", type=float, default=0.5)
    ap.add_argument("--final-lr-frac", type=float, default=0.0)
    args = ap.parse_args()

    if args.l3lab_log:
        parse_l3lab_log(args.l3lab_log, args.warmup)
        return

    sys.path.insert(0, str(args.nanochat.resolve()))
    import torch
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from nanochat.gpt import GPT, GPTConfig

    quiet = contextlib.redirect_stdout(io.StringIO())
    torch.manual_seed(42)  # compute_init
    device = torch.device("cpu")
    vocab_size = args.vocab_size

    def build_model_meta(depth, l3_after_layers="", l3_n_emb=0):  # base_train's, verbatim in effect
        base_dim = depth * args.aspect_ratio
        model_dim = ((base_dim + args.head_dim - 1) // args.head_dim) * args.head_dim
        num_heads = model_dim // args.head_dim
        config = GPTConfig(
            sequence_len=args.max_seq_len, vocab_size=vocab_size,
            n_layer=depth, n_head=num_heads, n_kv_head=num_heads, n_embd=model_dim,
            window_pattern=args.window_pattern,
            l3_after_layers=l3_after_layers, l3_n_emb=l3_n_emb, l3_d_up=args.l3_d_up, l3_k_max=args.l3_k_max,
        )
        with torch.device("meta"):
            return GPT(config)

    stream = token_stream(args.shards)
    assert int(stream.max()) < vocab_size

    l3_n_emb, l3_bounds, alloc_info = args.l3_n_emb, None, None
    if args.l3_after_layers:
        from nanochat.l3 import compute_lzw_allocation, allocation_to_bounds
        if l3_n_emb == 0:
            with quiet:
                tmp_model = build_model_meta(args.depth, l3_after_layers=args.l3_after_layers, l3_n_emb=vocab_size)
            l3_n_emb = max(vocab_size, sum(p.numel() for p in tmp_model.parameters()) // 1000)
            del tmp_model
        T = args.max_seq_len
        sample_sequences = [stream[i * T:(i + 1) * T].tolist() for i in range(100)]  # 100 rows of T, batch 1
        l3_alloc = compute_lzw_allocation(sample_sequences, vocab_size, l3_n_emb, args.l3_k_max)
        l3_bounds = allocation_to_bounds(l3_alloc).to(device)
        alloc_info = {"n_emb": l3_n_emb, "max_rows": max(l3_alloc), "rows_ge2": sum(a > 1 for a in l3_alloc)}

    with quiet:
        model = build_model_meta(args.depth, l3_after_layers=args.l3_after_layers, l3_n_emb=l3_n_emb)
        model.to_empty(device=device)
        model.init_weights()
    if l3_bounds is not None:
        for l3_layer in model.l3_layers.values():
            l3_layer.set_bounds(l3_bounds)

    orig_model = model
    if args.compile == "model":
        model = torch.compile(model, dynamic=False)

    def get_scaling_params(m):
        c = m.num_scaling_params()
        return c["transformer_matrices"] + c["lm_head"]
    num_params = orig_model.num_scaling_params()["total"]
    num_scaling_params = get_scaling_params(orig_model)
    target_tokens = int(args.target_param_data_ratio * num_scaling_params)
    with quiet:
        d12_ref = build_model_meta(12)
    D_REF = args.target_param_data_ratio * get_scaling_params(d12_ref)
    B_REF = 2**19
    total_batch_size = args.total_batch_size
    if total_batch_size == -1:
        total_batch_size = 2 ** round(math.log2(B_REF * (target_tokens / D_REF) ** 0.383))
    batch_lr_scale = (total_batch_size / B_REF) ** 0.5 if total_batch_size != B_REF else 1.0
    weight_decay_scaled = args.weight_decay * math.sqrt(total_batch_size / B_REF) * (D_REF / target_tokens)

    with quiet:
        optimizer = model.setup_optimizer(
            unembedding_lr=args.unembedding_lr * batch_lr_scale,
            embedding_lr=args.embedding_lr * batch_lr_scale,
            scalar_lr=args.scalar_lr * batch_lr_scale,
            adam_betas=(args.adam_beta1, args.adam_beta2),
            matrix_lr=args.matrix_lr * batch_lr_scale,
            weight_decay=weight_decay_scaled,
        )

    train_loader = batches(stream, args.device_batch_size, args.max_seq_len, torch)
    x, y = next(train_loader)
    num_iterations = args.num_iterations
    tokens_per_fwdbwd = args.device_batch_size * args.max_seq_len
    assert total_batch_size % tokens_per_fwdbwd == 0
    grad_accum_steps = total_batch_size // tokens_per_fwdbwd

    def get_lr_multiplier(it):
        warmup_iters = round(args.warmup_ratio * num_iterations)
        warmdown_iters = round(args.warmdown_ratio * num_iterations)
        if it < warmup_iters:
            return (it + 1) / warmup_iters
        elif it <= num_iterations - warmdown_iters:
            return 1.0
        else:
            progress = (num_iterations - it) / warmdown_iters
            return progress * 1.0 + (1 - progress) * args.final_lr_frac

    def get_muon_momentum(it):
        frac = min(it / 300, 1)
        return (1 - frac) * 0.85 + frac * 0.95

    def get_weight_decay(it):
        return weight_decay_scaled * (1 - it / num_iterations)

    print(f"reference nanochat b7629ef base_train step, torch {torch.__version__}, compile={args.compile}, "
          f"{torch.get_num_threads()} threads, CPU float32")
    print(f"model: depth {args.depth}, n_embd {orig_model.config.n_embd}, T {args.max_seq_len}, vocab {vocab_size}, "
          f"window {args.window_pattern}, L3 after [{args.l3_after_layers}] {alloc_info or ''}; "
          f"{num_params:,} params; {num_iterations} steps of {total_batch_size:,} tokens "
          f"({grad_accum_steps} x {args.device_batch_size} x {args.max_seq_len})")

    dts = []
    smooth_train_loss = 0.0
    for step in range(num_iterations):
        t0 = time.time()
        for micro_step in range(grad_accum_steps):
            loss = model(x, y)
            train_loss = loss.detach()
            loss = loss / grad_accum_steps
            loss.backward()
            x, y = next(train_loader)
        lrm = get_lr_multiplier(step)
        muon_momentum = get_muon_momentum(step)
        muon_weight_decay = get_weight_decay(step)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * lrm
            if group["kind"] == "muon":
                group["momentum"] = muon_momentum
                group["weight_decay"] = muon_weight_decay
        optimizer.step()
        model.zero_grad(set_to_none=True)
        train_loss_f = train_loss.item()
        dt = time.time() - t0
        dts.append(dt)
        smooth_train_loss = 0.9 * smooth_train_loss + 0.1 * train_loss_f
        debiased = smooth_train_loss / (1 - 0.9 ** (step + 1))
        print(f"step {step:05d}/{num_iterations:05d} | loss: {debiased:.6f} | lrm: {lrm:.2f} | dt: {dt * 1000:.2f}ms"
              f" | tok/sec: {int(total_batch_size / dt):,}", flush=True)
        if step == 0:  # base_train's gc handling after the first step
            gc.collect()
            gc.freeze()
            gc.disable()

    s = summarize(dts, total_batch_size, args.warmup)
    s.update({"side": "reference", "compile": args.compile, "threads": torch.get_num_threads(),
              "total_batch_size": total_batch_size, "params": num_params, "l3": alloc_info})
    print(json.dumps(s))
    if args.json:
        args.json.write_text(json.dumps(s) + "\n")


if __name__ == "__main__":
    main()
