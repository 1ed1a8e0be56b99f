#include "runner/data/tokenizer.h"

#include <cctype>

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "runner/data/bpe.h"
#include "runner/data/errors.h"
#include "runner/data/sha256.h"
#include "runner/data/tokenizer_common.h"
#include "runner/data/utf8.h"
#include "runner/util/format.h"
#include "runner/util/progress.h"

namespace l3lab::data {

const std::vector<std::string>& reference_special_tokens() {
    static const std::vector<std::string> tokens = {
        "<|bos|>",         "<|user_start|>",   "<|user_end|>",  "<|assistant_start|>", "<|assistant_end|>",
        "<|python_start|>", "<|python_end|>", "<|output_start|>", "<|output_end|>"};
    return tokens;
}

InvalidUtf8::InvalidUtf8(size_t offset_)
    : std::invalid_argument("invalid UTF-8 at byte offset " + std::to_string(offset_)), offset(offset_) {}

namespace {

// SentencePiece writes a space as U+2581 LOWER ONE EIGHTH BLOCK inside pieces.
constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";

std::string replace_all(std::string s, std::string_view from, std::string_view to) {
    for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size())
        s.replace(pos, from.size(), to);
    return s;
}

// "Internal: ./src/trainer_interface.cc(660) [(a) == (b)] Vocabulary size too high ..." -> the sentence.
std::string sentencepiece_message(const sentencepiece::util::Status& status) {
    std::string m = status.ToString();
    if (auto bracket = m.find("] "); bracket != std::string::npos && m.find(".cc(") < bracket) m = m.substr(bracket + 2);
    while (!m.empty() && (std::isspace(static_cast<unsigned char>(m.back())) || m.back() == ':')) m.pop_back();
    return m;
}

class SentencePieceTokenizer final : public TokenizerCommon {
public:
    SentencePieceTokenizer(std::string bytes, const std::string& name) {
        sha256_ = sha256_hex(bytes);
        auto status = sp_.LoadFromSerializedProto(bytes);
        if (!status.ok())
            throw DataError(name, "not a tokenizer file (neither nanochat's tokenizer.pkl nor a SentencePiece model)" +
                                      (sentencepiece_message(status).empty() ? "" : ": " + sentencepiece_message(status)));
        const int n = sp_.GetPieceSize();
        surface_.resize(n);
        token_bytes_.assign(n, 0);
        std::array<int, 256> byte_ids;
        byte_ids.fill(-1);
        for (int id = 0; id < n; ++id) {
            const std::string& piece = sp_.IdToPiece(id);
            if (sp_.IsControl(id) || sp_.IsUnknown(id)) {
                surface_[id] = piece;  // rendered by name, counted as 0 bytes
                specials_.push_back(piece);
                special_ids_.push_back(id);
            } else if (sp_.IsByte(id)) {
                // "<0xAB>"
                int value = std::stoi(piece.substr(3, 2), nullptr, 16);
                surface_[id] = std::string(1, static_cast<char>(value));
                token_bytes_[id] = 1;
                byte_ids[value] = id;
            } else {
                surface_[id] = replace_all(piece, kSpaceSymbol, " ");
                token_bytes_[id] = static_cast<int32_t>(surface_[id].size());
            }
        }
        auto bos = special_id(kBosToken);
        if (!bos) throw DataError(name, "the tokenizer has no <|bos|> token (make one with 'l3lab data train-tokenizer')");
        bos_ = *bos;
        if (std::count(byte_ids.begin(), byte_ids.end(), -1) != 0)
            throw DataError(name, "the tokenizer has no byte fallback tokens <0x00>..<0xFF>, so it cannot encode "
                                  "every text (make one with 'l3lab data train-tokenizer')");
        for (size_t i = 0; i < 3; ++i) space_symbol_ids_[i] = byte_ids[static_cast<unsigned char>(kSpaceSymbol[i])];
        // A model trained with other normalisation (NFKC, a dummy prefix, collapsed whitespace) is not lossless.
        for (std::string_view probe : {"Hello world", " two  spaces\n\tand\r\na tab", "na\xC3\xAFve \xE4\xBD\xA0\xE5\xA5\xBD"
                                       " \xF0\x9F\x8C\x8D", "\xE2\x96\x81 x", "\xEF\xBC\xA1\xEF\xBC\xA2"}) {
            auto ids = encode(probe);
            if (decode(ids) != probe)
                throw DataError(name, "the tokenizer does not reproduce text exactly (it normalises it); make a "
                                      "lossless one with 'l3lab data train-tokenizer'");
        }
    }

    std::vector<int32_t> encode(std::string_view text) const override {
        if (size_t bad = first_invalid_utf8(text); bad != std::string_view::npos) throw InvalidUtf8(bad);
        std::vector<int32_t> out;
        out.reserve(text.size() / 3);
        std::vector<int> ids;
        // SentencePiece reads a literal U+2581 as a space; encode it as its three bytes to stay lossless.
        for (size_t pos = 0;;) {
            size_t hit = text.find(kSpaceSymbol, pos);
            std::string_view segment = text.substr(pos, hit == std::string_view::npos ? std::string_view::npos : hit - pos);
            if (!segment.empty()) {
                auto status = sp_.Encode(segment, &ids);
                if (!status.ok()) throw std::runtime_error("tokenizer: " + sentencepiece_message(status));
                out.insert(out.end(), ids.begin(), ids.end());
            }
            if (hit == std::string_view::npos) break;
            out.insert(out.end(), space_symbol_ids_.begin(), space_symbol_ids_.end());
            pos = hit + kSpaceSymbol.size();
        }
        return out;
    }

