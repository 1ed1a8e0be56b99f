// The CORE metric's tasks (DCLM; nanochat/core_eval.py and scripts/base_eval.py evaluate_core at b7629ef),
// up to the token rows a model scores: the bundle (core.yaml, eval_meta_data.csv, eval_data/*.jsonl),
// Python's `random` (the shuffle that picks max_per_task examples, the few-shot samples), the three
// prompt templates with their exact whitespace, and the rows with each continuation's start and end.
// No libtorch here: runner/torch/core_eval.cpp runs the model on the rows.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runner/data/tokenizer.h"

namespace l3lab::data {

// CPython's random.Random: MT19937 seeded from an integer as Python seeds it, with getrandbits,
// the rejection-sampling randbelow, shuffle and sample as Python 3 implements them.
class PythonRandom {
public:
    explicit PythonRandom(uint64_t seed);
    uint32_t next32();
    uint64_t below(uint64_t n);  // _randbelow_with_getrandbits
    template <class T>
    void shuffle(std::vector<T>& x) {
        for (size_t i = x.size(); i-- > 1;) std::swap(x[i], x[static_cast<size_t>(below(i + 1))]);
    }
    // random.sample(range(n) as a list `population`, k)
    std::vector<int64_t> sample(const std::vector<int64_t>& population, int64_t k);

private:
    uint32_t mt_[624];
    int index_ = 624;
};

enum class CoreTaskType { MultipleChoice, Schema, LanguageModeling };

struct CoreExample {
    std::string query;                          // multiple choice
    std::vector<std::string> choices;
    std::string context, continuation;          // language modeling; schema's continuation
    std::vector<std::string> context_options;   // schema
    int64_t gold = 0;
};

struct CoreTask {
    std::string label;
    CoreTaskType type = CoreTaskType::MultipleChoice;
    std::string dataset_uri;
    int64_t num_fewshot = 0;
    std::string continuation_delimiter = " ";
    double random_baseline = 0;  // percent, from eval_meta_data.csv
    std::vector<CoreExample> examples;  // in file order
};

// Reads the bundle directory. Throws DataError naming the file (and line) for a missing or malformed
// core.yaml, CSV or task file, a task type it does not know, or a task without a random baseline.
std::vector<CoreTask> read_core_bundle(const std::string& dir);

// The rows of one example, as evaluate_example builds them before the model runs.
struct CoreRows {
    std::vector<int64_t> fewshot;            // indices of the few-shot examples
    std::vector<std::string> prompts;
    std::vector<std::vector<int32_t>> tokens;  // BOS + encode(prompt)
    std::vector<int64_t> starts, ends;       // the scored span of each row
};

// Example `idx` of `examples` (already shuffled and cut to max_per_task, as evaluate_core does).
// Throws DataError when the language-modeling prompt without the continuation does not tokenize as a
// prefix of the one with it (the reference asserts the same).
CoreRows core_rows(const CoreTask& task, const std::vector<CoreExample>& examples, size_t idx, const Tokenizer& tokenizer);

// evaluate_core's subsample: Random(1337).shuffle, then the first max_per_task (all when <= 0).
std::vector<CoreExample> core_subsample(const std::vector<CoreExample>& examples, int64_t max_per_task);

// Empty when every task can be evaluated with `max_per_task` examples; else what is wrong, naming the
// task. The shots are drawn from the other kept examples (evaluate_example samples them from the
// subsample), so a k-shot task needs max_per_task > k; nanochat fails there mid-run with Python's
// "Sample larger than population".
std::string core_max_per_task_problem(const std::vector<CoreTask>& tasks, int64_t max_per_task);

// Python's str.strip() (Unicode whitespace), which the LM template's `trim` and the reference apply.
std::string python_strip(const std::string& s);

// nanochat's base directory: $NANOCHAT_BASE_DIR, else ~/.cache/nanochat (nanochat/common.py get_base_dir).
std::string nanochat_base_dir();
// Where nanochat keeps the bundle: nanochat_base_dir()/eval_bundle.
std::string default_core_bundle();

}  // namespace l3lab::data
