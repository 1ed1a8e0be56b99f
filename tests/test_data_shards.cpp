// Token shards, manifest.json, text inputs and `l3lab data tokenize`: formats, the pinned validation
// split, llm.c compatibility, and every bad-data case as a DataError that names the file.
#include <gtest/gtest.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "runner/data/corpus.h"
#include "runner/data/errors.h"
#include "runner/data/manifest.h"
#include "runner/data/sha256.h"
#include "runner/data/shard_set.h"
#include "runner/data/tokenize.h"
#include "test_data_util.h"

using namespace l3lab;
namespace fs = std::filesystem;

namespace {

// Runs `f` and returns the DataError's text; fails the test when nothing is thrown.
template <class F>
std::string data_error(F&& f) {
    try {
        f();
    } catch (const data::DataError& e) {
        return e.what();
    }
    ADD_FAILURE() << "expected a DataError";
    return "";
}

#define EXPECT_CONTAINS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << (text)

// A small corpus: .txt documents in a directory and a .jsonl file.
struct Corpus {
    test::TempDir dir;
    std::vector<std::string> texts;
    Corpus() {
        for (int i = 0; i < 6; ++i) {
            texts.push_back(test::sample_text(100 + i, 400 + 150 * i));
            dir.write("txt/doc" + std::to_string(i) + ".txt", texts.back());
        }
        std::string jsonl;
        for (int i = 0; i < 30; ++i) {
            texts.push_back(test::sample_text(200 + i, 100 + 37 * i));
            jsonl += nlohmann::json{{"text", texts.back()}, {"id", i}}.dump() + "\n";
        }
        dir.write("more.jsonl", jsonl);
    }
    std::string path(const std::string& p) const { return (dir.path() / p).string(); }
};

data::TokenizeReport tokenize(const Corpus& c, const std::string& out, data::TokenizeOptions o = {}) {
    o.threads = 2;
    return data::tokenize_corpus(test::small_tokenizer(), "small.model", {c.path("txt"), c.path("more.jsonl")}, out, o);
}

}  // namespace

