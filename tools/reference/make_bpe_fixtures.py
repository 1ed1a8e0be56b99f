"""Golden fixtures for nanochat's tokenizer, made by running nanochat's own code with rustbpe and tiktoken.

  corpus     tests/fixtures/bpe/corpus.jsonl: documents drawn from a seeded generator (English-like words,
             contractions in both cases, numbers, code with tabs and indentation, CJK, emoji, accents,
             \\r\\n mixes, long whitespace runs, U+180E and other Unicode spaces, unicode letters of many
             scripts), one {"text": ...} per line.
  training   nanochat/tokenizer.py RustBPETokenizer.train_from_iterator (rustbpe, SPLIT_PATTERN) on the
             corpus through tok_train.py's text_iterator logic (doc_cap, max_chars), then
             RustBPETokenizer.save: tests/fixtures/bpe/<case>/tokenizer.pkl, and token_bytes as
             tok_train.py computes it (token_bytes.json). Two cases: `full` (vocabulary 1,024, the defaults
             of doc_cap and max_chars) and `capped` (vocabulary 600, doc_cap 200, max_chars 60,000).
  encoding   tests/fixtures/bpe/encode_cases.json: tiktoken's encode_ordinary of hand-picked texts, of
             random strings drawn from the corpus' alphabet plus rarer characters, pieces of 257 to 3,000
             bytes (letter runs, CJK, symbols, whitespace), and of every corpus
             document (named by its line), with the `full` tokenizer; decode of each (the text back) is checked here.

Usage (tiktoken 0.11.0, rustbpe 0.1.0 and tokenizers 0.22.0 are nanochat's uv.lock versions; they go
into a separate directory, never into l3lab's .venv):

    .venv/bin/python -m pip install --target .fixtures-venv tiktoken==0.11.0 rustbpe==0.1.0 tokenizers==0.22.0
    mkdir -p /tmp/nanochat-ref && git -C <karpathy/nanochat clone> archive b7629ef | tar -x -C /tmp/nanochat-ref
    PYTHONPATH=.fixtures-venv .venv/bin/python tools/reference/make_bpe_fixtures.py --nanochat /tmp/nanochat-ref
"""

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkout import verify_checkout  # noqa: E402

GENERATED_BY = "tools/reference/make_bpe_fixtures.py"
REFERENCE = "karpathy/nanochat@b7629eff5d5985b9dc9b0198b45cb7783484b1b2"
OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "bpe"
SEED = 20251013

WORDS = ("the of and to in is was for that with as on by at from his her an which or be are this had not but "
         "were have it they one all their there been has when who would more will if no out so said what up its "
         "about into than them can only other new some could time these two may then do first any my now such "
         "like our over man me even most made after also did many before must through back years where much your "
         "way well down should because each just those people how too little state good very make world still own "
         "see men work long get here between both life being under never day same another know while last might "
         "us great old year off come since against go came right used take three tokenizer merges parquet shard "
         "Hello World Python Linux Kernel HTTP JSON URL").split()
CONTRACTIONS = ["I'm", "you're", "it's", "don't", "we'll", "they've", "she'd", "DON'T", "IT'S", "We'LL", "o'clock",
                "rock'n'roll", "'s", "'t", "''", "ſ's", "'ſ"]
CODE = ["def f(x):\n    return x ** 2  # square\n", "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\n",
        "if __name__ == '__main__':\r\n    main()\r\n", "<div class=\"a\">&amp;</div>", "x=[1,2,3];y={'k':v}",
        "    \n\n\t\t  \r\n", "SELECT * FROM t WHERE id>=42;", "#include <vector>\n", "a  =  b\t\t+ c   \n"]
UNICODE = ["你好世界", "日本語のテキスト", "한국어 문장", "Привет, мир", "مرحبا بالعالم", "שלום עולם", "γειά σου κόσμε",
           "naïve café résumé", "Ωmega ℵ0 ∑∫√", "🌍🚀👍🏽👨‍👩‍👧", "😀 emoji!", "ﬁﬂ ligatures", "Ⅻ Ⅳ ½ ² ³ ٣ ๓",
           "\u00a0non-breaking\u00a0space", "en\u2002quad\u2003em", "mongolian\u180evowel\u180e",
           "zero\u200bwidth", "line\u2028sep\u2029para", "ideographic\u3000space", "next\u0085line", "tab\x0bvt\x0cff",
           "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙", "देवनागरी", "ภาษาไทย", "\U00010000\U0010fffd"]
SPACES = [" ", "  ", "   ", "\t", "\n", "\r\n", "\n\n", " \n", "\r", "      ", "\n \n", " \t "]


def make_document(rng):
    parts = []
    for _ in range(rng.randint(1, 120)):
        r = rng.random()
        if r < 0.55:
            parts.append(rng.choice(WORDS))
        elif r < 0.62:
            parts.append(rng.choice(CONTRACTIONS))
        elif r < 0.70:
            parts.append(str(rng.randint(0, 10 ** rng.randint(1, 9))))
        elif r < 0.76:
            parts.append(rng.choice(CODE))
        elif r < 0.84:
            parts.append(rng.choice(UNICODE))
        elif r < 0.90:
            parts.append(rng.choice(".,;:!?-()[]\"'/@#$%^&*~`|\\"))
        else:
            parts.append(rng.choice(SPACES))
        parts.append(rng.choice([" ", " ", " ", "", "\n", "  "]))
    return "".join(parts)


def random_text(rng, alphabet, n):
    return "".join(rng.choice(alphabet) for _ in range(n))


