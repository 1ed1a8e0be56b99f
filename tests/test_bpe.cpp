// nanochat's tokenizer against goldens made by nanochat's own code with rustbpe and tiktoken
// (tools/reference/make_bpe_fixtures.py): reading tokenizer.pkl, encode = tiktoken's encode_ordinary,
// decode, token_bytes = tok_train.py's, and training = rustbpe's merges.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <fstream>

#include "runner/data/bpe.h"
#include "runner/data/errors.h"
#include "runner/data/sha256.h"
#include "runner/data/tiktoken_pickle.h"
#include "runner/data/tokenizer.h"
#include "test_data_util.h"
#include "test_util.h"

using namespace l3lab;
using nlohmann::json;

namespace {

const std::filesystem::path kBpe = test::kSourceDir / "tests" / "fixtures" / "bpe";

json read_json(const std::filesystem::path& p) {
    std::ifstream in(p);
    return json::parse(in);
}

std::vector<std::string> corpus() {
    std::vector<std::string> docs;
    std::ifstream in(kBpe / "corpus.jsonl");
    for (std::string line; std::getline(in, line);) docs.push_back(json::parse(line)["text"].get<std::string>());
    return docs;
}

std::string fmt_hex(unsigned char c) {
    const char* d = "0123456789abcdef";
    return {d[c >> 4], d[c & 15]};
}

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const data::DataError& e) {
        return e.what();
    }
    return "(no error)";
}

}  // namespace

TEST(Bpe, ReadsNanochatsTokenizerPkl) {
    const json c = read_json(kBpe / "full" / "case.json");
    auto t = data::load_tokenizer((kBpe / "full").string());  // the directory, as nanochat's tokenizer/
    EXPECT_EQ(t->vocab_size(), 1024);
    EXPECT_EQ(t->bos_id(), c["bos"].get<int>());
    EXPECT_EQ(t->special_tokens(), c["special_tokens"].get<std::vector<std::string>>());
    EXPECT_EQ(t->special_tokens(), data::reference_special_tokens());
    EXPECT_EQ(*t->special_id("<|assistant_end|>"), 1015 + 4);
    EXPECT_EQ(t->token_bytes(), c["token_bytes"].get<std::vector<int32_t>>())
        << "token_bytes must be tok_train.py's (a partial UTF-8 token counts as U+FFFD's 3 bytes)";
    EXPECT_EQ(t->sha256(), data::sha256_file((kBpe / "full" / "tokenizer.pkl").string()));
}

TEST(Bpe, EncodesAsTiktokenOnEveryGoldenText) {
    const json cases = read_json(kBpe / "encode_cases.json");
    auto t = data::load_tokenizer((kBpe / "full" / "tokenizer.pkl").string());
    const auto docs = corpus();
    ASSERT_GT(cases["cases"].size(), 1000u);
    int mismatches = 0;
    for (const auto& c : cases["cases"]) {
        const std::string text = c.contains("doc") ? docs.at(c["doc"].get<size_t>()) : c["text"].get<std::string>();
        const auto want = c["ids"].get<std::vector<int32_t>>();
        const auto got = t->encode(text);
        if (got != want && ++mismatches <= 5) ADD_FAILURE() << "encode differs from tiktoken's on " << json(text).dump();
        EXPECT_EQ(t->decode(want), text);
    }
    EXPECT_EQ(mismatches, 0);
}

TEST(Bpe, RefusesInvalidUtf8AndTokenIdsOutsideTheVocabulary) {
    auto t = data::load_tokenizer((kBpe / "full").string());
    try {
        t->encode("ok \xC3\x28");
        FAIL() << "invalid UTF-8 accepted";
    } catch (const data::InvalidUtf8& e) {
        EXPECT_EQ(e.offset, 3u);
    }
    const std::vector<int32_t> bad = {5, 1024};
    EXPECT_THROW(t->decode(bad), std::out_of_range);
    EXPECT_EQ(t->decode(std::vector<int32_t>{t->bos_id()}), "<|bos|>");
}

// rustbpe's training on the same text through tok_train.py's doc_cap/max_chars: the same ranks, in order.
TEST(Bpe, TrainingMakesRustbpesMerges) {
    const auto docs = corpus();
    for (const std::string name : {"full", "capped"}) {
        SCOPED_TRACE(name);
        const json c = read_json(kBpe / name / "case.json");
        data::BpeTrainOptions o;
        o.vocab_size = c["vocab_size"];
        o.doc_cap = c["doc_cap"];
        o.max_chars = c["max_chars"];
        o.threads = 2;
        size_t next = 0;
        const auto trained = data::train_bpe(
            [&](std::string& doc) {
                if (next == docs.size()) return false;
                doc = docs[next++];
                return true;
            },
            o);
        const std::string pkl = test::slurp(kBpe / name / "tokenizer.pkl");
        const auto reference = data::read_tiktoken_pickle(pkl, name);
        ASSERT_EQ(trained.ranks.size(), reference.ranks.size());
        for (size_t i = 0; i < trained.ranks.size(); ++i) {
            ASSERT_EQ(trained.ranks[i].second, reference.ranks[i].second);
            ASSERT_EQ(trained.ranks[i].first, reference.ranks[i].first) << "rank " << i;
        }
        EXPECT_EQ(trained.specials, reference.specials);
        EXPECT_EQ(trained.pattern, reference.pattern);
        EXPECT_EQ(trained.pattern, std::string(data::kNanochatSplitPattern));
        // Written and read back: the same Encoding (Python's pickle reads it too: BpeCli below).
        const auto again = data::read_tiktoken_pickle(data::write_tiktoken_pickle(trained), "written");
        EXPECT_EQ(again.ranks, trained.ranks);
        EXPECT_EQ(again.specials, trained.specials);
        EXPECT_EQ(again.name, "rustbpe");
    }
}