    std::string piece(int id) const override { return sp_.IdToPiece(id); }

private:
    sentencepiece::SentencePieceProcessor sp_;
    std::array<int32_t, 3> space_symbol_ids_{};
};

class VectorIterator final : public sentencepiece::SentenceIterator {
public:
    explicit VectorIterator(const std::vector<std::string>& v) : v_(v) {}
    bool done() const override { return i_ >= v_.size(); }
    void Next() override { ++i_; }
    const std::string& value() const override { return v_[i_]; }
    sentencepiece::util::Status status() const override { return {}; }

private:
    const std::vector<std::string>& v_;
    size_t i_ = 0;
};

}  // namespace

std::unique_ptr<Tokenizer> tokenizer_from_bytes(std::string bytes, const std::string& name) {
    // A pickle starts with its PROTO opcode 0x80; a SentencePiece model (protobuf) never does.
    if (!bytes.empty() && static_cast<unsigned char>(bytes[0]) == 0x80) {
        std::string hash = sha256_hex(bytes);
        return bpe_tokenizer(read_tiktoken_pickle(bytes, name), std::move(hash), name);
    }
    return std::make_unique<SentencePieceTokenizer>(std::move(bytes), name);
}

std::string tokenizer_file(const std::string& path) {
    std::error_code ec;
    if (!std::filesystem::is_directory(path, ec)) return path;
    const std::string pkl = (std::filesystem::path(path) / kBpeTokenizerFile).string();
    if (!std::filesystem::exists(pkl, ec))
        throw DataError(path, "a directory without tokenizer.pkl where a tokenizer was expected (nanochat's tokenizer/ "
                              "directory holds tokenizer.pkl)");
    return pkl;
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path_or_directory) {
    const std::string path = tokenizer_file(path_or_directory);
    std::error_code ec;
    if (std::filesystem::exists(path, ec) && !std::filesystem::is_regular_file(path, ec))
        throw DataError(path, "not a regular file (a device or pipe) where a tokenizer file was expected");
    std::ifstream in(path, std::ios::binary);
    if (!in) throw DataError(path, "cannot open the tokenizer file");
    std::ostringstream bytes;
    bytes << in.rdbuf();
    if (in.bad()) throw DataError(path, "read error");
    return tokenizer_from_bytes(std::move(bytes).str(), path);
}

std::string train_tokenizer(const std::function<bool(std::string&)>& next_document,
                            const TokenizerTrainOptions& options, TokenizerTrainReport* report) {
    const int min_vocab = 1 + static_cast<int>(reference_special_tokens().size()) + 256;
    if (options.vocab_size < min_vocab)
        throw DataError("--vocab-size", "must be at least " + std::to_string(min_vocab) +
                                            " (<unk>, the 9 special tokens and 256 byte tokens)");
    TokenizerTrainReport r;
    std::vector<std::string> texts;
    size_t longest = 0;
    std::string doc;
    util::ProgressOptions in_millions;
    in_millions.unit_scale = 1e-6;
    util::Progress reading("reading the training text", options.max_chars, "M characters", in_millions);
    while (next_document(doc)) {
        reading.set(r.chars);
        ++r.documents;
        std::string_view text = options.doc_cap > 0 ? utf8_prefix(doc, options.doc_cap) : std::string_view(doc);
        if (text.empty()) continue;
        r.chars += static_cast<int64_t>(utf8_chars(text));
        longest = std::max(longest, text.size());
        texts.emplace_back(text);
        if (options.max_chars > 0 && r.chars > options.max_chars) break;  // as tok_train.py: yield, then check
    }
    reading.set(r.chars);
    reading.finish();
    if (texts.empty()) throw DataError("tokenizer training", "the inputs contain no text");

    const int threads = options.threads > 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency());
    std::string specials;
    for (const auto& s : reference_special_tokens()) specials += (specials.empty() ? "" : ",") + s;
    const std::unordered_map<std::string, std::string> spec = {
        {"model_type", "bpe"},
        {"vocab_size", std::to_string(options.vocab_size)},
        {"byte_fallback", "true"},                  // any byte sequence is encodable
        {"normalization_rule_name", "identity"},    // no NFKC: text comes back exactly
        {"add_dummy_prefix", "false"},              // no space invented at the start
        {"remove_extra_whitespaces", "false"},      // whitespace runs kept (code, tables)
        {"allow_whitespace_only_pieces", "true"},   // and learnable as tokens
        {"split_digits", "false"},
        {"character_coverage", "0.9995"},           // rarer characters fall back to bytes
        {"unk_id", "0"},
        {"bos_id", "-1"},
        {"eos_id", "-1"},
        {"pad_id", "-1"},
        {"control_symbols", specials},             // ids 1..9: never produced from text
        {"max_sentence_length", std::to_string(std::clamp<size_t>(longest + 1, 4192, 1u << 30))},
        {"input_sentence_size", "0"},
        {"shuffle_input_sentence", "false"},
        {"num_threads", std::to_string(threads)},
        {"minloglevel", "2"},
        {"model_prefix", ""},
    };
    VectorIterator it(texts);
    std::string model;
    const auto start = std::chrono::steady_clock::now();
    util::ProgressOptions on_the_clock;  // SentencePiece reports nothing while it trains: show the time spent
    on_the_clock.ticker = true;
    util::Progress training("training the vocabulary (SentencePiece BPE, " + util::group_digits(options.vocab_size) +
                                " tokens)", 0, "", on_the_clock);
    auto status = sentencepiece::SentencePieceTrainer::Train(spec, &it, &model);
    training.finish();
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!status.ok()) throw DataError("tokenizer training", "SentencePiece: " + sentencepiece_message(status));
    if (report) *report = r;
    return model;
}

}  // namespace l3lab::data