HAND_PICKED = [
    "", "a", " ", "  ", "\n", "\r\n", "Hello world! This is a test.\nNumbers: 123, 4567, 89\nContractions: I'm, you're, "
    "it's\nSpecial chars: @#$%^&*()\nUnicode: 你好世界 🌍",
    "I'm you're it's don't we'll they've she'd DON'T IT'S We'LL 'S 'Ll ſ",
    "1 12 123 1234 12345 ١٢٣٤ ૧૨૩ ½¼ 3.14159 1,000,000 0x1F",
    "    indented\n        more\n\ttab\n\t\t two tabs\n" + " " * 40 + "end\n" + "\n" * 7,
    "trailing spaces   \nand   \r\n   \r\n\r\n mixed \n\r line ends\r",
    "word" + " " * 100 + "word", " " * 257, "\t" * 33 + "x",
    "a\u180eb \u180e c\u180e\u180e", "x\u00a0\u00a0y \u2003\u2003 z", "ẞ ß ǅ ǈ ǋ Σσς",
    "<|bos|> <|endoftext|> <|user_start|>",  # spelled out: ordinary text for encode_ordinary
    "🌍" * 20, "👨‍👩‍👧‍👦 family 🏳️‍🌈 flag", "ab" * 300, "\x00\x01\x1f control \x7f",
    "don't stop 'til you get enough'", "U.S.A. e.g. i.e. etc...", "https://example.com/a?b=c&d=e#f",
    "\U0001f600\U0001f601 \U00020000\U0002a6d6 \U000e0001",
]


def tok_train_iterator(docs, doc_cap, max_chars):
    """scripts/tok_train.py's text_iterator over `docs` (its loop body, with its flags' values)."""
    nchars = 0
    for doc in docs:
        doc_text = doc
        if len(doc_text) > doc_cap:
            doc_text = doc_text[:doc_cap]
        nchars += len(doc_text)
        yield doc_text
        if nchars > max_chars:
            return


def token_bytes_of(tokenizer):
    """scripts/tok_train.py's token_bytes, as a list."""
    vocab_size = tokenizer.get_vocab_size()
    special_set = set(tokenizer.get_special_tokens())
    token_strings = [tokenizer.decode([token_id]) for token_id in range(vocab_size)]
    token_bytes = []
    for token_id in range(vocab_size):
        token_str = token_strings[token_id]
        if token_str in special_set:
            token_bytes.append(0)
        else:
            token_bytes.append(len(token_str.encode("utf-8")))
    return token_bytes


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nanochat", required=True, type=Path, help="nanochat checkout at b7629ef")
    parser.add_argument("--documents", type=int, default=600)
    args = parser.parse_args()
    verify_checkout(args.nanochat, {"nanochat/tokenizer.py": "a2146c2e44f6bc83479f95886084dd966ad6618c"})
    sys.path.insert(0, str(args.nanochat))
    from nanochat.tokenizer import SPLIT_PATTERN, RustBPETokenizer
    import rustbpe
    import tiktoken

    rng = random.Random(SEED)
    docs = [make_document(rng) for _ in range(args.documents)]
    docs += ["x" * 12000, "long " * 2600, ""]  # past doc_cap (10,000 characters), and an empty document
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "corpus.jsonl", "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")

    cases = {"full": dict(vocab_size=1024, doc_cap=10_000, max_chars=2_000_000_000),
             "capped": dict(vocab_size=600, doc_cap=200, max_chars=60_000)}
    tokenizers = {}
    for name, c in cases.items():
        tok = RustBPETokenizer.train_from_iterator(tok_train_iterator(docs, c["doc_cap"], c["max_chars"]), c["vocab_size"])
        tok.save(str(OUT / name))
        tb = token_bytes_of(tok)
        assert tok.enc._pat_str == SPLIT_PATTERN
        with open(OUT / name / "case.json", "w") as f:
            json.dump({"generated_by": GENERATED_BY, "reference": REFERENCE,
                       "versions": {"rustbpe": "0.1.0", "tiktoken": tiktoken.__version__},
                       **c, "token_bytes": tb, "bos": tok.get_bos_token_id(),
                       "special_tokens": sorted(tok.get_special_tokens(), key=tok.encode_special)}, f)
        tokenizers[name] = tok
        print(f"{name}: vocabulary {tok.get_vocab_size()}, bos {tok.get_bos_token_id()}")

    tok = tokenizers["full"]
    alphabet = sorted(set("".join(docs)) | set("".join(HAND_PICKED)))
    texts = list(HAND_PICKED)
    texts += [random_text(rng, alphabet, rng.randint(1, 300)) for _ in range(300)]
    texts += [random_text(rng, " \t\n\r\u00a0\u180e\u3000ab1'", rng.randint(1, 80)) for _ in range(100)]
    # pieces longer than 256 bytes (l3lab merges those with a heap): letter runs, CJK, spaces, symbols
    texts += [random_text(rng, alpha, rng.randint(257, 3000)) for alpha in ("ab", "etaoinshr", "你好世界", "xyzé")
              for _ in range(5)] + ["\u00e9" * 700, "!?" * 400 + "x", " " * 300 + "\n" * 300]
    cases_out = []
    for i, t in enumerate(texts + docs):
        ids = tok.enc.encode_ordinary(t)
        assert tok.decode(ids) == t
        # a corpus document is named by its line in corpus.jsonl ("doc", 0-based) instead of repeated
        cases_out.append({"text": t, "ids": ids} if i < len(texts) else {"doc": i - len(texts), "ids": ids})
    with open(OUT / "encode_cases.json", "w", encoding="utf-8") as f:
        json.dump({"generated_by": GENERATED_BY, "reference": REFERENCE, "tokenizer": "full/tokenizer.pkl",
                   "tiktoken": tiktoken.__version__, "cases": cases_out}, f, ensure_ascii=False)
    print(f"encode cases: {len(cases_out)}, {sum(len(c['ids']) for c in cases_out):,} tokens")


if __name__ == "__main__":
    main()
