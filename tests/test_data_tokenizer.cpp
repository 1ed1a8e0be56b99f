// The tokenizer: lossless on any valid UTF-8, clear errors otherwise, the reference's special tokens,
// byte lengths for bits per byte, and training through SentencePiece.
#include <gtest/gtest.h>

#include "runner/data/errors.h"
#include "runner/data/tokenizer.h"
#include "test_data_util.h"

using namespace l3lab;
using data::Tokenizer;

namespace {

void expect_round_trip(const Tokenizer& t, const std::string& s) {
    auto ids = t.encode(s);
    EXPECT_EQ(t.decode(ids), s) << "text of " << s.size() << " bytes";
    int64_t bytes = 0;
    for (int32_t id : ids) {
        ASSERT_GE(id, 0);
        ASSERT_LT(id, t.vocab_size());
        EXPECT_NE(id, t.bos_id());
        bytes += t.token_bytes()[static_cast<size_t>(id)];
    }
    EXPECT_EQ(bytes, static_cast<int64_t>(s.size())) << "token byte lengths must add up to the text's";
}

// A random valid code point: ASCII (controls included), Latin, CJK, emoji, the whole range.
uint32_t random_code_point(test::Rng& rng) {
    for (;;) {
        uint32_t cp;
        switch (rng.below(6)) {
            case 0: cp = static_cast<uint32_t>(rng.below(0x80)); break;
            case 1: cp = 0x20 + static_cast<uint32_t>(rng.below(0x5F)); break;
            case 2: cp = 0x80 + static_cast<uint32_t>(rng.below(0x780)); break;
            case 3: cp = 0x4E00 + static_cast<uint32_t>(rng.below(0x5000)); break;
            case 4: cp = 0x1F300 + static_cast<uint32_t>(rng.below(0x300)); break;
            default: cp = static_cast<uint32_t>(rng.below(0x110000)); break;
        }
        if (cp >= 0xD800 && cp <= 0xDFFF) continue;
        return cp;
    }
}

std::string utf8(uint32_t cp) {
    std::string s;
    if (cp < 0x80) s += static_cast<char>(cp);
    else if (cp < 0x800) s += {static_cast<char>(0xC0 | cp >> 6), static_cast<char>(0x80 | (cp & 0x3F))};
    else if (cp < 0x10000)
        s += {static_cast<char>(0xE0 | cp >> 12), static_cast<char>(0x80 | ((cp >> 6) & 0x3F)), static_cast<char>(0x80 | (cp & 0x3F))};
    else
        s += {static_cast<char>(0xF0 | cp >> 18), static_cast<char>(0x80 | ((cp >> 12) & 0x3F)),
              static_cast<char>(0x80 | ((cp >> 6) & 0x3F)), static_cast<char>(0x80 | (cp & 0x3F))};
    return s;
}

}  // namespace

TEST(DataTokenizer, SpecialTokensAsTheReference) {
    const Tokenizer& t = test::small_tokenizer();
    EXPECT_EQ(t.vocab_size(), 400);
    ASSERT_TRUE(t.special_id("<|bos|>"));
    EXPECT_EQ(t.bos_id(), *t.special_id("<|bos|>"));
    for (const auto& name : data::reference_special_tokens()) {
        auto id = t.special_id(name);
        ASSERT_TRUE(id) << name;
        EXPECT_EQ(t.token_bytes()[static_cast<size_t>(*id)], 0) << name << " must not count in bits per byte";
        EXPECT_EQ(t.decode(std::vector<int32_t>{*id}), name);
    }
    // Text that spells a special token is ordinary text (tiktoken's encode_ordinary).
    auto ids = t.encode("<|bos|><|user_start|>");
    for (int32_t id : ids) EXPECT_EQ(t.token_bytes()[static_cast<size_t>(id)] > 0, true);
    EXPECT_EQ(t.decode(ids), "<|bos|><|user_start|>");
}

TEST(DataTokenizer, LosslessOnHardText) {
    const Tokenizer& t = test::small_tokenizer();
    const std::vector<std::string> cases = {
        "",
        "Hello world! This is a test.",
        " leading space",
        "trailing spaces   ",
        std::string(300, ' '),
        "\t\t\n\n\r\n  \v\f mixed\twhitespace \n",
        std::string("nul\0byte and \x01\x02\x1f\x7f controls", 26),
        "emoji \xF0\x9F\x8C\x8D\xF0\x9F\x9A\x80 family \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7",
        "CJK \xE4\xBD\xA0\xE5\xA5\xBD\xE4\xB8\x96\xE7\x95\x8C and \xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4",
        "fullwidth \xEF\xBC\xA1\xEF\xBC\xA2 and ligature \xEF\xAC\x81 stay as they are (no NFKC)",
        "combining e\xCC\x81 vs \xC3\xA9, BOM \xEF\xBB\xBF, nonchar \xEF\xBF\xBF, max \xF4\x8F\xBF\xBF",
        "the piece marker \xE2\x96\x81 itself, twice\xE2\x96\x81\xE2\x96\x81 and \xE2\x96\x81 ",
        "int main() {\n    return 0;\n}\n\t// tab-indented comment\n",
        "<unk> <0x41> <s> </s>",
    };
    for (const auto& s : cases) expect_round_trip(t, s);
}

