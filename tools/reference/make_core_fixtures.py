"""Golden CORE results: nanochat's own CORE evaluation on a synthetic bundle, with the fixture checkpoint.

  bundle     tests/fixtures/core/eval_bundle/: the layout of nanochat's eval_bundle (core.yaml with icl_tasks,
             eval_meta_data.csv with each task's random baseline, eval_data/*.jsonl), five tasks made here from
             a seeded generator: multiple choice 0-shot and 3-shot (custom delimiter, unicode), schema 1-shot,
             language modeling 0-shot (contexts with trailing whitespace, one longer than the model's
             64-token context) and 2-shot with an empty delimiter, and 0-shot where half the
             continuations are the model's own greedy next token (so that some are right).
  model      tests/fixtures/nanochat_checkpoint (made by nanochat's base_train, make_checkpoint_fixture.py),
             loaded with nanochat's checkpoint_manager.build_model; tokenizer tests/fixtures/bpe/full.
  reference  nanochat b7629ef nanochat/core_eval.py and scripts/base_eval.py evaluate_core, run unchanged
             on the CPU (NANOCHAT_BASE_DIR holds the bundle and the tokenizer, so nothing is downloaded):
             per example of each task (after evaluate_core's Random(1337) shuffle) the few-shot indices
             (Random(1234 + idx).sample), the rendered prompts, the token rows with their start and end,
             and evaluate_example's verdict; per task the accuracy and centred accuracy; the core_metric;
             for max_per_task -1 and 7.
  output     tests/fixtures/core/core_cases.json

    PYTHONPATH=.fixtures-venv .venv/bin/python tools/reference/make_core_fixtures.py --nanochat /tmp/nanochat-ref
"""

import argparse
import csv
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

ROOT = HERE.parents[1]
OUT = ROOT / "tests" / "fixtures" / "core"
GENERATED_BY = "tools/reference/make_core_fixtures.py"
REFERENCE = "karpathy/nanochat@b7629eff5d5985b9dc9b0198b45cb7783484b1b2"
WORDS = ("the kernel driver memory device file system user process thread lock page cache network "
         "interrupt module buffer queue timer power clock bus port register value data table entry").split()


