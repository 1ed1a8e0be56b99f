// What the two tokenizers (SentencePiece, nanochat's BPE) hold alike: each token's bytes, the special
// tokens by id, the byte lengths for bits per byte, BOS and the file's hash. Internal to runner/data/.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "runner/data/tokenizer.h"

namespace l3lab::data {

class TokenizerCommon : public Tokenizer {
public:
    std::string decode(std::span<const int32_t> ids) const override {
        std::string out;
        for (int32_t id : ids) {
            if (id < 0 || id >= static_cast<int32_t>(surface_.size()))
                throw std::out_of_range("token id " + std::to_string(id) + " is outside the vocabulary of " +
                                        std::to_string(surface_.size()));
            out += surface_[static_cast<size_t>(id)];
        }
        return out;
    }
    int vocab_size() const override { return static_cast<int>(surface_.size()); }
    int bos_id() const override { return bos_; }
    std::vector<std::string> special_tokens() const override { return specials_; }
    std::optional<int> special_id(std::string_view name) const override {
        for (size_t i = 0; i < specials_.size(); ++i)
            if (specials_[i] == name) return special_ids_[i];
        return std::nullopt;
    }
    const std::vector<int32_t>& token_bytes() const override { return token_bytes_; }
    const std::string& sha256() const override { return sha256_; }

protected:
    std::vector<std::string> surface_;  // id -> the bytes it decodes to (a special token: its name)
    std::vector<int32_t> token_bytes_;
    std::vector<std::string> specials_;  // in id order
    std::vector<int> special_ids_;
    int bos_ = -1;
    std::string sha256_;
};

}  // namespace l3lab::data
