"""Generate golden L3 row-allocation fixtures by running both Python implementations l3lab reproduces.

  frequency  karpathy/nanochat@b7629ef nanochat/l3.py compute_lzw_allocation (the reference PR; not LZW,
             REFERENCE.md known defect 1). Imported from the checkout given by --nanochat.
  lzw        jhspaybar/nanochat nanochat/l3.py compute_lzw_allocation (paper Algorithm 1 as L3.md describes
             it). The function's source text is cut out of the file given by --l3-port (a copy saved outside
             this repository) and executed on its own, so the rest of that module and its imports
             (nanochat.common) are never needed.

Nothing here re-implements either algorithm. The only l3lab logic is the BOS split (L3.md: lzw parses each
BOS-delimited piece of the sample rows; a piece starts with its BOS token), applied before calling the port
for the cases that name a `bos` token; those cases record the port's answer on the split pieces as
`lzw_pieces` next to its answer on the unsplit rows (`lzw`, which is how the port's own training script
calls it).

Getting the inputs:

    mkdir -p /tmp/nanochat-ref
    git -C <karpathy/nanochat clone> archive b7629ef | tar -x -C /tmp/nanochat-ref
    # jhspaybar/nanochat nanochat/l3.py (commit 1dece2f or 32d249a: same function) saved as /tmp/jhspaybar_l3.py

Usage:

    .venv/bin/python tools/reference/make_allocation_fixtures.py \\
        --nanochat /tmp/nanochat-ref --l3-port /tmp/jhspaybar_l3.py --out tests/fixtures/allocation/cases.json

Output: {"cases": [{name, note, vocab_size, sequences, bos?, budgets: [{n_emb, k_max, frequency, lzw,
lzw_pieces?}]}]}; each list of rows is indexed by token id.
"""

import argparse
import hashlib
import importlib.util
import json
import random
import sys
from pathlib import Path

GENERATED_BY = "tools/reference/make_allocation_fixtures.py"
REFERENCE = "karpathy/nanochat@b7629eff5d5985b9dc9b0198b45cb7783484b1b2 nanochat/l3.py compute_lzw_allocation"
REFERENCE_BLOB = "6f160081614c71b3820b7c594be520342a284d9b"  # `git rev-parse b7629ef:nanochat/l3.py`
PORT = "jhspaybar/nanochat nanochat/l3.py compute_lzw_allocation (commits 1dece2f, 32d249a)"
# sha256 of the function's source text, from "def compute_lzw_allocation(" up to "def allocation_to_bounds",
# trailing whitespace stripped.
PORT_FUNCTION_SHA256 = "d068bdea52d3c7600af06480d7a3d20944750c5ca9c462afbf789cf58c216791"
PORT_START, PORT_END = "def compute_lzw_allocation(", "\ndef allocation_to_bounds"
DEFAULT_SEED = 20260131


# ----------------------------------------------------------------------------
# The two implementations


