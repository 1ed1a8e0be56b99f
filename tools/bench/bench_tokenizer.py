"""nanochat's tokenizer, l3lab against rustbpe + tiktoken, side by side on the same text and cores.

  training  nanochat's RustBPETokenizer.train_from_iterator (rustbpe) over tok_train.py's text iterator,
            against `l3lab data train-tokenizer --type bpe` (the whole command: reading the .jsonl,
            splitting, counting, merging, writing tokenizer.pkl); the two vocabularies must be equal.
  encoding  tiktoken's encode_ordinary_batch(docs, num_threads=T) with that Encoding (the call nanochat's
            tokenizer makes), against `l3lab data tokenize --val-fraction 0 --threads T` (the whole
            command: reading, encoding, writing shards); the token streams must be equal (BOS + ids per
            document, in order).
  parquet   the same documents, four times over, written as 8 parquet files (row groups of 1,024, nanochat's layout): pyarrow's
            to-Python path as nanochat's loader reads them (ParquetFile.read_row_group(i).column("text")
            .to_pylist() for every row group) against build/tools/bench/bench_parquet (l3lab's DocumentReader
            over Arrow's C++ reader: UTF-8 checked, a std::string per document; single-threaded like pyarrow's
            loop); the texts must be equal.
  Interleaved: each repeat runs one side then the other. MB/s = UTF-8 bytes of text / seconds (median).

    PYTHONPATH=.fixtures-venv .venv/bin/python tools/bench/bench_tokenizer.py --nanochat /tmp/nanochat-ref \\
        --input data/corpus/linux-doc.jsonl --vocab-size 8192 --threads 1 2 --repeats 3

(tiktoken, rustbpe and tokenizers in a separate directory: see tools/reference/make_bpe_fixtures.py.)
"""

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def tok_train_iterator(docs, doc_cap, max_chars):
    """scripts/tok_train.py's text_iterator."""
    nchars = 0
    for doc in docs:
        doc_text = doc[:doc_cap] if len(doc) > doc_cap else doc
        nchars += len(doc_text)
        yield doc_text
        if nchars > max_chars:
            return


