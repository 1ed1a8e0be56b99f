"""Generate golden fixtures for the data loader and bits per byte by running nanochat's own code.

  bestfit  karpathy/nanochat@b7629ef nanochat/dataloader.py
           tokenizing_distributed_data_loader_with_state_bos_bestfit, run unchanged on CPU. Its document
           source is fed through stand-ins for what it imports: pyarrow.parquet.ParquetFile serves the
           case's files as lists of row groups of document keys, nanochat.dataset.list_parquet_files
           lists them (plus a last, unused "val" file, as the reference splits), nanochat.common.
           get_dist_info gives the case's rank and world size, and a tokenizer stand-in maps each key to
           its tokens (BOS prepended, as the reference's encode(prepend=bos) does).
  bpb      nanochat/loss_eval.py evaluate_bpb, with a model stand-in that returns given per-token losses.

Nothing here re-implements either function; the stand-ins only supply inputs.

Documents: document d of file f has `lengths[f][d]` tokens: BOS (1) then tokens
token(f, d, p) = 2 + (f * 1000003 + d * 7919 + p * 31) % (vocab_size - 2) for p = 1 .. length-1, so
l3lab's test can write the same documents into shards (one shard per file, documents in order).

Getting the inputs:

    mkdir -p /tmp/nanochat-ref
    git -C <karpathy/nanochat clone> archive b7629ef | tar -x -C /tmp/nanochat-ref

Usage:

    .venv/bin/python tools/reference/make_loader_fixtures.py --nanochat /tmp/nanochat-ref \\
        --out-bestfit tests/fixtures/data/bestfit_cases.json --out-bpb tests/fixtures/data/bpb_cases.json

Output (bestfit): {"cases": [{name, note, vocab_size, bos, B, T, buffer_size, row_group_docs, rank,
world_size, lengths: [[...] per file], batches: [{rows: [B lists of T+1 tokens], epoch}]}]}; rows[r] is
inputs[r] followed by the last target of row r (the loader's inputs and targets are checked to be one
row shifted before they are recorded).
"""

import argparse
import hashlib
import importlib.util
import json
import random
import sys
import types
from pathlib import Path

import torch

GENERATED_BY = "tools/reference/make_loader_fixtures.py"
REFERENCE = "karpathy/nanochat@b7629eff5d5985b9dc9b0198b45cb7783484b1b2"
# `git rev-parse b7629ef:<path>`
BLOBS = {
    "nanochat/dataloader.py": "125625f93d6397ba189e6edcb3bd2201a80da732",
    "nanochat/loss_eval.py": "5a556e6c2c8f4409b04d3dba08f487d1fed176a5",
}
BOS = 1
SEED = 20240520


def token(f, d, p, vocab_size):
    return 2 + (f * 1000003 + d * 7919 + p * 31) % (vocab_size - 2)


def check_blob(root, rel):
    data = (Path(root) / rel).read_bytes()
    blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    if blob != BLOBS[rel]:
        sys.exit(f"error: {rel} has blob {blob}, expected {BLOBS[rel]} (nanochat b7629ef)")


# ----------------------------------------------------------------------------
# Stand-ins for the reference loader's imports


class Env:
    """What the stand-ins serve; set per case before the generator is created."""
    files = []  # per file: list of row groups, each a list of document keys
    docs = {}  # key -> tokens without BOS
    rank = 0
    world_size = 1


class _Column:
    def __init__(self, texts):
        self.texts = texts

    def to_pylist(self):
        return list(self.texts)


class _RowGroup:
    def __init__(self, texts):
        self.texts = texts

    def column(self, name):
        assert name == "text"
        return _Column(self.texts)


class FakeParquetFile:
    def __init__(self, path):
        self.groups = Env.files[int(Path(path).stem.split("_")[1])] if "val" not in path else []

    @property
    def num_row_groups(self):
        return len(self.groups)

    def read_row_group(self, i):
        return _RowGroup(self.groups[i])


class FakeTokenizer:
    def get_bos_token_id(self):
        return BOS

    def encode(self, texts, prepend=None, num_threads=None):
        assert prepend == BOS
        return [[prepend] + Env.docs[t] for t in texts]


