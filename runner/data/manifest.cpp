#include "runner/data/manifest.h"

#include <filesystem>
#include <fstream>
#include <limits>
#include <type_traits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "runner/data/errors.h"

namespace l3lab::data {

using nlohmann::ordered_json;

const ManifestFile* Manifest::find(const std::string& name) const {
    for (const auto& f : files)
        if (f.file == name) return &f;
    return nullptr;
}

int64_t Manifest::tokens(const std::string& split) const {
    int64_t n = 0;
    for (const auto& f : files)
        if (split.empty() || f.split == split) n += f.tokens;
    return n;
}

int64_t Manifest::documents(const std::string& split) const {
    int64_t n = 0;
    for (const auto& f : files)
        if (split.empty() || f.split == split) n += f.documents;
    return n;
}

std::string Manifest::to_json() const {
    ordered_json j;
    j["format"] = "l3lab token shards";
    j["version"] = version;
    j["created_by"] = created_by;
    j["tokenizer"] = {{"file", tokenizer_file}, {"sha256", tokenizer_sha256}, {"vocab_size", vocab_size}, {"bos_id", bos_id}};
    j["shard_version"] = shard_version;
    j["dtype"] = shard_version == 1 ? "uint16" : "uint32";
    j["shard_tokens"] = shard_tokens;
    j["val_fraction"] = val_fraction;
    j["split"] = split;
    j["inputs"] = inputs;
    j["empty_documents_skipped"] = empty_documents_skipped;
    if (max_doc_bytes > 0) {
        j["max_doc_bytes"] = max_doc_bytes;
        j["documents_cut"] = documents_cut;
    }
    ordered_json splits = ordered_json::object();
    for (const char* split : {"train", "val"}) {
        int64_t n_files = 0;
        for (const auto& f : files) n_files += f.split == split;
        splits[split] = {{"files", n_files}, {"documents", documents(split)}, {"tokens", tokens(split)}};
    }
    j["splits"] = splits;
    ordered_json list = ordered_json::array();
    for (const auto& f : files) {
        ordered_json e = {{"file", f.file}, {"split", f.split}, {"tokens", f.tokens}, {"documents", f.documents}, {"sha256", f.sha256}};
        if (!f.source.empty()) {
            e["source"] = f.source;
            e["row_groups"] = f.row_groups;
        }
        list.push_back(e);
    }
    j["files"] = list;
    return j.dump(2) + "\n";
}

namespace {

template <class T>
T get(const ordered_json& j, const char* key, const std::string& where, const std::string& path) {
    if (!j.contains(key)) throw DataError(path, where + key + ": missing");
    const auto& v = j.at(key);
    if constexpr (std::is_integral_v<T>) {
        // nlohmann would convert 1.5 or 1e300 to an integer (the latter undefined behaviour): refuse both.
        if (!v.is_number_integer())
            throw DataError(path, where + key + ": expected an integer, got " + std::string(v.type_name()));
        const bool fits = v.is_number_unsigned() ? v.template get<uint64_t>() <= uint64_t(std::numeric_limits<T>::max())
                                                 : v.template get<int64_t>() >= int64_t(std::numeric_limits<T>::min()) &&
                                                       v.template get<int64_t>() <= int64_t(std::numeric_limits<T>::max());
        if (!fits) throw DataError(path, where + key + ": " + v.dump() + " is out of range");
        return v.template get<T>();
    }
    try {
        return v.template get<T>();
    } catch (const nlohmann::json::exception&) {
        throw DataError(path, where + key + ": wrong type (" + std::string(v.type_name()) + ")");
    }
}

}  // namespace

Manifest Manifest::parse(const std::string& text, const std::string& path) {
    ordered_json j;
    try {
        j = ordered_json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
        throw DataError(path, std::string("not valid JSON: ") + e.what());
    }
    if (!j.is_object()) throw DataError(path, "expected a JSON object");
    Manifest m;
    if (get<std::string>(j, "format", "", path) != "l3lab token shards")
        throw DataError(path, "format: expected \"l3lab token shards\"");
    m.version = get<int>(j, "version", "", path);
    if (m.version != 1) throw DataError(path, "version: " + std::to_string(m.version) + " is newer than this l3lab reads (1)");
    if (j.contains("created_by")) m.created_by = get<std::string>(j, "created_by", "", path);
    if (!j.contains("tokenizer") || !j["tokenizer"].is_object()) throw DataError(path, "tokenizer: missing");
    const auto& t = j["tokenizer"];
    m.tokenizer_file = get<std::string>(t, "file", "tokenizer.", path);
    m.tokenizer_sha256 = get<std::string>(t, "sha256", "tokenizer.", path);
    m.vocab_size = get<int64_t>(t, "vocab_size", "tokenizer.", path);
    m.bos_id = get<int64_t>(t, "bos_id", "tokenizer.", path);
    if (m.vocab_size < 1 || m.bos_id < 0 || m.bos_id >= m.vocab_size)
        throw DataError(path, "tokenizer: bos_id " + std::to_string(m.bos_id) + " is not below vocab_size " + std::to_string(m.vocab_size));
    m.shard_version = get<int>(j, "shard_version", "", path);
    if (m.shard_version != 1 && m.shard_version != 2) throw DataError(path, "shard_version: must be 1 or 2");
    m.shard_tokens = get<int64_t>(j, "shard_tokens", "", path);
    m.val_fraction = get<double>(j, "val_fraction", "", path);
    if (j.contains("split")) m.split = get<std::string>(j, "split", "", path);
    if (m.split != "hash" && m.split != "nanochat")
        throw DataError(path, "split: must be \"hash\" or \"nanochat\", got \"" + m.split + "\"");
    if (j.contains("inputs")) m.inputs = get<std::vector<std::string>>(j, "inputs", "", path);
    if (j.contains("empty_documents_skipped")) m.empty_documents_skipped = get<int64_t>(j, "empty_documents_skipped", "", path);
    if (j.contains("max_doc_bytes")) m.max_doc_bytes = get<int64_t>(j, "max_doc_bytes", "", path);
    if (j.contains("documents_cut")) m.documents_cut = get<int64_t>(j, "documents_cut", "", path);
    if (!j.contains("files") || !j["files"].is_array()) throw DataError(path, "files: missing or not a list");
    for (size_t i = 0; i < j["files"].size(); ++i) {
        const auto& f = j["files"][i];
        const std::string where = "files[" + std::to_string(i) + "].";
        if (!f.is_object()) throw DataError(path, where.substr(0, where.size() - 1) + ": expected an object");
        ManifestFile mf{get<std::string>(f, "file", where, path), get<std::string>(f, "split", where, path),
                        get<int64_t>(f, "tokens", where, path), get<int64_t>(f, "documents", where, path),
                        get<std::string>(f, "sha256", where, path)};
        if (mf.file.empty() || mf.file.find('/') != std::string::npos)
            throw DataError(path, where + "file: must be a plain file name, got \"" + mf.file + "\"");
        if (mf.split != "train" && mf.split != "val")
            throw DataError(path, where + "split: must be \"train\" or \"val\", got \"" + mf.split + "\"");
        if (f.contains("row_groups")) {
            mf.source = get<std::string>(f, "source", where, path);
            if (!f["row_groups"].is_array()) throw DataError(path, where + "row_groups: expected a list of document counts");
            int64_t sum = 0;
            for (const auto& g : f["row_groups"]) {
                if (!g.is_number_integer() || g.get<int64_t>() < 0 || g.get<int64_t>() > mf.documents)
                    throw DataError(path, where + "row_groups: " + g.dump() + " is not a document count");
                mf.row_groups.push_back(g.get<int64_t>());
                sum += mf.row_groups.back();
            }
            if (sum != mf.documents)
                throw DataError(path, where + "row_groups: they hold " + std::to_string(sum) + " documents, the file " +
                                          std::to_string(mf.documents));
        }
        m.files.push_back(std::move(mf));
    }
    return m;
}

Manifest Manifest::read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw DataError(path, "cannot open the manifest");
    std::ostringstream text;
    text << in.rdbuf();
    return parse(text.str(), path);
}

std::optional<std::string> manifest_path_in(const std::string& dir) {
    auto p = std::filesystem::path(dir.empty() ? "." : dir) / kManifestName;
    std::error_code ec;
    if (std::filesystem::is_regular_file(p, ec)) return p.string();
    return std::nullopt;
}

}  // namespace l3lab::data
