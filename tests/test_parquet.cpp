// nanochat's parquet data: read through Arrow's C++ Parquet reader, split as nanochat splits it, row
// groups recorded, and the batches of nanochat's own loader on the same files and tokenizer
// (tools/reference/make_parquet_loader_fixtures.py), at W = 1 and for each rank at W = 2, train and val,
// straight and after a save/restore of the loader's state. Bad parquet input exits 2 naming the file.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "runner/data/corpus.h"
#include "runner/data/errors.h"
#include "runner/data/loader.h"
#include "runner/data/manifest.h"
#include "runner/data/shard_set.h"
#include "runner/data/tokenizer.h"
#include "test_util.h"

using namespace l3lab;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

const fs::path kFixtures = test::kSourceDir / "tests" / "fixtures";
const fs::path kBaseData = kFixtures / "parquet" / "base_data";
const fs::path kTokenizer = kFixtures / "bpe" / "full";

#define EXPECT_CONTAINS(haystack, needle) EXPECT_NE((haystack).find(needle), std::string::npos) << (haystack)

std::string tokenize_fixture(const test::TempDir& dir) {
    const std::string out = (dir.path() / "shards").string();
    auto r = test::run_cli({"data", "tokenize", "--tokenizer", kTokenizer.string(), "--input", kBaseData.string(), "--split",
                            "nanochat", "--output", out});
    EXPECT_EQ(r.code, 0) << r.err;
    return out;
}

#ifdef L3LAB_PYTHON
// Runs a Python snippet with the venv's python (pyarrow is there); argv[1] is `dir`.
void python(const std::string& code, const fs::path& dir) {
    const fs::path script = dir / "make.py";
    std::ofstream(script) << "import sys, pyarrow as pa, pyarrow.parquet as pq\nd = sys.argv[1]\n" << code;
    const std::string cmd = std::string(L3LAB_PYTHON) + " " + script.string() + " " + dir.string() + " 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << code;
}
#endif

}  // namespace

TEST(Parquet, TokenizeRecordsTheRowGroupsAndNanochatsSplit) {
    L3LAB_REQUIRE_PARQUET();
    test::TempDir dir;
    const std::string shards = tokenize_fixture(dir);
    const auto m = data::Manifest::read(shards + "/manifest.json");
    EXPECT_EQ(m.split, "nanochat");
    ASSERT_EQ(m.files.size(), 3u);  // one shard per parquet file; the last file is validation
    EXPECT_EQ(m.files[0].split, "train");
    EXPECT_EQ(m.files[0].row_groups, (std::vector<int64_t>{9, 9, 9, 9, 5}));  // 41 rows, one of them empty
    EXPECT_EQ(m.files[0].documents, 41);
    EXPECT_EQ(m.files[1].row_groups, (std::vector<int64_t>{5, 5, 5, 5, 5, 1}));
    EXPECT_EQ(m.files[2].split, "val");
    EXPECT_EQ(m.files[2].row_groups, (std::vector<int64_t>{4, 4, 4, 4, 3}));
    EXPECT_NE(m.files[2].source.find("shard_00002.parquet"), std::string::npos);

    // The hash split keeps each file's row groups, with the documents of each split in them.
    auto r = test::run_cli({"data", "tokenize", "--tokenizer", kTokenizer.string(), "--input", kBaseData.string(),
                            "--val-fraction", "0.3", "--output", (dir.path() / "hashed").string()});
    ASSERT_EQ(r.code, 0) << r.err;
    const auto h = data::Manifest::read((dir.path() / "hashed" / "manifest.json").string());
    EXPECT_EQ(h.split, "hash");
    ASSERT_EQ(h.files.size(), 6u);
    int64_t docs = 0;
    for (const auto& f : h.files) {
        EXPECT_FALSE(f.row_groups.empty());
        docs += f.documents;
    }
    EXPECT_EQ(docs, 41 + 26 + 19);
}

TEST(Parquet, AManifestWithoutSplitOrRowGroupsStillLoads) {
    L3LAB_REQUIRE_PARQUET();
    test::TempDir dir;
    const std::string shards = tokenize_fixture(dir);
    json j = json::parse(test::slurp(fs::path(shards) / "manifest.json"));
    ASSERT_EQ(j["split"], "nanochat");
    j.erase("split");  // as written before parquet input
    for (json& f : j["files"]) f.erase("source"), f.erase("row_groups");
    const auto m = data::Manifest::parse(j.dump(), "old/manifest.json");
    EXPECT_EQ(m.split, "hash");
    ASSERT_EQ(m.files.size(), 3u);
    EXPECT_TRUE(m.files[0].source.empty());
    EXPECT_TRUE(m.files[0].row_groups.empty());
}

