// Options of nanochat's GPT with L3 layers, as plain structs (no YAML, no libtorch). The torch side
// of the registry builds modules from these; the shape side counts parameters and FLOPs from them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace l3lab::modules {

// A problem with one option: `field` is the option's name ("n_kv_head", "l3.after_layers").
struct OptionError {
    std::string field;
    std::string message;
};

struct L3LayerOptions {
    int64_t n_emb = 0;      // rows in the table(s)
    int64_t d_up = 0;       // up-projection width
    int64_t d_emb = 0;      // value width; equals n_embd when tied
    int64_t k_max = 512;    // most rows one token may own
    bool tie_kv = true;

    std::vector<OptionError> validate(int64_t n_embd, int64_t vocab_size) const;
};

// An L3 layer applied after block `after_block`.
struct L3Placement {
    int64_t after_block = 0;
    L3LayerOptions options;
};

struct GPTOptions {
    int64_t sequence_len = 2048;
    int64_t vocab_size = 32768;
    int64_t n_layer = 12;
    int64_t n_head = 6;
    int64_t n_kv_head = 6;
    int64_t n_embd = 768;
    std::string window_pattern = "SSSL";
    double softcap = 15.0;
    int64_t pad_vocab_to = 64;
    std::vector<L3Placement> l3;  // sorted by after_block, at most one per block

    static constexpr int64_t kValueEmbedGateChannels = 32;  // ve_gate reads x[..., :32]

    int64_t head_dim() const { return n_embd / n_head; }
    int64_t kv_dim() const { return n_kv_head * head_dim(); }
    int64_t padded_vocab_size() const { return (vocab_size + pad_vocab_to - 1) / pad_vocab_to * pad_vocab_to; }
    // Value embeddings on alternating layers, the last layer always included.
    bool has_value_embedding(int64_t layer) const { return layer % 2 == (n_layer - 1) % 2; }
    // Left window per layer: L = sequence_len, S = sequence_len / 2, tiled, last layer always L.
    std::vector<int64_t> window_sizes() const;

    std::vector<OptionError> validate() const;
};

// nanochat's width rule: model_dim = ceil(depth * aspect_ratio / head_dim) * head_dim.
int64_t model_dim_for(int64_t depth, int64_t aspect_ratio, int64_t head_dim);

}  // namespace l3lab::modules
