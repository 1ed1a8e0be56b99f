// Helpers for the data suites: generated text, a small tokenizer trained once, shard writing.
#pragma once

#include <cstdint>
#include <fstream>
#include <map>
#include <sstream>
#include <memory>
#include <string>
#include <stdexcept>
#include <vector>

#include <nlohmann/json.hpp>

#include "runner/data/shard.h"
#include "runner/data/tokenizer.h"
#include "test_util.h"

namespace l3lab::test {

// Prose, code and a little Unicode: `bytes` long or a bit more, different for every seed.
inline std::string sample_text(uint64_t seed, size_t bytes) {
    static const char* words[] = {
        "the", "kernel", "memory", "driver", "device", "page", "of", "and", "to", "a", "is", "in", "for",
        "that", "with", "buffer", "interrupt", "scheduler", "thread", "lock", "queue", "file", "system",
        "when", "this", "be", "can", "are", "not", "each", "value", "return", "function", "data",
        "caf\xC3\xA9", "na\xC3\xAFve", "\xE4\xBD\xA0\xE5\xA5\xBD", "\xE3\x83\x87\xE3\x83\xBC\xE3\x82\xBF", "\xF0\x9F\x99\x82"};
    static const char* code[] = {"    if (x == NULL)\n        return -EINVAL;\n", "\tfor (i = 0; i < n; i++)\n\t\tsum += a[i];\n",
                                 "```\n$ make -j8 && sudo make install\n```\n", "  - key: value\n    list: [1, 2, 3]\n"};
    Rng rng{seed};
    std::string out;
    while (out.size() < bytes) {
        const uint64_t kind = rng.below(10);
        if (kind == 0) {
            out += code[rng.below(4)];
        } else {
            const size_t n = 5 + rng.below(15);
            for (size_t i = 0; i < n; ++i) {
                std::string w = words[rng.below(sizeof(words) / sizeof(words[0]))];
                if (i == 0 && w[0] >= 'a' && w[0] <= 'z') w[0] = static_cast<char>(w[0] - 32);
                out += w;
                if (rng.below(12) == 0) out += std::to_string(rng.below(2000));
                out += i + 1 < n ? (rng.below(9) == 0 ? ", " : " ") : ".";
            }
            out += rng.below(4) == 0 ? "\n\n" : " ";
        }
    }
    return out;
}

// A tokenizer with `vocab` tokens trained on generated text; the file bytes are cached per size.
inline std::string small_tokenizer_bytes(int vocab = 400) {
    static std::map<int, std::string> cache;
    auto it = cache.find(vocab);
    if (it != cache.end()) return it->second;
    std::vector<std::string> docs;
    for (uint64_t i = 0; i < 40; ++i) docs.push_back(sample_text(i, 2500));
    size_t next = 0;
    data::TokenizerTrainOptions o;
    o.vocab_size = vocab;
    o.threads = 1;
    std::string bytes = data::train_tokenizer(
        [&](std::string& d) {
            if (next == docs.size()) return false;
            d = docs[next++];
            return true;
        },
        o);
    return cache.emplace(vocab, std::move(bytes)).first->second;
}

inline const data::Tokenizer& small_tokenizer() {
    static std::unique_ptr<data::Tokenizer> t = data::tokenizer_from_bytes(small_tokenizer_bytes(), "small");
    return *t;
}

inline void write_bytes(const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// A shard holding `tokens`, written by l3lab's writer.
inline void write_shard(const std::string& path, const std::vector<int32_t>& tokens, int version = 1) {
    data::ShardWriter w(path, version);
    w.append(tokens);
    w.close();
}

// A raw llm.c-style shard: the header exactly as given (so tests can lie in it), then uint16 tokens.
inline void write_raw_shard(const std::string& path, int32_t magic, int32_t version, int32_t count,
                            const std::vector<uint16_t>& tokens) {
    std::vector<int32_t> header(256, 0);
    header[0] = magic;
    header[1] = version;
    header[2] = count;
    std::ofstream o(path, std::ios::binary);
    o.write(reinterpret_cast<const char*>(header.data()), 1024);
    o.write(reinterpret_cast<const char*>(tokens.data()), static_cast<std::streamsize>(tokens.size() * 2));
}

// The data of the process-level suites, made the way a user makes it (the data commands, in-process):
// `documents` generated texts from `first_seed` in dir/corpus.jsonl, a 512-token tokenizer trained on
// them (dir/tok.model) and their shards (dir/shards). Throws with the command's stderr if one fails.
struct TinyData {
    std::string tokenizer, shards;
};
inline TinyData make_tiny_data(const std::filesystem::path& dir, uint64_t first_seed, int documents, size_t bytes) {
    const std::string corpus = (dir / "corpus.jsonl").string();
    {
        std::ofstream out(corpus);
        for (int d = 0; d < documents; ++d)
            out << nlohmann::json{{"text", sample_text(first_seed + static_cast<uint64_t>(d), bytes)}}.dump() << "\n";
    }
    TinyData data{(dir / "tok.model").string(), (dir / "shards").string()};
    for (const auto& args : {std::vector<std::string>{"data", "train-tokenizer", "--input", corpus, "--vocab-size", "512",
                                                      "--output", data.tokenizer},
                             std::vector<std::string>{"data", "tokenize", "--tokenizer", data.tokenizer, "--input", corpus,
                                                      "--output", data.shards}}) {
        const CliResult r = run_cli(args);
        if (r.code != 0) throw std::runtime_error("l3lab " + args[1] + " failed: " + r.err);
    }
    return data;
}

// The tiny training experiment of those suites (depth 2, sequence 64, one L3 layer, CPU) on `data`,
// with runs under `runs`; `batch_and_eval` holds its `batch:` and `eval:` lines.
inline std::string tiny_experiment_yaml(const TinyData& data, const std::string& runs, std::string batch_and_eval) {
    // No CORE in these suites unless `batch_and_eval` sets it (base.yaml's eval.core_every is nanochat's
    // 2000, and nanochat's bundle is not here).
    if (batch_and_eval.find("core_every") == std::string::npos) {
        if (auto at = batch_and_eval.find("eval: {"); at != std::string::npos)
            batch_and_eval.insert(at + 7, "core_every: -1, ");
        else
            batch_and_eval += "eval: {core_every: -1}\n";
    }
    return "extends: [" + base_yaml() + "]\n"
           "name: tiny\ndevice: cpu\n"
           "model: {vocab_size: 512, sequence_len: 64, depth: 2, aspect_ratio: 64, head_dim: 64, window_pattern: SL,\n"
           "        l3: {after_layers: [0], k_max: 8}}\n"
           "horizon: {num_iterations: 16}\n" +
           batch_and_eval +
           "sample: {every: -1, max_tokens: 3, prompts: [\"The kernel\"]}\n"
           "checkpoint: {every: 4, keep_last: 2}\n"
           "data: {tokenizer: " + data.tokenizer + ", train: " + data.shards + ", val: " + data.shards + "}\n"
           "output: {dir: " + runs + "}\n";
}

}  // namespace l3lab::test