TEST(Bpe, RefusesWhatIsNotATiktokenEncodingPickle) {
    const std::string pkl = test::slurp(kBpe / "capped" / "tokenizer.pkl");
    EXPECT_NE(error_of([&] { data::read_tiktoken_pickle(pkl.substr(0, pkl.size() / 2), "half.pkl"); }).find("truncated"),
              std::string::npos);
    // A pickle that would run os.system: refused before anything is built.
    const std::string evil = "\x80\x04\x8c\x02os\x8c\x06system\x93\x8c\x04true\x85R.";
    const std::string m = error_of([&] { data::read_tiktoken_pickle(evil, "evil.pkl"); });
    EXPECT_NE(m.find("evil.pkl: byte offset 14: the pickle refers to os.system"), std::string::npos) << m;
    EXPECT_NE(error_of([&] { data::tokenizer_from_bytes("\x80\x04K\x01.", "int.pkl"); }).find("holds no tiktoken Encoding"),
              std::string::npos);
    EXPECT_NE(error_of([&] { data::tokenizer_from_bytes("plain text", "x.txt"); }).find("not a tokenizer file"),
              std::string::npos);
    test::TempDir dir;
    EXPECT_NE(error_of([&] { data::load_tokenizer(dir.path().string()); }).find("a directory without tokenizer.pkl"),
              std::string::npos);
    // A rank far beyond the vocabulary is refused before anything of that size is allocated.
    auto e = data::read_tiktoken_pickle(pkl, "capped");
    e.ranks.back().second = 2'000'000'000;
    EXPECT_NE(error_of([&] { data::bpe_tokenizer(e, "", "huge.pkl"); }).find("huge.pkl: the Encoding's ids are not 0 to"),
              std::string::npos);
}

#ifdef L3LAB_PYTHON
// Python's own unpickler reads what train-tokenizer writes, as nanochat's from_directory does; a stand-in
// for tiktoken.core.Encoding (tiktoken is not a dependency of l3lab) receives the state __setstate__ gets.
TEST(Bpe, PythonsPickleReadsTheWrittenTokenizer) {
    test::TempDir dir;
    auto r = test::run_cli({"data", "train-tokenizer", "--input", (kBpe / "corpus.jsonl").string(), "--vocab-size", "700",
                            "--output", (dir.path() / "tokenizer").string()});
    ASSERT_EQ(r.code, 0) << r.err;
    dir.write("stand_in/tiktoken/__init__.py", "");
    dir.write("stand_in/tiktoken/core.py",
              "class Encoding:\n"
              "    def __setstate__(self, state):\n"
              "        self.state = state\n");
    const std::string script = dir.write(
        "read.py",
        "import json, pickle, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "with open(sys.argv[2], 'rb') as f:\n"
        "    s = pickle.load(f).state\n"
        "ranks = s['mergeable_ranks']\n"
        "print(json.dumps({'name': s['name'], 'pat_str': s['pat_str'], 'n': len(ranks),\n"
        "                  'rank_sum': sum(ranks.values()), 'bytes': sum(len(k) for k in ranks),\n"
        "                  'last': ranks and max(ranks, key=ranks.get).hex(), 'special': s['special_tokens']}))\n");
    FILE* pipe = ::popen((std::string(L3LAB_PYTHON) + " " + script + " " + (dir.path() / "stand_in").string() + " " +
                          (dir.path() / "tokenizer" / "tokenizer.pkl").string() + " 2>&1")
                             .c_str(),
                         "r");
    ASSERT_NE(pipe, nullptr);
    std::string out;
    char buf[4096];
    while (size_t n = std::fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
    ASSERT_EQ(::pclose(pipe), 0) << out;
    const json got = json::parse(out);
    auto t = data::load_tokenizer((dir.path() / "tokenizer").string());
    EXPECT_EQ(got["name"], "rustbpe");
    EXPECT_EQ(got["pat_str"], std::string(data::kNanochatSplitPattern));
    EXPECT_EQ(got["n"], 691);
    EXPECT_EQ(got["rank_sum"], 690 * 691 / 2);
    int64_t bytes = 0;
    for (int id = 0; id < 691; ++id) bytes += static_cast<int64_t>(t->decode(std::vector<int32_t>{id}).size());
    EXPECT_EQ(got["bytes"], bytes);
    std::string last_hex;
    for (unsigned char c : t->decode(std::vector<int32_t>{690})) last_hex += fmt_hex(c);
    EXPECT_EQ(got["last"], last_hex);
    EXPECT_EQ(got["special"]["<|bos|>"], 691);
    EXPECT_EQ(got["special"]["<|output_end|>"], 699);
}
#endif