TEST(Parquet, BatchesAreThoseOfNanochatsLoaderForEveryRankAndAfterARestore) {
    L3LAB_REQUIRE_PARQUET();
    test::TempDir dir;
    const std::string shards = tokenize_fixture(dir);
    const json fixture = json::parse(test::slurp(kFixtures / "parquet" / "batches.json"));
    auto tokenizer = data::load_tokenizer(kTokenizer.string());
    for (const json& c : fixture["cases"]) {
        const std::string name = c["split"].get<std::string>() + " B=" + c["B"].dump() + " T=" + c["T"].dump() + " buffer " +
                                 c["buffer_size"].dump() + " rank " + c["rank"].dump() + "/" + c["world_size"].dump();
        SCOPED_TRACE(name);
        data::ShardSetOptions so;
        so.split = c["split"];
        so.tokenizer_sha256 = tokenizer->sha256();
        auto set = data::ShardSet::open(shards, so);
        data::LoaderOptions o;
        o.batch_size = c["B"];
        o.sequence_len = c["T"];
        o.buffer_size = c["buffer_size"];
        o.rank = c["rank"];
        o.world_size = c["world_size"];
        data::BestFitLoader straight(set, o), resumed(set, o);
        const size_t n = c["batches"].size(), half = n / 2;
        for (size_t i = 0; i < half; ++i) resumed.next();
        data::BestFitLoader restored(set, o);
        restored.restore(data::LoaderState::from_json(resumed.state().to_json(), "state"));
        const size_t T = c["T"];
        for (size_t i = 0; i < n; ++i) {
            const json& want = c["batches"][i];
            for (auto* loader : {&straight, &restored}) {
                if (loader == &restored && i < half) continue;
                const data::Batch b = loader->next();
                for (size_t r = 0; r < static_cast<size_t>(b.batch_size); ++r) {
                    std::vector<int64_t> row(b.inputs.begin() + static_cast<std::ptrdiff_t>(r * T),
                                             b.inputs.begin() + static_cast<std::ptrdiff_t>((r + 1) * T));
                    row.push_back(b.targets[(r + 1) * T - 1]);
                    ASSERT_EQ(row, want["rows"][r].get<std::vector<int64_t>>())
                        << "batch " << i << " row " << r << (loader == &restored ? " (after the restore)" : "");
                }
                EXPECT_EQ(b.epoch, want["epoch"].get<int64_t>()) << "batch " << i;
            }
        }
    }
}

TEST(Parquet, TrainTokenizerReadsParquet) {
    L3LAB_REQUIRE_PARQUET();
    test::TempDir dir;
    auto r = test::run_cli({"data", "train-tokenizer", "--input", (kBaseData / "*.parquet").string(), "--vocab-size", "300",
                            "--output", (dir.path() / "tok").string()});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_CONTAINS(r.out, "read 86 documents");
}

