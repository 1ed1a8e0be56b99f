// `l3lab data ...` end to end on a generated corpus: text -> tokenizer -> shards -> inspect -> batches
// with a bits-per-byte number, exact resume through saved states, and exit code 2 for bad data.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "test_data_util.h"

using namespace l3lab;
namespace fs = std::filesystem;

namespace {

#define EXPECT_CONTAINS(text, part) EXPECT_NE((text).find(part), std::string::npos) << (text)

struct Workspace {
    test::TempDir dir;
    std::string p(const std::string& rel) const { return (dir.path() / rel).string(); }
    Workspace() {
        std::string jsonl;
        for (int i = 0; i < 60; ++i) jsonl += nlohmann::json{{"text", test::sample_text(300 + i, 500 + 20 * i)}}.dump() + "\n";
        dir.write("corpus/part.jsonl", jsonl);
        for (int i = 0; i < 3; ++i) dir.write("corpus/notes/n" + std::to_string(i) + ".txt", test::sample_text(400 + i, 2000));
    }
};

std::string last_line_with(const std::string& out, const std::string& key) {
    auto pos = out.rfind(key);
    if (pos == std::string::npos) return "";
    return out.substr(pos, out.find('\n', pos) - pos);
}

}  // namespace

TEST(DataCli, TextToShardsToBatchesToBitsPerByte) {
    Workspace w;
    auto r = test::run_cli({"data", "train-tokenizer", "--input", w.p("corpus"), "--vocab-size", "400", "--output", w.p("tok")});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_CONTAINS(r.out, "trained a 400-token BPE (nanochat's) vocabulary");
    EXPECT_CONTAINS(r.out, "<|bos|>=391");  // nanochat's order: 256 bytes, 135 merges, then the special tokens
    EXPECT_CONTAINS(r.out, "wrote " + w.p("tok") + "/tokenizer.pkl");
    EXPECT_TRUE(fs::exists(w.p("tok/tokenizer.tiktoken")));
    EXPECT_CONTAINS(r.out, "-> the same bytes");

    r = test::run_cli({"data", "tokenize", "--tokenizer", w.p("tok"), "--input", w.p("corpus/*.jsonl"), w.p("corpus/notes"),
                       "--output", w.p("shards"), "--shard-tokens", "4000", "--val-fraction", "0.1", "--threads", "2"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_CONTAINS(r.out, "tokens/s");
    EXPECT_CONTAINS(r.out, "wrote " + w.p("shards") + "/manifest.json");
    EXPECT_TRUE(fs::exists(w.p("shards/train_000001.bin")));
    EXPECT_TRUE(fs::exists(w.p("shards/val_000000.bin")));

    r = test::run_cli({"data", "inspect", w.p("shards/train_000000.bin"), "--tokenizer", w.p("tok"), "--docs", "2"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_CONTAINS(r.out, "magic 20240520, version 1 (uint16 tokens)");
    EXPECT_CONTAINS(r.out, "every shard's sha256 checked");
    EXPECT_CONTAINS(r.out, "--- train_000000.bin document 1");
    EXPECT_CONTAINS(r.out, "<|bos|>");

    // Batches from the val split, with the unigram bits per byte.
    r = test::run_cli({"data", "batches", w.p("shards"), "--split", "val", "--tokenizer", w.p("tok"), "--batch-size", "2",
                       "--sequence-len", "64", "--batches", "5"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_CONTAINS(r.out, "made 5 batches (640 tokens)");
    EXPECT_CONTAINS(r.out, "bits per byte");
    EXPECT_CONTAINS(r.out, "token frequencies of the train split");

    // 10 batches straight == 4 batches, save, 6 more from the saved state.
    auto batches = [&](std::vector<std::string> extra) {
        std::vector<std::string> args = {"data", "batches", w.p("shards"), "--batch-size", "3", "--sequence-len", "48",
                                         "--buffer-size", "20"};
        args.insert(args.end(), extra.begin(), extra.end());
        auto res = test::run_cli(args);
        EXPECT_EQ(res.code, 0) << res.err;
        return last_line_with(res.out, "last batch checksum");
    };
    const std::string straight = batches({"--batches", "10"});
    batches({"--batches", "4", "--state-out", w.p("state.json")});
    EXPECT_EQ(batches({"--batches", "6", "--state-in", w.p("state.json")}), straight);
    EXPECT_NE(batches({"--batches", "9"}), straight);
}

TEST(DataCli, BadDataExitsTwoNamingTheFile) {
    Workspace w;
    auto ok = test::run_cli({"data", "train-tokenizer", "--type", "sentencepiece", "--input", w.p("corpus"), "--vocab-size", "400",
                             "--output", w.p("tok.model")});
    ASSERT_EQ(ok.code, 0) << ok.err;
    ok = test::run_cli({"data", "tokenize", "--tokenizer", w.p("tok.model"), "--input", w.p("corpus"), "--output", w.p("shards")});
    ASSERT_EQ(ok.code, 0) << ok.err;

    auto expect_exit2 = [](std::vector<std::string> args, const std::string& part) {
        auto r = test::run_cli(args);
        EXPECT_EQ(r.code, 2) << r.out << r.err;
        EXPECT_CONTAINS(r.err, part);
    };
    expect_exit2({"data", "tokenize", "--tokenizer", w.p("tok.model"), "--input", w.p("nope.jsonl"), "--output", w.p("o")},
                 "nope.jsonl: no such file or directory");
    w.dir.write("empty/e.txt", "");
    expect_exit2({"data", "tokenize", "--tokenizer", w.p("tok.model"), "--input", w.p("empty"), "--output", w.p("o")},
                 "no documents in the inputs");
    expect_exit2({"data", "train-tokenizer", "--input", w.p("empty"), "--output", w.p("t2.model")}, "the inputs contain no text");
    expect_exit2({"data", "train-tokenizer", "--type", "sentencepiece", "--input", w.p("empty"), "--output", w.p("t2.model")},
                 "the inputs contain no text");
    expect_exit2({"data", "train-tokenizer", "--type", "wordpiece", "--input", w.p("corpus"), "--output", w.p("t3")},
                 "--type: 'wordpiece' is not a tokenizer type: bpe (nanochat's, the default) or sentencepiece");
    expect_exit2({"data", "train-tokenizer", "--input", w.p("corpus"), "--output", w.p("tok.model")},
                 "tok.model: exists and is not a directory; --type bpe writes nanochat's tokenizer directory");
    expect_exit2({"data", "train-tokenizer", "--input", w.p("corpus"), "--vocab-size", "264", "--output", w.p("t4")},
                 "--vocab-size: must be at least 265");
    EXPECT_FALSE(fs::exists(w.p("t2.model")) || fs::exists(w.p("t3")) || fs::exists(w.p("t4")));
    expect_exit2({"data", "tokenize", "--tokenizer", w.p("missing.model"), "--input", w.p("corpus"), "--output", w.p("o")},
                 "missing.model: cannot open the tokenizer file");
    expect_exit2({"data", "tokenize", "--tokenizer", w.p("tok.model"), "--input", w.p("corpus"), "--output", w.p("shards")},
                 "exists and is not empty; pass --overwrite");
    expect_exit2({"data", "tokenize", "--input", w.p("corpus")}, "is required but missing");
    expect_exit2({"data", "frobnicate"}, "unknown subcommand 'frobnicate'");

    // A tokenizer that did not make the shards.
    ok = test::run_cli({"data", "train-tokenizer", "--input", w.p("corpus/notes"), "--vocab-size", "420", "--output", w.p("other.model")});
    EXPECT_CONTAINS(ok.out, "tokenizer.pkl");  // bpe, the default: a directory, named as the user likes
    ASSERT_EQ(ok.code, 0) << ok.err;
    expect_exit2({"data", "inspect", w.p("shards"), "--tokenizer", w.p("other.model")}, "these shards were made with the tokenizer");
    expect_exit2({"data", "batches", w.p("shards"), "--tokenizer", w.p("other.model")}, "manifest.json: these shards were made");

    // Damaged shards.
    const std::string shard = w.p("shards/train_000000.bin");
    std::string bytes = test::read_bytes(shard);
    fs::create_directories(w.p("bad"));
    test::write_bytes(w.p("bad/truncated.bin"), bytes.substr(0, bytes.size() - 1));
    expect_exit2({"data", "inspect", w.p("bad/truncated.bin")}, "truncated.bin: byte offset");
    std::string magic = bytes;
    magic[0] = 'X';
    test::write_bytes(w.p("bad/magic.bin"), magic);
    expect_exit2({"data", "inspect", w.p("bad/magic.bin")}, "magic.bin: byte offset 0: wrong magic");
    std::string high = bytes;
    high[1024 + 2 * 5] = '\xff';
    high[1024 + 2 * 5 + 1] = '\xff';
    test::write_bytes(w.p("bad/high.bin"), high);
    expect_exit2({"data", "inspect", w.p("bad/high.bin"), "--tokenizer", w.p("tok.model")},
                 "high.bin: byte offset 1,034: token id 65535 (token 5) is not below the vocabulary size 400");

    // Through the real executable: exit code 2 and no crash.
    std::string command = std::string(L3LAB_BINARY) + " data inspect " + w.p("bad/magic.bin") + " 2>&1";
    FILE* pipe = popen(command.c_str(), "r");
    std::string output;
    char buf[4096];
    while (size_t n = fread(buf, 1, sizeof(buf), pipe)) output.append(buf, n);
    const int status = pclose(pipe);
    EXPECT_EQ(WEXITSTATUS(status), 2) << output;
    EXPECT_CONTAINS(output, "wrong magic");
    EXPECT_EQ(output.find("terminate called"), std::string::npos) << output;
}

TEST(DataCli, HelpListsSubcommands) {
    auto r = test::run_cli({"data", "--help"});
    EXPECT_EQ(r.code, 0);
    for (const char* s : {"train-tokenizer", "tokenize", "inspect", "batches"}) EXPECT_CONTAINS(r.out, s);
    r = test::run_cli({"data", "tokenize", "--help"});
    EXPECT_EQ(r.code, 0);
    EXPECT_CONTAINS(r.out, "--shard-tokens");
    EXPECT_CONTAINS(r.out, "--val-fraction");
    r = test::run_cli({"data"});
    EXPECT_EQ(r.code, 2);
}
