"""Time one step of the reference's MuonAdamW (nanochat/optim.py, eager: torch.compile disabled) for a
GPT's parameters grouped by the reference's own setup_optimizer, on the CPU in float32. The counterpart
of build/tools/bench/bench_optim (same shapes, same thread count, same table).

    .venv/bin/python tools/bench/bench_optim_reference.py --nanochat /tmp/nanochat-ref --threads 2

The AdamW groups and the Muon groups are stepped by two optimizers over the same parameters (one
optimizer steps the same groups in the same order), so the table splits the step into both parts.
Gradients are fixed random tensors; the first step (state allocation) is not timed.
"""

import os

os.environ["TORCH_COMPILE_DISABLE"] = "1"  # before torch is imported: run the step kernels eagerly

import argparse
import contextlib
import io
import statistics
import sys
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nanochat", required=True, type=Path, help="reference checkout (nanochat at b7629ef)")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()

    sys.path.insert(0, str(args.nanochat.resolve()))
    import torch
    torch._dynamo.config.disable = True
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    import nanochat.gpt as gpt_mod
    import nanochat.optim as optim_mod

    torch.manual_seed(1234)
    n_head = max(args.width // args.head_dim, 1)
    config = gpt_mod.GPTConfig(sequence_len=2048, vocab_size=args.vocab, n_layer=args.layers, n_head=n_head,
                               n_kv_head=n_head, n_embd=args.width)
    with contextlib.redirect_stdout(io.StringIO()):
        with torch.device("meta"):
            model = gpt_mod.GPT(config)
        model.to_empty(device="cpu")
        model.init_weights()
        groups = model.setup_optimizer(unembedding_lr=0.004, embedding_lr=0.3, matrix_lr=0.02, scalar_lr=0.5,
                                       adam_betas=(0.8, 0.95), weight_decay=0.2).param_groups
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 0.01

    def strip(g):
        return {k: v for k, v in g.items() if k != "initial_lr"}
    adamw = optim_mod.MuonAdamW([strip(g) for g in groups if g["kind"] == "adamw"])
    muon = optim_mod.MuonAdamW([strip(g) for g in groups if g["kind"] == "muon"])
    adamw_numel = sum(p.numel() for g in groups if g["kind"] == "adamw" for p in g["params"])
    muon_numel = sum(p.numel() for g in groups if g["kind"] == "muon" for p in g["params"])

    def timed(opt):
        t0 = time.perf_counter()
        opt.step()
        return time.perf_counter() - t0

    for _ in range(args.warmup):
        adamw.step()
        muon.step()
    t_adamw, t_muon = [], []
    for _ in range(args.steps):
        t_adamw.append(timed(adamw))
        t_muon.append(timed(muon))
    t_total = [a + m for a, m in zip(t_adamw, t_muon)]

    print(f"MuonAdamW step, reference nanochat b7629ef (torch {torch.__version__}, eager), CPU float32, "
          f"{torch.get_num_threads()} threads")
    n_muon_groups = sum(g["kind"] == "muon" for g in groups)
    print(f"model: {args.layers} layers, n_embd {args.width}, vocab {args.vocab}; AdamW {adamw_numel / 1e6:.1f}M "
          f"params, Muon {muon_numel / 1e6:.1f}M params in {n_muon_groups} shape groups")
    print(f"{'':8s} {'median ms':>12s} {'min ms':>12s} {'max ms':>12s}   (median of {args.steps} steps after "
          f"{args.warmup} warm-up)")
    for name, t in (("adamw", t_adamw), ("muon", t_muon), ("total", t_total)):
        print(f"{name:8s} {statistics.median(t) * 1e3:12.1f} {min(t) * 1e3:12.1f} {max(t) * 1e3:12.1f}")


if __name__ == "__main__":
    main()
