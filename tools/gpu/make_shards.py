"""Synthetic token shards for the GPU benchmark (tools/gpu/check.sh): no dataset download on the GPU machine.

Documents of 500..1500 tokens, each starting with BOS (the last id), the other tokens Zipf(1.1) over the
remaining ids - the skew of natural text's unigrams, so that the L3 allocations (lzw) give frequent
tokens up to k_max rows, as they do on real data. Written as l3lab shards (llm.c format: a 256 x int32
header, then uint16 tokens) with a manifest.json that l3lab reads without a tokenizer, and read by the
reference's benchmark (tools/gpu/bench_reference.py) from the same files.

    python3 tools/gpu/make_shards.py --out DIR [--vocab 32768] [--train-tokens 6000000] [--val-tokens 600000]
"""
import argparse
import bisect
import hashlib
import itertools
import json
import os
import random
import struct

ZIPF_EXPONENT = 1.1
MAGIC, VERSION = 20240520, 1


def zipf_tokens(vocab, n_tokens, seed):
    """n_tokens ids: BOS = vocab - 1 opening documents of 500..1500 tokens, Zipf ranks over 0..vocab-2."""
    rng = random.Random(seed)
    cdf = list(itertools.accumulate((r + 1) ** -ZIPF_EXPONENT for r in range(vocab - 1)))
    total = cdf[-1]
    draw_all = None
    try:  # torch (always there next to PyTorch) draws millions of tokens in a blink
        import torch
        gen = torch.Generator().manual_seed(seed)
        probs = torch.tensor([c for c in cdf], dtype=torch.float64)
        probs = torch.diff(probs, prepend=torch.zeros(1, dtype=torch.float64)) / total
        draw_all = lambda n: torch.multinomial(probs, n, replacement=True, generator=gen).tolist()
    except ImportError:
        draw_all = lambda n: [min(bisect.bisect_left(cdf, rng.random() * total), vocab - 2) for _ in range(n)]
    body = draw_all(n_tokens)
    out, i = [], 0
    while len(out) < n_tokens:
        length = rng.randint(500, 1500)
        out.append(vocab - 1)
        take = min(length - 1, n_tokens - len(out))
        out.extend(body[i:i + take])
        i += take
    return out


def write_shard(path, tokens):
    header = [0] * 256
    header[0], header[1], header[2] = MAGIC, VERSION, len(tokens)
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", *header))
        f.write(struct.pack(f"<{len(tokens)}H", *tokens))
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return digest


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--train-tokens", type=int, default=6_000_000)
    ap.add_argument("--val-tokens", type=int, default=600_000)
    ap.add_argument("--seed", type=int, default=20260131)
    args = ap.parse_args()
    assert 2 <= args.vocab <= 65536, "uint16 shards hold vocabularies up to 65536"
    os.makedirs(args.out, exist_ok=True)
    files = []
    for split, n, seed in (("train", args.train_tokens, args.seed), ("val", args.val_tokens, args.seed + 1)):
        tokens = zipf_tokens(args.vocab, n, seed)
        name = f"{split}_000000.bin"
        digest = write_shard(os.path.join(args.out, name), tokens)
        files.append({"file": name, "split": split, "tokens": len(tokens),
                      "documents": sum(1 for t in tokens if t == args.vocab - 1), "sha256": digest})
    manifest = {
        "format": "l3lab token shards", "version": 1, "created_by": "tools/gpu/make_shards.py",
        "tokenizer": {"file": "(synthetic Zipf tokens, no tokenizer)", "sha256": "0" * 64,
                      "vocab_size": args.vocab, "bos_id": args.vocab - 1},
        "shard_version": 1, "dtype": "uint16", "shard_tokens": max(args.train_tokens, args.val_tokens),
        "val_fraction": args.val_tokens / (args.train_tokens + args.val_tokens), "inputs": [], "files": files,
    }
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    print(f"{args.out}: {args.train_tokens:,} train + {args.val_tokens:,} val tokens, vocabulary {args.vocab}, "
          f"BOS {args.vocab - 1}")


if __name__ == "__main__":
    main()