def read_shards(directory):
    tokens = []
    manifest = json.loads((Path(directory) / "manifest.json").read_text())
    for f in manifest["files"]:
        data = np.fromfile(Path(directory) / f["file"], dtype=np.uint16 if manifest["shard_version"] == 1 else np.uint32)
        tokens.append(data[512:].astype(np.int64))  # 256 int32 of header = 512 uint16
    return np.concatenate(tokens)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nanochat", required=True, type=Path)
    parser.add_argument("--input", required=True)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--doc-cap", type=int, default=10_000)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--l3lab", default=str(ROOT / "build" / "l3lab"))
    args = parser.parse_args()
    sys.path.insert(0, str(args.nanochat))
    from nanochat.tokenizer import RustBPETokenizer
    import tiktoken

    docs = [json.loads(line)["text"] for line in open(args.input, encoding="utf-8") if line.strip()]
    docs = [d for d in docs if d]
    text_bytes = sum(len(d.encode("utf-8")) for d in docs)
    train_chars = sum(min(len(d), args.doc_cap) for d in docs)
    print(f"{len(docs):,} documents, {text_bytes / 1e6:.1f} MB of text ({train_chars / 1e6:.1f} M characters after doc_cap)")
    work = Path(tempfile.mkdtemp(prefix="bench-tokenizer-"))

    import pyarrow as pa
    import pyarrow.parquet as pq
    parquet_dir = work / "parquet"
    parquet_dir.mkdir()
    many = docs * 4  # 85 MB: long enough to time
    per = (len(many) + 7) // 8
    for f in range(8):
        pq.write_table(pa.table({"text": many[f * per:(f + 1) * per]}), parquet_dir / f"shard_{f:05d}.parquet",
                       row_group_size=1024)
    read_ref, read_ours = [], []
    for rep in range(args.repeats):
        t0 = time.perf_counter()
        texts = []
        for path in sorted(parquet_dir.glob("*.parquet")):
            pf = pq.ParquetFile(path)
            for g in range(pf.num_row_groups):
                texts.extend(pf.read_row_group(g).column("text").to_pylist())
        read_ref.append(time.perf_counter() - t0)
        assert texts == many
        res = subprocess.run([str(Path(args.l3lab).parent / "tools" / "bench" / "bench_parquet"), str(parquet_dir)],
                             check=True, capture_output=True, text=True)
        r = json.loads(res.stdout)
        assert r["documents"] == len(many) and r["bytes"] == 4 * text_bytes
        read_ours.append(r["seconds"])

    rows = []
    for threads in args.threads:
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads), L3LAB_PROGRESS="off")
        os.environ["RAYON_NUM_THREADS"] = str(threads)  # rustbpe's and tiktoken's pools read it when first used
        train_ref, train_ours, enc_ref, enc_ours = [], [], [], []
        for rep in range(args.repeats):
            t0 = time.perf_counter()
            ref = RustBPETokenizer.train_from_iterator(tok_train_iterator(docs, args.doc_cap, 2_000_000_000), args.vocab_size)
            train_ref.append(time.perf_counter() - t0)
            out = work / f"tok-{threads}-{rep}"
            t0 = time.perf_counter()
            subprocess.run([args.l3lab, "data", "train-tokenizer", "--input", args.input, "--vocab-size", str(args.vocab_size),
                            "--doc-cap", str(args.doc_cap), "--threads", str(threads), "--output", str(out)],
                           check=True, env=env, stdout=subprocess.DEVNULL)
            train_ours.append(time.perf_counter() - t0)
            with open(out / "tokenizer.pkl", "rb") as f:
                ours = pickle.load(f)
            assert ours._mergeable_ranks == ref.enc._mergeable_ranks, "l3lab's merges differ from rustbpe's"
            assert ours._special_tokens == ref.enc._special_tokens and ours._pat_str == ref.enc._pat_str

            t0 = time.perf_counter()
            ids = ref.enc.encode_ordinary_batch(docs, num_threads=threads)
            enc_ref.append(time.perf_counter() - t0)
            shards = work / f"shards-{threads}-{rep}"
            t0 = time.perf_counter()
            subprocess.run([args.l3lab, "data", "tokenize", "--tokenizer", str(out), "--input", args.input,
                            "--val-fraction", "0", "--threads", str(threads), "--output", str(shards)],
                           check=True, env=env, stdout=subprocess.DEVNULL)
            enc_ours.append(time.perf_counter() - t0)
            bos = ref.get_bos_token_id()
            want = np.fromiter((t for row in ids for t in [bos] + row), dtype=np.int64)
            got = read_shards(shards)
            assert np.array_equal(got, want), f"token streams differ ({len(got):,} vs {len(want):,} tokens)"
        n_tokens = len(want)
        rows.append((threads, statistics.median(train_ref), statistics.median(train_ours), statistics.median(enc_ref),
                     statistics.median(enc_ours), n_tokens))
    print("\nidentical: vocabularies (rustbpe vs l3lab) and token streams (tiktoken vs l3lab) on every repeat\n")
    print("| threads | BPE training: rustbpe | l3lab | encoding: tiktoken | l3lab |")
    print("|---:|---:|---:|---:|---:|")
    for threads, tr, to, er, eo, n in rows:
        print(f"| {threads} | {tr:.2f} s | {to:.2f} s | {text_bytes / 1e6 / er:.1f} MB/s | {text_bytes / 1e6 / eo:.1f} MB/s |")
    print(f"\nparquet reading (8 files, the corpus 4 times: {4 * text_bytes / 1e6:.0f} MB, 1 thread): pyarrow to Python "
          f"{4 * text_bytes / 1e6 / statistics.median(read_ref):.0f} MB/s, l3lab {4 * text_bytes / 1e6 / statistics.median(read_ours):.0f} MB/s "
          f"(the same {len(many):,} texts)")
    print(f"\n{rows[-1][5]:,} tokens; l3lab's times are whole commands (process start, reading the .jsonl, writing files);"
          " rustbpe and tiktoken get the documents in memory.")


if __name__ == "__main__":
    main()