def sentence(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def make_tasks(rng):
    tasks = []
    mc = [{"query": f"Question: which {sentence(rng, 3)}?", "choices": [sentence(rng, rng.randint(1, 3)) for _ in range(4)],
           "gold": rng.randrange(4)} for _ in range(12)]
    tasks.append(("mc_zero", "multiple_choice", 0, " ", 25.0, mc))
    mc3 = [{"query": f"Übersetzung {i}: {sentence(rng, 4)} — «{sentence(rng, 2)}»", "choices":
            [sentence(rng, 2) + " ✓", sentence(rng, 2), "日本語 " + sentence(rng, 1)], "gold": rng.randrange(3)} for i in range(10)]
    tasks.append(("mc_three", "multiple_choice", 3, "\nAnswer: ", 33.3, mc3))
    schema = [{"context_options": [sentence(rng, 5), sentence(rng, 6)], "continuation": sentence(rng, 4), "gold": rng.randrange(2)}
              for _ in range(9)]
    tasks.append(("schema_one", "schema", 1, " ", 50.0, schema))
    lm = [{"context": sentence(rng, rng.choice([5, 9, 90])) + rng.choice(["", " ", "  \n"]), "continuation": sentence(rng, 2)}
          for _ in range(8)]
    tasks.append(("lm_zero", "language_modeling", 0, " ", 0.0, lm))
    lm2 = [{"context": "Q: " + sentence(rng, 4) + " A:", "continuation": " " + sentence(rng, 1)} for _ in range(7)]
    tasks.append(("lm_two", "language_modeling", 2, "", 0.0, lm2))
    greedy = [{"context": sentence(rng, rng.randint(3, 12)), "continuation": sentence(rng, 1)} for _ in range(10)]
    tasks.append(("lm_greedy", "language_modeling", 0, "", 0.0, greedy))
    return tasks


def write_bundle(bundle, tasks):
    if bundle.exists():
        shutil.rmtree(bundle)
    (bundle / "eval_data").mkdir(parents=True)
    lines = ["icl_tasks:"]
    for label, kind, shots, delim, _, rows in tasks:
        lines += [f"- label: {label}", f"  dataset_uri: {label}.jsonl", f"  num_fewshot: [{shots}]", f"  icl_task_type: {kind}"]
        if delim != " ":
            lines.append(f"  continuation_delimiter: {json.dumps(delim)}")
        with open(bundle / "eval_data" / f"{label}.jsonl", "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    (bundle / "core.yaml").write_text("\n".join(lines) + "\n")
    with open(bundle / "eval_meta_data.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Eval Task", "Task Category", "Task Type", "#shots", "#datapoints", "Random baseline", "Centered Metric?", "Description"])
        for label, kind, shots, _, baseline, rows in tasks:
            w.writerow([label, "synthetic", kind, shots, len(rows), baseline, "", "made by " + GENERATED_BY])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nanochat", required=True, type=Path)
    args = parser.parse_args()
    verify_checkout(args.nanochat, {"nanochat/tokenizer.py": "a2146c2e44f6bc83479f95886084dd966ad6618c"})
    rng = random.Random(20260101)
    tasks = make_tasks(rng)

    base = Path(tempfile.mkdtemp(prefix="nanochat-core-"))
    shutil.copytree(ROOT / "tests" / "fixtures" / "bpe" / "full", base / "tokenizer")
    import pickle
    import torch
    enc = pickle.load(open(base / "tokenizer" / "tokenizer.pkl", "rb"))
    special = set(enc.special_tokens_set)
    torch.save(torch.tensor([0 if enc.decode([i]) in special else len(enc.decode([i]).encode()) for i in range(enc.n_vocab)],
                            dtype=torch.int32), base / "tokenizer" / "token_bytes.pt")
    os.environ["NANOCHAT_BASE_DIR"] = str(base)
    sys.path.insert(0, str(args.nanochat))
    import nanochat.core_eval as ce
    from nanochat.checkpoint_manager import build_model
    from scripts.base_eval import evaluate_core

    model, tokenizer, _ = build_model(str(ROOT / "tests" / "fixtures" / "nanochat_checkpoint"), 10, torch.device("cpu"), "eval")
    # A model this small gets no language-modeling example right by chance: lm_greedy's continuations are
    # the model's own greedy next token (where its text still tokenizes as a suffix), so that the
    # all-tokens-predicted rule is met as well as missed.
    bos = tokenizer.get_bos_token_id()
    for label, _, _, _, _, rows in tasks:
        if label != "lm_greedy":
            continue
        for r in rows[::2]:
            ids = tokenizer.encode(r["context"].strip(), prepend=bos)
            with torch.no_grad():
                nxt = model(torch.tensor([ids])).argmax(-1)[0, -1].item()
            word = tokenizer.decode([nxt])
            with_ids = tokenizer.encode(r["context"].strip() + word, prepend=bos)
            if word.strip() and with_ids[:len(ids)] == ids and len(with_ids) > len(ids):
                r["continuation"] = word
    write_bundle(OUT / "eval_bundle", tasks)
    shutil.copytree(OUT / "eval_bundle", base / "eval_bundle")
    cases = []
    for max_per_task in (-1, 7):
        per_task = []
        for label, kind, shots, delim, _, _ in tasks:
            data = [json.loads(line) for line in open(base / "eval_bundle" / "eval_data" / f"{label}.jsonl", encoding="utf-8")]
            random.Random(1337).shuffle(data)  # evaluate_core's subsampling order
            if max_per_task > 0:
                data = data[:max_per_task]
            meta = {"task_type": kind, "num_fewshot": shots, "continuation_delimiter": delim}
            examples = []
            for idx, item in enumerate(data):
                fewshot = []
                if shots > 0:
                    fewshot = random.Random(1234 + idx).sample([i for i in range(len(data)) if i != idx], shots)
                render = {"multiple_choice": ce.render_prompts_mc, "schema": ce.render_prompts_schema,
                          "language_modeling": ce.render_prompts_lm}[kind]
                batch = {"multiple_choice": ce.batch_sequences_mc, "schema": ce.batch_sequences_schema,
                         "language_modeling": ce.batch_sequences_lm}[kind]
                prompts = render(item, delim, [data[i] for i in fewshot])
                tokens, starts, ends = batch(tokenizer, prompts)
                correct = ce.evaluate_example(idx, model, tokenizer, data, "cpu", meta)
                examples.append({"fewshot": fewshot, "prompts": prompts, "tokens": tokens, "starts": starts, "ends": ends,
                                 "correct": bool(correct)})
            per_task.append({"label": label, "examples": examples})
        out = evaluate_core(model, tokenizer, "cpu", max_per_task=max_per_task)
        cases.append({"max_per_task": max_per_task, "tasks": per_task, "results": out["results"],
                      "centered_results": out["centered_results"], "core_metric": out["core_metric"]})
        print(f"max_per_task {max_per_task}: core_metric {out['core_metric']:.6f}, results {out['results']}")
    shutil.rmtree(base)
    with open(OUT / "core_cases.json", "w", encoding="utf-8") as f:
        json.dump({"generated_by": GENERATED_BY, "reference": REFERENCE, "checkpoint": "tests/fixtures/nanochat_checkpoint",
                   "tokenizer": "tests/fixtures/bpe/full", "cases": cases}, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