def load_reference(root):
    for rel in BLOBS:
        check_blob(root, rel)
    pyarrow = types.ModuleType("pyarrow")
    parquet = types.ModuleType("pyarrow.parquet")
    parquet.ParquetFile = FakeParquetFile
    pyarrow.parquet = parquet
    nanochat = types.ModuleType("nanochat")
    nanochat.__path__ = []
    common = types.ModuleType("nanochat.common")
    common.get_dist_info = lambda: (Env.world_size > 1, Env.rank, Env.rank, Env.world_size)
    dataset = types.ModuleType("nanochat.dataset")
    dataset.list_parquet_files = lambda: [f"file_{i}.parquet" for i in range(len(Env.files))] + ["val_x.parquet"]
    sys.modules.update({"pyarrow": pyarrow, "pyarrow.parquet": parquet, "nanochat": nanochat,
                        "nanochat.common": common, "nanochat.dataset": dataset})
    modules = {}
    for name in ("dataloader", "loss_eval"):
        spec = importlib.util.spec_from_file_location(f"nanochat.{name}", Path(root) / "nanochat" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules[name] = module
    return modules["dataloader"], modules["loss_eval"]


# ----------------------------------------------------------------------------
# Cases


def make_lengths(rng, counts, short, medium, long):
    """Per file, document lengths (BOS included): mostly short, some medium, a few long."""
    out = []
    for n in counts:
        lengths = []
        for _ in range(n):
            r = rng.random()
            hi = short if r < 0.7 else medium if r < 0.95 else long
            lengths.append(rng.randint(1, hi))
        out.append(lengths)
    return out


def bestfit_case(loader_module, name, note, rng, counts, length_ranges, B, T, buffer_size, row_group_docs,
                 rank, world_size, n_batches, vocab_size=50000):
    lengths = make_lengths(rng, counts, *length_ranges)
    Env.files, Env.docs = [], {}
    for f, file_lengths in enumerate(lengths):
        keys = []
        for d, n in enumerate(file_lengths):
            key = f"f{f}/d{d}"
            Env.docs[key] = [token(f, d, p, vocab_size) for p in range(1, n)]
            keys.append(key)
        Env.files.append([keys[i:i + row_group_docs] for i in range(0, len(keys), row_group_docs)])
    Env.rank, Env.world_size = rank, world_size
    kwargs = dict(device="cpu")
    if buffer_size != 1000:
        kwargs["buffer_size"] = buffer_size
    gen = loader_module.tokenizing_distributed_data_loader_with_state_bos_bestfit(FakeTokenizer(), B, T, "train", **kwargs)
    batches = []
    for _ in range(n_batches):
        inputs, targets, state = next(gen)
        assert torch.equal(inputs[:, 1:], targets[:, :-1]), "targets are not the inputs shifted by one"
        rows = torch.cat([inputs, targets[:, -1:]], dim=1).tolist()
        assert all(row[0] == BOS for row in rows), "a row does not start with BOS"
        batches.append({"rows": rows, "epoch": state["epoch"]})
    epochs = sorted({b["epoch"] for b in batches})
    print(f"  {name}: {sum(counts)} documents, {n_batches} batches, epochs {epochs}")
    return dict(name=name, note=note, vocab_size=vocab_size, bos=BOS, B=B, T=T, buffer_size=buffer_size,
                row_group_docs=row_group_docs, rank=rank, world_size=world_size, lengths=lengths, batches=batches)


def bestfit_cases(loader_module):
    rng = random.Random(SEED)
    cases = [
        bestfit_case(loader_module, "one_rank_default_buffer",
                     "buffer 1000, row groups of 300 enter in batches of 128, 128 and 44; crosses into epoch 2",
                     rng, counts=[600, 450], length_ranges=(12, 40, 120), B=4, T=32, buffer_size=1000,
                     row_group_docs=300, rank=0, world_size=1, n_batches=70),
        bestfit_case(loader_module, "rank1_of3_small_buffer",
                     "rank 1 of 3: row groups 1, 4, 7 of file 0, group 1 of file 1, nothing of file 2 "
                     "(one group); buffer 64 < refill batch 128; several epochs",
                     rng, counts=[400, 130, 20], length_ranges=(20, 50, 150), B=3, T=48, buffer_size=64,
                     row_group_docs=50, rank=1, world_size=3, n_batches=60),
        bestfit_case(loader_module, "rank0_of2_tiny_corpus",
                     "fewer documents per epoch than the buffer holds: filling it runs through many epochs",
                     rng, counts=[150, 90], length_ranges=(8, 20, 40), B=2, T=16, buffer_size=1000,
                     row_group_docs=64, rank=0, world_size=2, n_batches=25),
        bestfit_case(loader_module, "rank1_of2_tiny_corpus", "the other rank of the same corpus",
                     random.Random(SEED + 2), counts=[150, 90], length_ranges=(8, 20, 40), B=2, T=16,
                     buffer_size=1000, row_group_docs=64, rank=1, world_size=2, n_batches=25),
        bestfit_case(loader_module, "long_documents",
                     "the reference's row groups of 1024 and buffer 1000; many documents longer than a row",
                     rng, counts=[1400], length_ranges=(60, 200, 600), B=2, T=64, buffer_size=1000,
                     row_group_docs=1024, rank=0, world_size=1, n_batches=40),
    ]
    return cases


def bpb_cases(loss_eval_module):
    g = torch.Generator().manual_seed(SEED)
    cases = []
    for name, vocab, B, T, steps, ignore, zero_bytes in [
        ("plain", 50, 2, 8, 3, False, False),
        ("ignored_targets", 40, 3, 5, 2, True, False),
        ("special_and_ignored", 64, 2, 16, 4, True, True),
        ("nothing_counted", 6, 1, 4, 1, False, None),
    ]:
        token_bytes = torch.randint(1, 9, (vocab,), generator=g, dtype=torch.int32)
        if zero_bytes:
            token_bytes[:5] = 0  # special tokens
        if zero_bytes is None:
            token_bytes[:] = 0
        batches, losses = [], []
        for _ in range(steps):
            y = torch.randint(0, vocab, (B, T), generator=g)
            if ignore:
                y[torch.rand((B, T), generator=g) < 0.2] = -1
            if zero_bytes:
                y[torch.rand((B, T), generator=g) < 0.2] = 0
            batches.append((torch.zeros_like(y), y))
            losses.append((torch.rand((B, T), generator=g) * 8).float())

        class StubModel:
            def __init__(self):
                self.it = iter(losses)

            def get_device(self):
                return torch.device("cpu")

            def __call__(self, x, y, loss_reduction="mean"):
                assert loss_reduction == "none"
                return next(self.it)

        bpb = loss_eval_module.evaluate_bpb(StubModel(), batches, steps, token_bytes)
        cases.append(dict(name=name, token_bytes=token_bytes.tolist(),
                          batches=[{"targets": y.view(-1).tolist(), "losses": l.view(-1).tolist()}
                                   for (_, y), l in zip(batches, losses)],
                          bpb=None if bpb == float("inf") else bpb))
        print(f"  bpb {name}: {bpb}")
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nanochat", required=True, help="checkout of nanochat b7629ef")
    ap.add_argument("--out-bestfit", required=True)
    ap.add_argument("--out-bpb", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    loader_module, loss_eval_module = load_reference(args.nanochat)
    header = {"generated_by": GENERATED_BY, "reference": REFERENCE}
    bestfit = dict(header, function="nanochat/dataloader.py tokenizing_distributed_data_loader_with_state_bos_bestfit",
                   token_rule="token(f, d, p) = 2 + (f * 1000003 + d * 7919 + p * 31) % (vocab_size - 2)",
                   cases=bestfit_cases(loader_module))
    bpb = dict(header, function="nanochat/loss_eval.py evaluate_bpb", cases=bpb_cases(loss_eval_module))
    for path, data in ((args.out_bestfit, bestfit), (args.out_bpb, bpb)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, separators=(",", ":")) + "\n")
        print(f"wrote {path} ({Path(path).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
