"""The same training curve: nanochat's own scripts/base_train.py against `l3lab train`, on the same parquet
data and the same tokenizer.pkl, side by side.

    PYTHONPATH=.fixtures-venv .venv/bin/python tools/reference/compare_curves.py --nanochat /tmp/nanochat-ref \\
        --corpus data/corpus/linux-doc.jsonl --work /tmp/curves --depth 2 --steps 50 [--l3-after-layers 1]

Data: --parquet DIR takes a nanochat base_data/ directory as it is; otherwise --corpus (a .jsonl of
{"text": ...}) is written into --files parquet files with row groups of --row-group documents (the last
file is validation, as nanochat's dataset.py splits). Tokenizer: --tokenizer DIR takes nanochat's
tokenizer/ directory; otherwise `l3lab data train-tokenizer` trains one (--vocab-size) on the training
files, and token_bytes.pt is written beside it as nanochat's tok_train.py writes it (base_train reads it).

The reference runs unchanged: `python -m scripts.base_train` in the checkout, with NANOCHAT_BASE_DIR
holding base_data/ and tokenizer/, on the CPU in float32 (base_train autocasts to bf16 only on CUDA),
with TORCH_COMPILE_DISABLE=1 (eager, so both sides round the same way; the step itself is the same), wandb
replaced by an empty module (base_train imports it; its run 'dummy' never calls it), and these flags:
--device-type cpu --depth D --max-seq-len T --window-pattern L --device-batch-size B --total-batch-size B*T
--num-iterations N --eval-every E --eval-tokens B*T*K --core-metric-every -1 --sample-every -1
[--l3-after-layers ...]. l3lab gets the same data (`l3lab data tokenize --split nanochat` of the same
files) and the equivalent YAML (experiments/base.yaml with those values, `model.l3.allocation: frequency`,
the reference PR's rule, when L3 is on).

Prints every evaluation and every --print-every'th step's loss of both; exits 1 when the step-0 loss or
validation bpb differ by more than 1e-5 or a later validation bpb by more than 1e-3 relative.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def write_parquet(corpus, out_dir, files, row_group):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = [json.loads(line)["text"] for line in open(corpus, encoding="utf-8") if line.strip()]
    out_dir.mkdir(parents=True, exist_ok=True)
    per_file = (len(docs) + files - 1) // files
    for f in range(files):
        part = docs[f * per_file:(f + 1) * per_file]
        pq.write_table(pa.table({"text": part}), out_dir / f"shard_{f:05d}.parquet", row_group_size=row_group)
    print(f"wrote {files} parquet files of {len(docs):,} documents (row groups of {row_group}) to {out_dir}")


def write_token_bytes(tokenizer_dir):
    """scripts/tok_train.py's token_bytes.pt, computed from the Encoding in tokenizer.pkl."""
    import pickle
    import torch

    with open(tokenizer_dir / "tokenizer.pkl", "rb") as f:
        enc = pickle.load(f)
    special_set = set(enc.special_tokens_set)
    token_bytes = []
    for token_id in range(enc.n_vocab):
        token_str = enc.decode([token_id])
        token_bytes.append(0 if token_str in special_set else len(token_str.encode("utf-8")))
    torch.save(torch.tensor(token_bytes, dtype=torch.int32, device="cpu"), tokenizer_dir / "token_bytes.pt")
    return enc.n_vocab