#ifdef L3LAB_PYTHON
TEST(Parquet, BadParquetExitsTwoNamingTheFileAndWritesNothing) {
    L3LAB_REQUIRE_PARQUET();
    test::TempDir dir;
    python(
        "pq.write_table(pa.table({'text': ['a', 'b', None, 'd']}), d + '/null.parquet', row_group_size=2)\n"
        "pq.write_table(pa.table({'body': ['a'], 'id': [1]}), d + '/nocolumn.parquet')\n"
        "pq.write_table(pa.table({'text': [1, 2]}), d + '/ints.parquet')\n"
        "bad = pa.array([b'ok', b'\\xc3\\x28'], pa.binary()).view(pa.string())\n"
        "pq.write_table(pa.table({'text': bad}), d + '/utf8.parquet')\n"
        "pq.write_table(pa.table({'content': ['x y z', 'w']}), d + '/other.parquet')\n"
        "pq.write_table(pa.table({'content': ['p q']}), d + '/other2.parquet')\n"
        "b = open(d + '/other.parquet', 'rb').read()\n"
        "open(d + '/truncated.parquet', 'wb').write(b[: len(b) // 2])\n",
        dir.path());
    const std::string out = (dir.path() / "out").string();
    auto expect_exit2 = [&](std::vector<std::string> inputs, const std::string& part, std::vector<std::string> extra = {}) {
        std::vector<std::string> args = {"data", "tokenize", "--tokenizer", kTokenizer.string(), "--output", out, "--input"};
        for (auto& i : inputs) args.push_back((dir.path() / i).string());
        args.insert(args.end(), extra.begin(), extra.end());
        auto r = test::run_cli(args);
        EXPECT_EQ(r.code, 2) << r.out << r.err;
        EXPECT_CONTAINS(r.err, part);
        EXPECT_FALSE(fs::exists(out));
    };
    expect_exit2({"null.parquet"}, "null.parquet: row group 1, row 0: the text is null");
    expect_exit2({"nocolumn.parquet"}, "nocolumn.parquet: no column 'text' (the file has: body, id); choose one with --text-column");
    expect_exit2({"ints.parquet"}, "ints.parquet: column 'text' holds int64, not strings");
    expect_exit2({"utf8.parquet"}, "utf8.parquet: row group 0, row 1: byte offset 0 of the text: not valid UTF-8");
    expect_exit2({"truncated.parquet"}, "truncated.parquet: not a parquet file (or a damaged one)");
    expect_exit2({"other.parquet"}, "--split: nanochat takes the last of two or more parquet files as validation; the inputs are 1 parquet file",
                 {"--split", "nanochat", "--text-column", "content"});
    dir.write("doc.txt", "text");
    expect_exit2({"other.parquet", "doc.txt"}, "parquet files cannot be mixed with .txt/.jsonl inputs", {"--text-column", "content"});
    auto r = test::run_cli({"data", "tokenize", "--tokenizer", kTokenizer.string(), "--output", out, "--input",
                            (dir.path() / "other.parquet").string(), (dir.path() / "other2.parquet").string(), "--text-column",
                            "content", "--split", "nanochat"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_CONTAINS(r.out, "train            2 documents");
    EXPECT_CONTAINS(r.out, "val              1 documents");
}

TEST(Parquet, ReaderGivesEveryRowWithItsRowGroupForEachStringType) {
    L3LAB_REQUIRE_PARQUET();
    test::TempDir dir;
    // The same texts (unicode, an empty one) as string, large_string and dictionary-encoded string, in
    // row groups of 2, under a column that is not `text`.
    python(
        "texts = ['héllo wörld', '', '日本語のテキスト 🚀', 'x', 'last']\n"
        "for name, typ in [('a', pa.string()), ('b', pa.large_string()), ('c', pa.dictionary(pa.int32(), pa.string()))]:\n"
        "    col = pa.array(texts, pa.string()).cast(typ)\n"
        "    pq.write_table(pa.table({'id': list(range(5)), 'body': col}), d + '/' + name + '.parquet', row_group_size=2)\n",
        dir.path());
    const std::vector<std::string> want = {"h\xc3\xa9llo w\xc3\xb6rld", "", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae"
                                           "\xe3\x83\x86\xe3\x82\xad\xe3\x82\xb9\xe3\x83\x88 \xf0\x9f\x9a\x80", "x", "last"};
    const auto files = data::expand_inputs({dir.path().string()});  // a directory: its *.parquet, sorted
    ASSERT_EQ(files.size(), 3u);
    data::DocumentReader reader(files, "body");
    data::Document doc;
    for (size_t f = 0; f < files.size(); ++f) {
        SCOPED_TRACE(files[f].path);
        EXPECT_EQ(files[f].kind, data::InputKind::Parquet);
        for (size_t i = 0; i < want.size(); ++i) {
            ASSERT_TRUE(reader.next(doc)) << i;
            EXPECT_EQ(doc.text, want[i]);
            EXPECT_EQ(doc.file, files[f].path);
            EXPECT_EQ(doc.file_index, f);
            EXPECT_EQ(doc.row_group, static_cast<int64_t>(i / 2));
            EXPECT_EQ(doc.row, static_cast<int64_t>(i % 2));
            EXPECT_EQ(doc.row_groups_in_file, 3);
            EXPECT_EQ(doc.line, 0);
        }
    }
    EXPECT_FALSE(reader.next(doc));
    EXPECT_EQ(reader.empty_skipped(), 0);  // an empty parquet text is a document (nanochat: a lone BOS)

    data::DocumentReader wrong(files, "text");
    try {
        wrong.next(doc);
        ADD_FAILURE() << "no error for a missing column";
    } catch (const data::DataError& e) {
        EXPECT_CONTAINS(std::string(e.what()), "a.parquet: no column 'text' (the file has: id, body)");
    }

    // train-tokenizer takes --text-column too, and fails like tokenize without it.
    auto r = test::run_cli({"data", "train-tokenizer", "--input", dir.path().string(), "--text-column", "body",
                            "--vocab-size", "300", "--output", (dir.path() / "tok").string()});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_CONTAINS(r.out, "from 3 input files");
    r = test::run_cli({"data", "train-tokenizer", "--input", dir.path().string(), "--vocab-size", "300", "--output",
                       (dir.path() / "tok2").string()});
    EXPECT_EQ(r.code, 2) << r.out << r.err;
    EXPECT_CONTAINS(r.err, "a.parquet: no column 'text' (the file has: id, body); choose one with --text-column");
    EXPECT_FALSE(fs::exists(dir.path() / "tok2"));
}
#endif
