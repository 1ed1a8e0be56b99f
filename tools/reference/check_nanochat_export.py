"""An l3lab checkpoint in nanochat: `l3lab export` it, load it with nanochat's own checkpoint_manager.build_model
(strict=True) and compute nanochat's evaluate_bpb on nanochat's own validation loader, next to `l3lab eval` of the
same checkpoint on the same data.

    PYTHONPATH=.fixtures-venv .venv/bin/python tools/reference/check_nanochat_export.py --nanochat /tmp/nanochat-ref \\
        --base-dir /tmp/curves/nanochat_base --run /tmp/curves/l3lab-run

--base-dir is a NANOCHAT_BASE_DIR with base_data/ (the parquet files the run's shards were made from with
`--split nanochat`) and tokenizer/ (tokenizer.pkl and token_bytes.pt): tools/reference/compare_curves.py leaves
one, with its l3lab run, in its --work directory. The export goes to base_dir/base_checkpoints/<tag>.
Prints both bpb values and exits 1 when they differ by more than 1e-5 relative.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nanochat", required=True, type=Path)
    p.add_argument("--base-dir", required=True, type=Path)
    p.add_argument("--run", required=True, type=Path)
    p.add_argument("--tag", default="l3lab-export")
    p.add_argument("--l3lab", default=str(ROOT / "build" / "l3lab"))
    args = p.parse_args()
    out = args.base_dir / "base_checkpoints"
    subprocess.run([args.l3lab, "export", str(args.run), "--output", str(out), "--tag", args.tag], check=True)
    ours = json.loads(subprocess.run([args.l3lab, "eval", str(args.run), "--json"], check=True, capture_output=True,
                                     text=True, env=dict(os.environ, L3LAB_PROGRESS="off")).stdout)
    import yaml
    cfg = yaml.safe_load((args.run / "config.yaml").read_text())
    B, T, tokens = cfg["batch"]["device_batch_size"], cfg["model"]["sequence_len"], cfg["eval"]["tokens"]

    os.environ["NANOCHAT_BASE_DIR"] = str(args.base_dir)
    sys.path.insert(0, str(args.nanochat))
    import torch
    from nanochat.checkpoint_manager import build_model, find_last_step
    from nanochat.dataloader import tokenizing_distributed_data_loader_bos_bestfit
    from nanochat.loss_eval import evaluate_bpb
    from nanochat.tokenizer import get_token_bytes

    ckpt = out / args.tag
    step = find_last_step(str(ckpt))
    try:
        model, tokenizer, meta = build_model(str(ckpt), step, torch.device("cpu"), "eval")
        how = "build_model"
    except RuntimeError as e:
        if "bounds" not in str(e):
            raise
        # nanochat b7629ef's build_model cannot load any L3 checkpoint, its own included: GPT registers each
        # L3 layer's bounds as zeros(1) and load_state_dict(strict=True) refuses the saved [V+1] bounds. The
        # same steps as build_model, with the bounds set from the checkpoint before the load:
        from nanochat.checkpoint_manager import load_checkpoint
        from nanochat.gpt import GPT, GPTConfig
        from nanochat.tokenizer import get_tokenizer
        model_data, _, meta = load_checkpoint(str(ckpt), step, torch.device("cpu"))
        model_data = {k.removeprefix("_orig_mod."): v for k, v in model_data.items()}
        with torch.device("meta"):
            model = GPT(GPTConfig(**meta["model_config"]))
        model.to_empty(device="cpu")
        model.init_weights()
        for name, layer in model.l3_layers.items():
            layer.set_bounds(model_data[f"l3_layers.{name}.bounds"])
        model.load_state_dict(model_data, strict=True, assign=True)
        model.eval()
        tokenizer = get_tokenizer()
        how = "build_model's steps + set_bounds (build_model itself refuses L3 bounds)"
    loader = tokenizing_distributed_data_loader_bos_bestfit(tokenizer, B, T, "val", device="cpu")
    steps = tokens // (B * T)
    with torch.no_grad():
        bpb = evaluate_bpb(model, loader, steps, get_token_bytes(device="cpu"))
    rel = abs(bpb - ours["bpb"]) / bpb
    print(f"nanochat {how} ({ckpt}, step {step}) + evaluate_bpb over {steps} batches of {B}x{T}: {bpb:.6f}")
    print(f"l3lab eval {args.run}: {ours['bpb']:.6f} ({ours['tokens']:,} tokens); relative difference {rel:.1e}")
    sys.exit(0 if rel <= 1e-5 else 1)


if __name__ == "__main__":
    main()