def run_reference(args, base_dir, log_path):
    stub = args.work / "stub"
    stub.mkdir(exist_ok=True)
    (stub / "wandb.py").write_text("# base_train imports wandb; with --run dummy it never calls it\n")
    env = dict(os.environ, NANOCHAT_BASE_DIR=str(base_dir), TORCH_COMPILE_DISABLE="1",
               OMP_NUM_THREADS=str(args.threads), PYTHONPATH=os.pathsep.join(
                   [str(stub), str(args.nanochat.resolve())] +
                   [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    bt = args.batch * args.seq
    cmd = [sys.executable, "-m", "scripts.base_train", "--device-type", "cpu", "--depth", str(args.depth),
           "--max-seq-len", str(args.seq), "--window-pattern", "L", "--device-batch-size", str(args.batch),
           "--total-batch-size", str(bt), "--num-iterations", str(args.steps), "--eval-every", str(args.eval_every),
           "--eval-tokens", str(bt * args.eval_batches), "--core-metric-every", "-1", "--sample-every", "-1"]
    if args.l3_after_layers:
        cmd += ["--l3-after-layers", args.l3_after_layers, "--l3-k-max", str(args.l3_k_max)]
    print("reference:", " ".join(cmd[1:]))
    with open(log_path, "w") as log:
        subprocess.run(cmd, cwd=args.nanochat, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    text = log_path.read_text()
    losses = {int(m.group(1)): float(m.group(2)) for m in re.finditer(r"^step (\d+)/\d+ .*?\| loss: ([0-9.]+)", text, re.M)}
    bpbs = {int(m.group(1)): float(m.group(2)) for m in re.finditer(r"^Step (\d+) \| Validation bpb: ([0-9.]+)", text, re.M)}
    return losses, bpbs


def l3lab_yaml(args, vocab_size):
    """The experiment equivalent to run_reference's flags; {TOKENIZER} and {SHARDS} stand for the paths."""
    bt = args.batch * args.seq
    l3 = f"[{args.l3_after_layers}]" if args.l3_after_layers else "[]"
    return f"""extends: {{BASE}}
name: compare-curves
device: cpu
model:
  vocab_size: {vocab_size}
  sequence_len: {args.seq}
  depth: {args.depth}
  window_pattern: L
  l3: {{after_layers: {l3}, k_max: {args.l3_k_max}, allocation: frequency}}
horizon: {{num_iterations: {args.steps}}}
batch: {{device_batch_size: {args.batch}, total_batch_size: {bt}}}
eval: {{every: {args.eval_every}, tokens: {bt * args.eval_batches}, core_every: -1}}
sample: {{every: -1}}
data:
  tokenizer: {{TOKENIZER}}
  train: {{SHARDS}}/train_*.bin
  val: {{SHARDS}}/val_*.bin
"""


def run_l3lab(args, parquet_dir, tokenizer_dir, vocab_size):
    shards = args.work / "shards"
    if shards.exists():
        shutil.rmtree(shards)
    subprocess.run([args.l3lab, "data", "tokenize", "--tokenizer", str(tokenizer_dir), "--input", str(parquet_dir),
                    "--split", "nanochat", "--output", str(shards)], check=True, stdout=subprocess.DEVNULL)
    config = args.work / "l3lab.yaml"
    config.write_text(l3lab_yaml(args, vocab_size).replace("{BASE}", str(ROOT / "experiments" / "base.yaml"))
                      .replace("{TOKENIZER}", str(tokenizer_dir)).replace("{SHARDS}", str(shards)))
    run_dir = args.work / "l3lab-run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), L3LAB_PROGRESS="off")
    with open(args.work / "l3lab.log", "w") as log:
        subprocess.run([args.l3lab, "train", str(config), "--run-dir", str(run_dir)], env=env, stdout=log,
                       stderr=subprocess.STDOUT, check=True)
    losses, bpbs = {}, {}
    for line in open(run_dir / "metrics.jsonl"):
        r = json.loads(line)
        if r.get("kind") == "train":
            losses[r["step"]] = r["loss"]
        elif r.get("kind") == "val":
            bpbs[r["step"]] = r["bpb"]
    return losses, bpbs


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nanochat", required=True, type=Path, help="nanochat checkout at b7629ef")
    p.add_argument("--work", required=True, type=Path)
    p.add_argument("--parquet", type=Path, help="a nanochat base_data/ directory")
    p.add_argument("--corpus", type=Path, help="a .jsonl corpus to write as parquet files")
    p.add_argument("--files", type=int, default=4)
    p.add_argument("--row-group", type=int, default=64)
    p.add_argument("--tokenizer", type=Path, help="a nanochat tokenizer/ directory")
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--l3-after-layers", default="")
    p.add_argument("--l3-k-max", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--print-every", type=int, default=5)
    p.add_argument("--l3lab", default=str(ROOT / "build" / "l3lab"))
    p.add_argument("--json", type=Path, help="write both curves here")
    p.add_argument("--golden", type=Path,
                   help="run only the reference and write its curve with the equivalent l3lab YAML here (a CTest fixture)")
    args = p.parse_args()
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)

    base_dir = args.work / "nanochat_base"
    base_dir.mkdir(exist_ok=True)
    parquet_dir = base_dir / "base_data"
    if parquet_dir.is_symlink() or parquet_dir.exists():
        shutil.rmtree(parquet_dir) if not parquet_dir.is_symlink() else parquet_dir.unlink()
    if args.parquet:
        parquet_dir.symlink_to(args.parquet.resolve())
    elif args.corpus:
        write_parquet(args.corpus, parquet_dir, args.files, args.row_group)
    else:
        sys.exit("error: give --parquet DIR or --corpus FILE.jsonl")
    tokenizer_dir = base_dir / "tokenizer"
    if tokenizer_dir.exists():
        shutil.rmtree(tokenizer_dir)
    if args.tokenizer:
        shutil.copytree(args.tokenizer.resolve(), tokenizer_dir)
    else:
        train_files = sorted(str(f) for f in parquet_dir.glob("*.parquet"))[:-1]
        subprocess.run([args.l3lab, "data", "train-tokenizer", "--input", *train_files, "--vocab-size",
                        str(args.vocab_size), "--output", str(tokenizer_dir)], check=True, stdout=subprocess.DEVNULL)
    vocab_size = write_token_bytes(tokenizer_dir)

    ref_loss, ref_bpb = run_reference(args, base_dir, args.work / "reference.log")
    if args.golden:
        args.golden.write_text(json.dumps({
            "generated_by": "tools/reference/compare_curves.py --golden", "reference": "karpathy/nanochat@b7629ef scripts/base_train.py",
            "command": " ".join(sys.argv[1:]), "yaml": l3lab_yaml(args, vocab_size),
            "loss": {str(k): v for k, v in sorted(ref_loss.items())}, "bpb": {str(k): v for k, v in sorted(ref_bpb.items())}},
            indent=1) + "\n")
        print(f"wrote {args.golden}: {len(ref_loss)} steps, {len(ref_bpb)} evaluations")
        return
    our_loss, our_bpb = run_l3lab(args, parquet_dir, tokenizer_dir, vocab_size)

    print(f"\n{'L3 after layers ' + args.l3_after_layers if args.l3_after_layers else 'dense'}, depth {args.depth}, "
          f"sequence {args.seq}, batch {args.batch}x{args.seq}, {args.steps} steps, vocabulary {vocab_size:,}\n")
    print("| step | val bpb: reference | l3lab | rel. diff | loss: reference | l3lab |")
    print("|---:|---:|---:|---:|---:|---:|")
    failures = []
    steps = sorted(set(ref_bpb) | set(s for s in ref_loss if s % args.print_every == 0))
    for s in steps:
        rb, ob = ref_bpb.get(s), our_bpb.get(s)
        rl, ol = ref_loss.get(s), our_loss.get(s)
        rel = abs(ob - rb) / rb if rb is not None and ob is not None else None
        cell = lambda v, f="{:.6f}": f.format(v) if v is not None else "-"
        print(f"| {s} | {cell(rb)} | {cell(ob)} | {cell(rel, '{:.1e}')} | {cell(rl)} | {cell(ol)} |")
        if rb is not None:
            if ob is None:
                failures.append(f"step {s}: l3lab has no validation bpb")
            elif s == 0 and abs(ob - rb) > 1e-5:
                failures.append(f"step 0: validation bpb {ob:.6f} vs {rb:.6f}")
            elif s > 0 and rel > 1e-3:
                failures.append(f"step {s}: validation bpb {ob:.6f} vs {rb:.6f} ({rel:.1e} relative)")
    if 0 in ref_loss and (0 not in our_loss or abs(our_loss[0] - ref_loss[0]) > 1e-5):
        failures.append(f"step 0: loss {our_loss.get(0)} vs {ref_loss[0]:.6f}")
    if args.json:
        args.json.write_text(json.dumps({"reference": {"loss": ref_loss, "bpb": ref_bpb},
                                         "l3lab": {"loss": our_loss, "bpb": our_bpb}}, indent=1))
    print("\n" + ("\n".join(failures) if failures else "within the targets: step 0 within 1e-5, every later validation bpb within 1e-3 relative"))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