TEST(DataSha256, KnownVectors) {
    EXPECT_EQ(data::sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(data::sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(data::sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    data::Sha256 h;  // streamed in odd pieces
    const std::string million(1000000, 'a');
    for (size_t i = 0; i < million.size(); i += 997) h.update(million.substr(i, 997));
    EXPECT_EQ(h.hex_digest(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(DataShards, WriterAndReaderAgreeForBothVersions) {
    test::TempDir dir;
    for (int version : {1, 2}) {
        const std::string path = (dir.path() / ("v" + std::to_string(version) + ".bin")).string();
        std::vector<int32_t> tokens = {1, 5, 65535, 0, 1, 7};
        if (version == 2) tokens.push_back(1 << 20);
        test::write_shard(path, tokens, version);
        auto f = data::ShardFile::open(path);
        EXPECT_EQ(f->version(), version);
        ASSERT_EQ(f->num_tokens(), tokens.size());
        EXPECT_EQ(fs::file_size(path), 1024 + tokens.size() * (version == 1 ? 2 : 4));
        std::vector<int64_t> back(tokens.size());
        f->copy(0, tokens.size(), back.data());
        for (size_t i = 0; i < tokens.size(); ++i) EXPECT_EQ(back[i], tokens[i]);
        // The header, as llm.c reads it.
        const std::string bytes = test::read_bytes(path);
        int32_t header[3];
        std::memcpy(header, bytes.data(), sizeof(header));
        EXPECT_EQ(header[0], 20240520);
        EXPECT_EQ(header[1], version);
        EXPECT_EQ(header[2], static_cast<int32_t>(tokens.size()));
    }
}

TEST(DataShards, BadShardsNameFileAndOffset) {
    test::TempDir dir;
    auto p = [&](const char* name) { return (dir.path() / name).string(); };
    EXPECT_CONTAINS(data_error([&] { data::ShardFile::open(p("missing.bin")); }), "missing.bin: no such shard file");

    test::write_bytes(p("short.bin"), std::string(100, '\0'));
    EXPECT_CONTAINS(data_error([&] { data::ShardFile::open(p("short.bin")); }), "short.bin: byte offset 100: truncated");

    test::write_raw_shard(p("magic.bin"), 12345, 1, 2, {1, 2});
    EXPECT_CONTAINS(data_error([&] { data::ShardFile::open(p("magic.bin")); }), "magic.bin: byte offset 0: wrong magic 12345");

    test::write_raw_shard(p("version.bin"), 20240520, 7, 2, {1, 2});
    EXPECT_CONTAINS(data_error([&] { data::ShardFile::open(p("version.bin")); }), "byte offset 4: unknown shard version 7");

    test::write_raw_shard(p("trunc.bin"), 20240520, 1, 10, {1, 2, 3});
    const std::string t = data_error([&] { data::ShardFile::open(p("trunc.bin")); });
    EXPECT_CONTAINS(t, "trunc.bin: byte offset 1,030: truncated: the header promises 10 tokens");
    EXPECT_CONTAINS(t, "ends after 3 tokens");

    test::write_raw_shard(p("long.bin"), 20240520, 1, 2, {1, 2, 3});
    EXPECT_CONTAINS(data_error([&] { data::ShardFile::open(p("long.bin")); }), "byte offset 1,028: 2 bytes after the 2 tokens");
}

TEST(DataShards, LlmcShardDirectoryWithoutManifest) {
    // llm.c's fineweb.py: GPT-2 ids, every document starts with <|endoftext|> (50256), and a document that
    // does not fit continues at the start of the next shard.
    test::TempDir dir;
    test::write_raw_shard((dir.path() / "fineweb_val_000000.bin").string(), 20240520, 1, 6, {50256, 10, 11, 50256, 12, 13});
    test::write_raw_shard((dir.path() / "fineweb_train_000001.bin").string(), 20240520, 1, 7, {14, 15, 50256, 20, 50256, 30, 31});
    test::write_raw_shard((dir.path() / "fineweb_train_000002.bin").string(), 20240520, 1, 3, {50256, 40, 41});
    auto train = data::ShardSet::open(dir.path().string(), {.split = "train"});
    ASSERT_EQ(train->shards().size(), 2u);
    EXPECT_EQ(train->bos_id(), 50256);
    EXPECT_EQ(train->vocab_size(), 50257);
    ASSERT_EQ(train->notes().size(), 1u);
    EXPECT_CONTAINS(train->notes()[0], "GPT-2");
    const auto& s = train->shards()[0];
    EXPECT_EQ(s.leading_tokens, 2u);
    ASSERT_EQ(s.documents(), 2u);
    EXPECT_EQ(s.doc_begin(0), 2u);
    EXPECT_EQ(s.doc_length(0), 2u);
    EXPECT_EQ(s.doc_length(1), 3u);
    EXPECT_EQ(train->documents(), 3u);
    auto val = data::ShardSet::open((dir.path() / "*val*.bin").string());
    EXPECT_EQ(val->documents(), 2u);
    EXPECT_EQ(data::ShardSet::open((dir.path() / "fineweb_train_000002.bin").string())->tokens(), 3u);
}

TEST(DataShards, TokenOutsideVocabularyNamesOffset) {
    test::TempDir dir;
    const std::string path = (dir.path() / "s.bin").string();
    test::write_shard(path, {1, 5, 6, 1, 7, 400, 8});
    data::ShardSetOptions o;
    o.vocab_size = 400;
    o.bos_id = 1;
    EXPECT_CONTAINS(data_error([&] { data::ShardSet::open(path, o); }),
                    "s.bin: byte offset 1,034: token id 400 (token 5) is not below the vocabulary size 400");
    o.vocab_size = 401;
    EXPECT_EQ(data::ShardSet::open(path, o)->documents(), 2u);
}

TEST(DataTokenize, WritesShardsAndManifest) {
    Corpus c;
    test::TempDir out;
    const std::string dir = (out.path() / "shards").string();
    data::TokenizeOptions o;
    o.shard_tokens = 2000;
    o.val_fraction = 0.2;
    auto r = tokenize(c, dir, o);
    const auto& m = r.manifest;
    EXPECT_EQ(m.documents(""), 36);
    EXPECT_GT(m.documents("val"), 0);
    EXPECT_GT(m.documents("train"), 0);
    EXPECT_EQ(m.vocab_size, 400);
    EXPECT_EQ(m.shard_version, 1);
    EXPECT_EQ(m.tokenizer_sha256, test::small_tokenizer().sha256());
    EXPECT_GT(m.files.size(), 2u) << "2,000 tokens per shard makes several";

    // The manifest on disk says the same, and every file is what it says.
    auto disk = data::Manifest::read((fs::path(dir) / "manifest.json").string());
    EXPECT_EQ(disk.to_json(), m.to_json());
    std::vector<std::string> train_docs;
    for (const auto& f : m.files) {
        const std::string path = (fs::path(dir) / f.file).string();
        EXPECT_EQ(data::sha256_file(path), f.sha256) << f.file;
        auto shard = data::ShardFile::open(path);
        EXPECT_EQ(static_cast<int64_t>(shard->num_tokens()), f.tokens);
        EXPECT_LE(f.tokens, 2000) << "no document here is longer than a shard";
        EXPECT_EQ(shard->token(0), 1u) << "a shard starts with BOS";
    }
    // Decoding the documents gives back the texts, BOS-prefixed; each goes to the split its hash says.
    data::ShardSetOptions so;
    so.tokenizer_sha256 = test::small_tokenizer().sha256();
    so.verify_sha256 = true;
    size_t seen = 0;
    for (const char* split : {"train", "val"}) {
        so.split = split;
        auto set = data::ShardSet::open(dir, so);
        for (const auto& s : set->shards())
            for (uint64_t d = 0; d < s.documents(); ++d) {
                std::vector<int32_t> ids(s.doc_length(d));
                for (uint64_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(s.file->token(s.doc_begin(d) + i));
                ASSERT_EQ(ids[0], test::small_tokenizer().bos_id());
                const std::string text = test::small_tokenizer().decode(std::span(ids).subspan(1));
                EXPECT_EQ(data::is_validation_document(text, 0.2), std::string(split) == "val");
                EXPECT_NE(std::find(c.texts.begin(), c.texts.end(), text), c.texts.end());
                ++seen;
            }
    }
    EXPECT_EQ(seen, c.texts.size());
    // Documents stay in input order within a split.
    so.split = "train";
    auto train = data::ShardSet::open(dir, so);
    std::vector<std::string> expected;
    for (const auto& t : c.texts)
        if (!data::is_validation_document(t, 0.2)) expected.push_back(t);
    std::vector<int32_t> first(train->shards()[0].doc_length(0));
    for (size_t i = 0; i < first.size(); ++i) first[i] = static_cast<int32_t>(train->shards()[0].file->token(i));
    EXPECT_EQ(test::small_tokenizer().decode(std::span(first).subspan(1)), expected.front());
}

TEST(DataTokenize, ValidationSplitIsPinned) {
    // The same documents land in validation whatever the shard size and input order.
    Corpus c;
    test::TempDir out;
    data::TokenizeOptions small, big;
    small.shard_tokens = 500;
    big.shard_tokens = 1'000'000;
    auto a = tokenize(c, (out.path() / "a").string(), small);
    auto b = data::tokenize_corpus(test::small_tokenizer(), "small.model", {c.path("more.jsonl"), c.path("txt")},
                                   (out.path() / "b").string(), big);
    EXPECT_EQ(a.manifest.documents("val"), b.manifest.documents("val"));
    EXPECT_EQ(a.manifest.tokens("val"), b.manifest.tokens("val"));
    EXPECT_EQ(a.manifest.tokens("train"), b.manifest.tokens("train"));
    EXPECT_GT(a.manifest.files.size(), b.manifest.files.size());
    // The rule itself: about the requested share, decided by the text alone.
    int val = 0;
    for (int i = 0; i < 20000; ++i) val += data::is_validation_document("document " + std::to_string(i), 0.05);
    EXPECT_NEAR(val / 20000.0, 0.05, 0.006);
    EXPECT_FALSE(data::is_validation_document("anything", 0.0));
}

TEST(DataTokenize, SplitDocumentCutsAtParagraphsThenLinesThenSpacesThenCharacters) {
    using V = std::vector<std::string_view>;
    EXPECT_EQ(data::split_document("short", 64), V{"short"});
    // The last blank line in the second half of the window wins over later line breaks and spaces.
    const std::string para = std::string(40, 'a') + "\n\n" + std::string(10, 'b') + "\nc d" + std::string(30, 'e');
    EXPECT_EQ(data::split_document(para, 64), (V{para.substr(0, 42), para.substr(42)}));
    // A blank line in the first half is too early: the last line break is taken instead.
    const std::string early = "aa\n\n" + std::string(40, 'b') + "\n" + std::string(40, 'c');
    EXPECT_EQ(data::split_document(early, 64)[0], early.substr(0, 45));
    // No break at all: the cut goes back to a character's first byte (4-byte emoji, 3-byte CJK).
    std::string runs;
    for (int i = 0; i < 40; ++i) runs += i % 2 ? "\xF0\x9F\x99\x82" : "\xE4\xBD\xA0";
    for (int64_t max : {64, 65, 66, 67, 100}) {
        const auto pieces = data::split_document(runs, max);
        std::string joined;
        for (auto p : pieces) {
            EXPECT_LE(static_cast<int64_t>(p.size()), max);
            EXPECT_NE(static_cast<unsigned char>(p[0]) & 0xC0, 0x80) << "a piece starts inside a character";
            joined += p;
        }
        EXPECT_EQ(joined, runs);
        EXPECT_GT(pieces.size(), 1u);
    }
    // Real text: pieces rejoin to the document and none is over the limit.
    const std::string text = test::sample_text(7, 5000);
    std::string joined;
    for (auto p : data::split_document(text, 300)) {
        EXPECT_LE(p.size(), 300u);
        joined += p;
    }
    EXPECT_EQ(joined, text);
}

TEST(DataTokenize, MaxDocBytesCutsDocumentsAndKeepsEachInOneSplit) {
    Corpus c;
    test::TempDir out;
    const std::string dir = (out.path() / "shards").string();
    data::TokenizeOptions o;
    o.val_fraction = 0.3;
    o.max_doc_bytes = 200;
    auto r = tokenize(c, dir, o);
    int64_t pieces = 0, cut = 0;
    std::vector<std::string> train_expected, val_expected;
    for (const auto& t : c.texts) {
        const auto p = data::split_document(t, 200);
        pieces += static_cast<int64_t>(p.size());
        cut += p.size() > 1;
        for (auto piece : p) (data::is_validation_document(t, 0.3) ? val_expected : train_expected).emplace_back(piece);
    }
    EXPECT_EQ(r.manifest.documents(""), pieces);
    EXPECT_EQ(r.manifest.documents_cut, cut);
    EXPECT_GT(cut, 10);
    auto disk = data::Manifest::read((fs::path(dir) / "manifest.json").string());
    EXPECT_EQ(disk.max_doc_bytes, 200);
    EXPECT_EQ(disk.documents_cut, cut);
    // Every piece decodes to its text, in order, in the split its whole document's hash picks.
    data::ShardSetOptions so;
    so.tokenizer_sha256 = test::small_tokenizer().sha256();
    for (const char* split : {"train", "val"}) {
        so.split = split;
        auto set = data::ShardSet::open(dir, so);
        std::vector<std::string> got;
        for (const auto& s : set->shards())
            for (uint64_t d = 0; d < s.documents(); ++d) {
                std::vector<int32_t> ids(s.doc_length(d));
                for (uint64_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(s.file->token(s.doc_begin(d) + i));
                got.push_back(test::small_tokenizer().decode(std::span(ids).subspan(1)));
            }
        EXPECT_EQ(got, std::string(split) == "val" ? val_expected : train_expected) << split;
    }
    o.max_doc_bytes = 10;
    o.overwrite = true;
    EXPECT_CONTAINS(data_error([&] { tokenize(c, dir, o); }), "--max-doc-bytes: must be 0 (documents stay whole) or at least 64");
}

TEST(DataShards, VersionFollowsVocabularyAndUint32NeedsAManifestOrTokenizer) {
    EXPECT_EQ(data::shard_version_for_vocab(65536), 1);
    EXPECT_EQ(data::shard_version_for_vocab(65537), 2);
    test::TempDir dir;
    const std::string path = (dir.path() / "big.bin").string();
    test::write_shard(path, {7, 100000, 7, 70000, 5}, 2);
    EXPECT_CONTAINS(data_error([&] { data::ShardSet::open(path); }), "big.bin: no manifest.json beside the shard");
    data::ShardSetOptions o;
    o.vocab_size = 100001;
    o.bos_id = 7;
    auto set = data::ShardSet::open(path, o);
    EXPECT_EQ(set->documents(), 2u);
    EXPECT_EQ(set->shards()[0].max_token, 100000u);
}

TEST(DataTokenize, OutputIsReplacedOnlyWhenAskedAndNeverHalfWritten) {
    Corpus c;
    test::TempDir out;
    const std::string dir = (out.path() / "shards").string();
    tokenize(c, dir);
    const std::string before = test::read_bytes((fs::path(dir) / "manifest.json").string());
    EXPECT_CONTAINS(data_error([&] { tokenize(c, dir); }), "exists and is not empty; pass --overwrite");
    // A failing run (a bad input after good ones) leaves the old output as it was, and no temporary files.
    c.dir.write("zz_bad.jsonl", "{\"text\": \"fine\"}\n{\"text\": 5}\n");
    EXPECT_CONTAINS(data_error([&] {
                        data::TokenizeOptions o;
                        o.overwrite = true;
                        data::tokenize_corpus(test::small_tokenizer(), "t", {c.path("")}, dir, o);
                    }),
                    "zz_bad.jsonl:2: \"text\" must be a string, not number");
    EXPECT_EQ(test::read_bytes((fs::path(dir) / "manifest.json").string()), before);
    std::vector<std::string> entries;
    for (const auto& e : fs::directory_iterator(out.path())) entries.push_back(e.path().filename().string());
    EXPECT_EQ(entries, std::vector<std::string>{"shards"});
    // With --overwrite a good run replaces it.
    fs::remove(c.path("zz_bad.jsonl"));
    data::TokenizeOptions o;
    o.overwrite = true;
    o.val_fraction = 0.5;
    auto r = tokenize(c, dir, o);
    EXPECT_EQ(data::Manifest::read((fs::path(dir) / "manifest.json").string()).val_fraction, 0.5);
    entries.clear();
    for (const auto& e : fs::directory_iterator(out.path())) entries.push_back(e.path().filename().string());
    EXPECT_EQ(entries, std::vector<std::string>{"shards"});
}

TEST(DataInputs, ExpansionAndReading) {
    test::TempDir dir;
    dir.write("b/2.txt", "two");
    dir.write("b/1.txt", "one");
    dir.write("b/skip.md", "not an input inside a directory");
    dir.write("b/empty.txt", "");
    dir.write("c.jsonl", "{\"text\": \"three\"}\n\n{\"text\": \"\"}\n{\"text\": \"f\\u00f6ur\", \"meta\": 1}\n");
    auto files = data::expand_inputs({(dir.path() / "b").string(), (dir.path() / "*.jsonl").string(),
                                      (dir.path() / "b" / "1.txt").string()});
    ASSERT_EQ(files.size(), 4u) << "the same file twice is read once";
    data::DocumentReader reader(files);
    data::Document d;
    std::vector<std::string> texts;
    while (reader.next(d)) texts.push_back(d.text);
    EXPECT_EQ(texts, (std::vector<std::string>{"one", "two", "three", "f\xC3\xB6ur"}));
    EXPECT_EQ(reader.empty_skipped(), 2);
}

TEST(DataInputs, BadInputsNameTheFile) {
    test::TempDir dir;
    EXPECT_CONTAINS(data_error([&] { data::expand_inputs({(dir.path() / "nope.txt").string()}); }),
                    "nope.txt: no such file or directory");
    EXPECT_CONTAINS(data_error([&] { data::expand_inputs({(dir.path() / "*.txt").string()}); }), "no file matches");
    const std::string md = dir.write("a.md", "x");
    EXPECT_CONTAINS(data_error([&] { data::expand_inputs({md}); }), "a.md: not an input");
    fs::create_directories(dir.path() / "emptydir");
    EXPECT_CONTAINS(data_error([&] { data::expand_inputs({(dir.path() / "emptydir").string()}); }), "no .txt, .jsonl or .parquet");

    auto read_all = [](const std::string& path) {
        data::DocumentReader r(data::expand_inputs({path}));
        data::Document d;
        while (r.next(d)) {
        }
    };
    const std::string bad_utf8 = dir.write("bad.txt", "good text\n\xC3\x28 bad");
    EXPECT_CONTAINS(data_error([&] { read_all(bad_utf8); }), "bad.txt: byte offset 10: not valid UTF-8");
    const std::string bad_json = dir.write("bad.jsonl", "{\"text\": \"a\"}\n{\"text\": \"b\"\n");
    EXPECT_CONTAINS(data_error([&] { read_all(bad_json); }), "bad.jsonl:2: not a JSON line");
    const std::string no_text = dir.write("notext.jsonl", "{\"body\": \"a\"}\n");
    EXPECT_CONTAINS(data_error([&] { read_all(no_text); }), "notext.jsonl:1: expected a JSON object with a \"text\" field");
    const std::string bad_utf8_json = dir.write("badutf.jsonl", "{\"text\": \"\xFF\"}\n");
    EXPECT_CONTAINS(data_error([&] { read_all(bad_utf8_json); }), "badutf.jsonl:1: not a JSON line");

    // An empty corpus: nothing is written.
    const std::string empty = dir.write("empty.txt", "");
    test::TempDir out;
    EXPECT_CONTAINS(data_error([&] {
                        data::tokenize_corpus(test::small_tokenizer(), "t", {empty}, (out.path() / "o").string(), {});
                    }),
                    "no documents in the inputs (1 empty ones skipped)");
    EXPECT_TRUE(fs::is_empty(out.path()));
}

TEST(DataManifest, MismatchesAreErrors) {
    Corpus c;
    test::TempDir out;
    const std::string dir = (out.path() / "shards").string();
    tokenize(c, dir, {});
    const std::string manifest = (fs::path(dir) / "manifest.json").string();

    // Another tokenizer than the one that made the shards.
    data::ShardSetOptions other;
    other.tokenizer_sha256 = std::string(64, 'a');
    other.tokenizer_name = "other.model";
    const std::string e = data_error([&] { data::ShardSet::open(dir, other); });
    EXPECT_CONTAINS(e, manifest + ": these shards were made with the tokenizer small.model");
    EXPECT_CONTAINS(e, "not with other.model");
    data::ShardSetOptions vocab;
    vocab.vocab_size = 512;
    EXPECT_CONTAINS(data_error([&] { data::ShardSet::open(dir, vocab); }), "vocabulary has 400 tokens, not 512");

    // A shard changed after the manifest was written.
    const std::string shard = (fs::path(dir) / "train_000000.bin").string();
    std::string bytes = test::read_bytes(shard);
    bytes[1030] = bytes[1030] == 2 ? 3 : 2;  // token 3 of the first document, never a BOS
    bytes[1031] = 0;
    test::write_bytes(shard, bytes);
    data::ShardSetOptions verify;
    verify.verify_sha256 = true;
    EXPECT_CONTAINS(data_error([&] { data::ShardSet::open(dir, verify); }), "train_000000.bin: sha256 differs");
    // A truncated shard: its size no longer matches its header.
    test::write_bytes(shard, bytes.substr(0, bytes.size() - 3));
    EXPECT_CONTAINS(data_error([&] { data::ShardSet::open(dir); }), "train_000000.bin: byte offset");
    // A file the manifest does not know.
    test::write_shard((fs::path(dir) / "train_000099.bin").string(), {1, 2, 3});
    EXPECT_CONTAINS(data_error([&] { data::ShardSet::open((fs::path(dir) / "train_000099.bin").string()); }),
                    "train_000099.bin: not listed in");
    // A manifest that is not one.
    test::write_bytes(manifest, "{\"format\": \"l3lab token shards\", \"version\": 1}");
    EXPECT_CONTAINS(data_error([&] { data::ShardSet::open(dir); }), "manifest.json: tokenizer: missing");
    test::write_bytes(manifest, "{not json");
    EXPECT_CONTAINS(data_error([&] { data::ShardSet::open(dir); }), "manifest.json: not valid JSON");
}

TEST(DataManifest, JsonRoundTrip) {
    data::Manifest m;
    m.created_by = "l3lab test";
    m.tokenizer_file = "tok.model";
    m.tokenizer_sha256 = std::string(64, 'f');
    m.vocab_size = 32768;
    m.bos_id = 1;
    m.shard_version = 1;
    m.shard_tokens = 100;
    m.val_fraction = 0.05;
    m.inputs = {"a.jsonl"};
    m.files = {{"train_000000.bin", "train", 90, 3, std::string(64, '1'), "", {}}, {"val_000000.bin", "val", 10, 1, std::string(64, '2'), "", {}}};
    auto back = data::Manifest::parse(m.to_json(), "m.json");
    EXPECT_EQ(back.to_json(), m.to_json());
    EXPECT_EQ(back.tokens("train"), 90);
    EXPECT_EQ(back.documents(""), 4);
    auto j = nlohmann::json::parse(m.to_json());
    EXPECT_EQ(j["splits"]["val"]["files"], 1);
    EXPECT_EQ(j["dtype"], "uint16");
}
