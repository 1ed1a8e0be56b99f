"""Golden batches of nanochat's own data loader on real parquet files with nanochat's tokenizer.

  data       tests/fixtures/parquet/base_data/shard_0000{0,1,2}.parquet, written with pyarrow: documents from
             make_bpe_fixtures.py's generator (a few bytes to several rows long, unicode, code), some
             repeated (equal lengths: the loader's ties), one empty text, row groups of different sizes
             per file (the last file is validation, as nanochat's dataset.py splits).
  tokenizer  tests/fixtures/bpe/full/tokenizer.pkl (make_bpe_fixtures.py), loaded by nanochat's
             RustBPETokenizer.from_directory.
  loader     nanochat b7629ef nanochat/dataloader.py tokenizing_distributed_data_loader_with_state_bos_bestfit,
             run unchanged on the CPU with real pyarrow reading the files (NANOCHAT_BASE_DIR points at a copy
             of base_data/); only get_dist_info is replaced, to give the case's rank and world size.
  output     tests/fixtures/parquet/batches.json: per case (split, B, T, buffer_size, rank, world_size) the
             first batches as rows of T+1 tokens (inputs[r] + the last target) and the state_dict's epoch.

    PYTHONPATH=.fixtures-venv .venv/bin/python tools/reference/make_parquet_loader_fixtures.py --nanochat /tmp/nanochat-ref
"""

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from checkout import verify_checkout  # noqa: E402
from make_bpe_fixtures import make_document  # noqa: E402

ROOT = HERE.parents[1]
OUT = ROOT / "tests" / "fixtures" / "parquet"
TOKENIZER = ROOT / "tests" / "fixtures" / "bpe" / "full"
GENERATED_BY = "tools/reference/make_parquet_loader_fixtures.py"
REFERENCE = "karpathy/nanochat@b7629eff5d5985b9dc9b0198b45cb7783484b1b2"
SEED = 4242
# (documents, row_group_size) per file; the last file is validation
FILES = [(41, 9), (26, 5), (19, 4)]
CASES = [  # split, B, T, buffer_size, world_size, batches
    ("train", 2, 64, 1000, 1, 6),
    ("train", 3, 64, 12, 1, 8),
    ("train", 2, 64, 12, 2, 8),
    ("val", 2, 64, 1000, 1, 4),
    ("val", 2, 48, 6, 2, 6),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nanochat", required=True, type=Path)
    args = parser.parse_args()
    verify_checkout(args.nanochat, {"nanochat/dataloader.py": "125625f93d6397ba189e6edcb3bd2201a80da732",
                                    "nanochat/tokenizer.py": "a2146c2e44f6bc83479f95886084dd966ad6618c"})
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(SEED)
    data_dir = OUT / "base_data"
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    for f, (n, rg) in enumerate(FILES):
        docs = [make_document(rng)[: rng.choice([8, 40, 200, 2000])] for _ in range(n)]
        docs[3] = docs[1]  # the same document twice: equal lengths
        if f == 0:
            docs[5] = ""   # an empty text: a lone BOS in nanochat's loader
        pq.write_table(pa.table({"text": docs, "id": list(range(n))}), data_dir / f"shard_{f:05d}.parquet", row_group_size=rg)

    base = Path(tempfile.mkdtemp(prefix="nanochat-base-"))
    shutil.copytree(data_dir, base / "base_data")
    os.environ["NANOCHAT_BASE_DIR"] = str(base)
    sys.path.insert(0, str(args.nanochat))
    import nanochat.dataloader as dl
    from nanochat.tokenizer import RustBPETokenizer

    tokenizer = RustBPETokenizer.from_directory(str(TOKENIZER))
    out = []
    for split, B, T, buffer_size, world, n_batches in CASES:
        for rank in range(world):
            dl.get_dist_info = lambda rank=rank, world=world: (world > 1, rank, rank, world)
            loader = dl.tokenizing_distributed_data_loader_with_state_bos_bestfit(
                tokenizer, B, T, split, device="cpu", buffer_size=buffer_size)
            batches = []
            for _ in range(n_batches):
                inputs, targets, state = next(loader)
                assert (inputs[:, 1:] == targets[:, :-1]).all()
                rows = [inputs[r].tolist() + [targets[r, -1].item()] for r in range(B)]
                batches.append({"rows": rows, "epoch": state["epoch"]})
            out.append({"split": split, "B": B, "T": T, "buffer_size": buffer_size, "rank": rank, "world_size": world,
                        "batches": batches})
    shutil.rmtree(base)
    with open(OUT / "batches.json", "w") as f:
        json.dump({"generated_by": GENERATED_BY, "reference": REFERENCE, "tokenizer": "tests/fixtures/bpe/full",
                   "files": [{"documents": n, "row_group_size": rg} for n, rg in FILES], "cases": out}, f)
    print(f"{len(out)} cases -> {OUT / 'batches.json'}")


if __name__ == "__main__":
    main()