def load_reference(root):
    path = Path(root) / "nanochat" / "l3.py"
    data = path.read_bytes()
    blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    if blob != REFERENCE_BLOB:
        sys.exit(f"error: {path} has blob {blob}, expected {REFERENCE_BLOB} (nanochat b7629ef)")
    spec = importlib.util.spec_from_file_location("reference_l3", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # imports torch only
    return module.compute_lzw_allocation


def load_port(path):
    text = Path(path).read_text()
    start = text.find(PORT_START)
    end = text.find(PORT_END, start)
    if start < 0 or end < 0:
        sys.exit(f"error: {path}: anchors {PORT_START!r} ... {PORT_END!r} not found")
    source = text[start:end].rstrip()
    digest = hashlib.sha256(source.encode()).hexdigest()
    if digest != PORT_FUNCTION_SHA256:
        sys.exit(f"error: {path}: compute_lzw_allocation source has sha256 {digest}, expected {PORT_FUNCTION_SHA256}")
    namespace = {}
    exec(compile(source, f"{path}:compute_lzw_allocation", "exec"), namespace)
    return namespace["compute_lzw_allocation"]


def split_at_bos(rows, bos):
    """L3.md's pieces: a new piece at every BOS; leading non-BOS tokens of a row are a piece of their own."""
    pieces = []
    for row in rows:
        piece = []
        for tok in row:
            if tok == bos and piece:
                pieces.append(piece)
                piece = []
            piece.append(tok)
        if piece:
            pieces.append(piece)
    return pieces


# ----------------------------------------------------------------------------
# Inputs


def hand_cases():
    """Tiny inputs that each pin down one quirk (the note says which)."""
    return [
        dict(name="tail_reset", vocab_size=2, sequences=[[1, 1], [1, 1, 1, 0, 0], [1, 1]],
             budgets=[(3, 8), (4, 8), (5, 8), (6, 8)],
             note="the last piece's tail (1,1) is already a codeword with count 2; the port resets it to 1 "
                  "and credits its prefix (1) instead, so (0) outranks (1,1) at n_emb = 4"),
        dict(name="tail_reset_longer", vocab_size=3, sequences=[[2, 1, 2, 1, 0, 0, 1], [2, 1]],
             budgets=[(4, 8), (5, 8), (6, 8), (8, 8)],
             note="tail reset inside a longer parse"),
        dict(name="last_token_never_starts", vocab_size=3, sequences=[[0, 1, 2], [2], [], [1, 2, 0, 1, 2]],
             budgets=[(4, 8), (5, 8), (6, 8)],
             note="a piece's last token never starts a phrase; length-0 and length-1 pieces add nothing"),
        dict(name="ties_first_insertion", vocab_size=4, sequences=[[3, 2], [1, 0], [2, 3]],
             budgets=[(7, 8), (8, 8), (9, 8), (10, 8)],
             note="all counts 1: seeds in id order first, then phrases in first-insertion order"),
        dict(name="k_max_cap", vocab_size=3, sequences=[[0] * 30],
             budgets=[(6, 3), (9, 3), (9, 5)],
             note="every codeword ends in token 0, which stops at k_max; zero-count seeds follow"),
        dict(name="remainder_spread", vocab_size=5, sequences=[[0, 1]],
             budgets=[(11, 6), (20, 6), (30, 6)],
             note="codewords run out: the rest goes one row at a time over ids 0..V-1, respecting k_max"),
        dict(name="unreachable_budget", vocab_size=3, sequences=[[0, 1, 0, 1, 2, 2]],
             budgets=[(100, 4), (13, 4)],
             note="n_emb > k_max x V: both stop with every token at k_max"),
        dict(name="k_max_one", vocab_size=4, sequences=[[0, 1, 2, 3, 0, 1]],
             budgets=[(4, 1), (10, 1)],
             note="k_max = 1: nothing beyond the first row"),
        dict(name="n_emb_equals_vocab", vocab_size=5, sequences=[[4, 3, 4, 3]],
             budgets=[(5, 8)],
             note="n_emb = V: one row each"),
        dict(name="empty_sample", vocab_size=3, sequences=[],
             budgets=[(4, 8), (8, 2)],
             note="no sequences: frequency ties everywhere (ascending ids), lzw has only zero-count seeds"),
        dict(name="frequency_ties_ascending_ids", vocab_size=6, sequences=[[5, 4, 3], [3, 4, 5]],
             budgets=[(8, 8), (9, 8), (13, 8), (15, 8)],
             note="frequency scores 3:3, 4:4, 5:3 -> order 4, 3, 5, 0, 1, 2 (stable descending sort)"),
        dict(name="bos_pieces", vocab_size=5, bos=4, sequences=[[4, 0, 1, 0, 1, 4, 0, 1], [2, 3, 4, 4, 0, 1, 4]],
             budgets=[(8, 8), (10, 8), (12, 3)],
             note="BOS split: leading tokens before a row's first BOS, consecutive BOS, BOS last"),
    ]


def random_cases(rng, count):
    cases = []
    for i in range(count):
        vocab_size = rng.randint(2, 12)
        # Skewed token draws so that phrases repeat and the LZ78 dictionary grows past the seeds.
        weights = [1.0 / (t + 1) ** rng.uniform(0.0, 2.0) for t in range(vocab_size)]
        sequences = [rng.choices(range(vocab_size), weights, k=rng.randint(0, 40)) for _ in range(rng.randint(1, 6))]
        case = dict(name=f"random_{i:02d}", vocab_size=vocab_size, sequences=sequences,
                    note="seeded random small-vocabulary sample")
        if i % 3 == 0:
            case["bos"] = rng.randrange(vocab_size)
        budgets = set()
        while len(budgets) < 3:
            k_max = rng.choice([1, 2, 3, 5, 8, 32])
            n_emb = vocab_size + rng.randint(0, vocab_size * 6)
            budgets.add((n_emb, k_max))
        case["budgets"] = sorted(budgets)
        cases.append(case)
    return cases


def zipf_case(rng, vocab_size=1000, n_tokens=50_000, row_length=256):
    """A Zipf(1.1) stream of BOS-led documents (BOS = V - 1), cut into rows as a loader would."""
    bos = vocab_size - 1
    ranks = range(vocab_size - 1)
    weights = [1.0 / (r + 1) ** 1.1 for r in ranks]
    stream = []
    while len(stream) < n_tokens:
        stream.append(bos)
        stream.extend(rng.choices(ranks, weights, k=rng.randint(20, 400)))
    stream = stream[:n_tokens]
    rows = [stream[i:i + row_length] for i in range(0, n_tokens, row_length)]
    V = vocab_size
    return dict(name="zipf_50k", vocab_size=V, bos=bos, sequences=rows,
                budgets=[(V, 64), (2 * V, 8), (4 * V, 64), (4 * V, 512), (20 * V, 512), (40 * V, 32)],
                note="Zipf(1.1) over ids 0..V-2, BOS = V-1 leading documents of 20..400 tokens, rows of 256")


# ----------------------------------------------------------------------------


def run_case(case, reference, port):
    V = case["vocab_size"]
    sequences = case["sequences"]
    pieces = split_at_bos(sequences, case["bos"]) if "bos" in case else None
    budgets = []
    for n_emb, k_max in case["budgets"]:
        out = dict(n_emb=n_emb, k_max=k_max,
                   frequency=reference(sequences, V, n_emb, k_max),
                   lzw=port(sequences, V, n_emb, k_max))
        if pieces is not None:
            out["lzw_pieces"] = port(pieces, V, n_emb, k_max)
        budgets.append(out)
    result = {k: case[k] for k in ("name", "note", "vocab_size") if k in case}
    if "bos" in case:
        result["bos"] = case["bos"]
    result["sequences"] = sequences
    result["budgets"] = budgets
    return result


def dump(cases, meta):
    """One JSON value per line for the bulky parts, so diffs of the fixture stay readable."""
    c = lambda v: json.dumps(v, separators=(",", ":"))
    lines = ["{"]
    for key, value in meta.items():
        lines.append(f"  {json.dumps(key)}: {json.dumps(value)},")
    lines.append('  "cases": [')
    for i, case in enumerate(cases):
        lines.append("    {")
        for key in ("name", "note", "vocab_size", "bos"):
            if key in case:
                lines.append(f"      {json.dumps(key)}: {json.dumps(case[key])},")
        lines.append(f'      "sequences": {c(case["sequences"])},')
        lines.append('      "budgets": [')
        for j, budget in enumerate(case["budgets"]):
            lines.append(f"        {c(budget)}" + ("," if j + 1 < len(case["budgets"]) else ""))
        lines.append("      ]")
        lines.append("    }" + ("," if i + 1 < len(cases) else ""))
    lines.append("  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nanochat", required=True, help="karpathy/nanochat checkout at b7629ef")
    parser.add_argument("--l3-port", required=True, help="copy of jhspaybar/nanochat nanochat/l3.py")
    parser.add_argument("--out", default="tests/fixtures/allocation/cases.json")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--random-cases", type=int, default=40)
    args = parser.parse_args()

    reference = load_reference(args.nanochat)
    port = load_port(args.l3_port)
    rng = random.Random(args.seed)
    inputs = hand_cases() + random_cases(rng, args.random_cases) + [zipf_case(rng)]
    cases = [run_case(case, reference, port) for case in inputs]

    meta = dict(generated_by=GENERATED_BY, seed=args.seed, frequency=REFERENCE, lzw=PORT,
                lzw_function_sha256=PORT_FUNCTION_SHA256)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = dump(cases, meta)
    json.loads(text)  # the hand-rolled layout must still be valid JSON
    out.write_text(text)
    n = sum(len(case["budgets"]) for case in cases)
    print(f"wrote {out}: {len(cases)} inputs, {n} budgets, {len(text):,} bytes")


if __name__ == "__main__":
    main()