TEST(DataTokenizer, LosslessOnRandomUnicode) {
    const Tokenizer& t = test::small_tokenizer();
    test::Rng rng{7};
    for (int i = 0; i < 200; ++i) {
        std::string s;
        const size_t n = rng.below(60);
        for (size_t k = 0; k < n; ++k) s += utf8(random_code_point(rng));
        expect_round_trip(t, s);
    }
    expect_round_trip(t, test::sample_text(999, 20000));
}

TEST(DataTokenizer, InvalidUtf8IsAnErrorWithItsOffset) {
    const Tokenizer& t = test::small_tokenizer();
    const std::vector<std::pair<std::string, size_t>> cases = {
        {"abc\xFF", 3},           {"\xC3", 0},          {"ok \xC0\xAF overlong", 3},
        {"x\xED\xA0\x80 surrogate", 1}, {"\xF4\x90\x80\x80 too big", 0}, {"\xE4\xBD", 0},
    };
    for (const auto& [s, offset] : cases) {
        try {
            t.encode(s);
            ADD_FAILURE() << "no error for invalid UTF-8 at " << offset;
        } catch (const data::InvalidUtf8& e) {
            EXPECT_EQ(e.offset, offset);
        }
    }
}

TEST(DataTokenizer, TokenBytesMatchDecodedPieces) {
    const Tokenizer& t = test::small_tokenizer();
    int bytes_tokens = 0;
    const auto specials = t.special_tokens();
    for (int id = 0; id < t.vocab_size(); ++id) {
        const int32_t b = t.token_bytes()[static_cast<size_t>(id)];
        const bool special = std::find(specials.begin(), specials.end(), t.piece(id)) != specials.end();
        if (special) {
            EXPECT_EQ(b, 0) << t.piece(id);
        } else {
            EXPECT_EQ(b, static_cast<int32_t>(t.decode(std::vector<int32_t>{id}).size())) << t.piece(id);
            EXPECT_GT(b, 0);
        }
        bytes_tokens += t.piece(id).size() == 6 && t.piece(id).rfind("<0x", 0) == 0;
    }
    EXPECT_EQ(bytes_tokens, 256) << "byte fallback: one token per byte value";
    EXPECT_THROW(t.decode(std::vector<int32_t>{t.vocab_size()}), std::out_of_range);
}

TEST(DataTokenizer, LoadedFileIsTheSameTokenizer) {
    test::TempDir dir;
    const std::string path = (dir.path() / "tok.model").string();
    test::write_bytes(path, test::small_tokenizer_bytes());
    auto t = data::load_tokenizer(path);
    EXPECT_EQ(t->sha256(), test::small_tokenizer().sha256());
    EXPECT_EQ(t->sha256().size(), 64u);
    const std::string s = test::sample_text(5, 3000);
    EXPECT_EQ(t->encode(s), test::small_tokenizer().encode(s));
}

TEST(DataTokenizer, TrainingIsDeterministic) {
    std::vector<std::string> docs = {test::sample_text(1, 8000), test::sample_text(2, 8000)};
    auto train = [&] {
        size_t i = 0;
        data::TokenizerTrainOptions o;
        o.vocab_size = 380;
        return data::train_tokenizer(
            [&](std::string& d) {
                if (i == docs.size()) return false;
                d = docs[i++];
                return true;
            },
            o);
    };
    EXPECT_EQ(train(), train());
}

TEST(DataTokenizer, BadFilesAndOptionsAreDataErrors) {
    test::TempDir dir;
    EXPECT_THROW(data::load_tokenizer((dir.path() / "missing.model").string()), data::DataError);
    const std::string junk = dir.write("junk.model", "this is not a model");
    try {
        data::load_tokenizer(junk);
        ADD_FAILURE();
    } catch (const data::DataError& e) {
        EXPECT_NE(std::string(e.what()).find(junk), std::string::npos) << e.what();
    }
    auto none = [](std::string&) { return false; };
    EXPECT_THROW(data::train_tokenizer(none, {}), data::DataError);
    data::TokenizerTrainOptions tiny;
    tiny.vocab_size = 100;
    EXPECT_THROW(data::train_tokenizer(none, tiny), data::DataError);
    // A vocabulary the corpus cannot fill: SentencePiece's limit is passed on.
    bool given = false;
    data::TokenizerTrainOptions huge;
    huge.vocab_size = 32768;
    try {
        data::train_tokenizer(
            [&](std::string& d) {
                if (given) return false;
                d = "a small corpus with few words";
                return given = true;
            },
            huge);
        ADD_FAILURE();
    } catch (const data::DataError& e) {
        EXPECT_NE(std::string(e.what()).find("Vocabulary size too high"), std::string::npos) << e.what();
    }
}
