#include "runner/data/core_tasks.h"

#include <yaml-cpp/yaml.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "runner/data/errors.h"

namespace fs = std::filesystem;

namespace l3lab::data {

// ---------------------------------------------------------------------------------------------------
// Python's random (Modules/_randommodule.c, Lib/random.py)

PythonRandom::PythonRandom(uint64_t seed) {
    // random.seed(n) for an int: init_by_array over abs(n)'s 32-bit words, least significant first.
    std::vector<uint32_t> key;
    do {
        key.push_back(static_cast<uint32_t>(seed & 0xffffffffu));
        seed >>= 32;
    } while (seed);
    mt_[0] = 19650218u;
    for (uint32_t i = 1; i < 624; ++i) mt_[i] = 1812433253u * (mt_[i - 1] ^ (mt_[i - 1] >> 30)) + i;
    uint32_t i = 1, j = 0;
    for (size_t k = std::max<size_t>(624, key.size()); k; --k) {
        mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1664525u)) + key[j] + j;
        if (++i >= 624) {
            mt_[0] = mt_[623];
            i = 1;
        }
        if (++j >= key.size()) j = 0;
    }
    for (size_t k = 623; k; --k) {
        mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1566083941u)) - i;
        if (++i >= 624) {
            mt_[0] = mt_[623];
            i = 1;
        }
    }
    mt_[0] = 0x80000000u;
    index_ = 624;
}

uint32_t PythonRandom::next32() {
    if (index_ >= 624) {
        for (int k = 0; k < 624; ++k) {
            const uint32_t y = (mt_[k] & 0x80000000u) | (mt_[(k + 1) % 624] & 0x7fffffffu);
            mt_[k] = mt_[(k + 397) % 624] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
        }
        index_ = 0;
    }
    uint32_t y = mt_[index_++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

uint64_t PythonRandom::below(uint64_t n) {
    if (n == 0) return 0;
    int k = 0;
    for (uint64_t v = n; v; v >>= 1) ++k;  // n.bit_length()
    auto getrandbits = [&]() {
        // words of 32 bits, least significant first; the last one keeps its high bits
        uint64_t r = 0;
        int left = k, shift = 0;
        while (left > 0) {
            uint32_t w = next32();
            if (left < 32) w >>= (32 - left);
            r |= static_cast<uint64_t>(w) << shift;
            shift += 32;
            left -= 32;
        }
        return r;
    };
    uint64_t r = getrandbits();
    while (r >= n) r = getrandbits();
    return r;
}

std::vector<int64_t> PythonRandom::sample(const std::vector<int64_t>& population, int64_t k) {
    const int64_t n = static_cast<int64_t>(population.size());
    if (k < 0 || k > n) throw std::invalid_argument("sample larger than population");
    std::vector<int64_t> result(static_cast<size_t>(k));
    double setsize = 21;
    if (k > 5) setsize += std::pow(4.0, std::ceil(std::log(static_cast<double>(k * 3)) / std::log(4.0)));
    if (static_cast<double>(n) <= setsize) {
        std::vector<int64_t> pool = population;
        for (int64_t i = 0; i < k; ++i) {
            const auto j = static_cast<size_t>(below(static_cast<uint64_t>(n - i)));
            result[static_cast<size_t>(i)] = pool[j];
            pool[j] = pool[static_cast<size_t>(n - i - 1)];
        }
    } else {
        std::set<uint64_t> selected;
        for (int64_t i = 0; i < k; ++i) {
            uint64_t j = below(static_cast<uint64_t>(n));
            while (selected.count(j)) j = below(static_cast<uint64_t>(n));
            selected.insert(j);
            result[static_cast<size_t>(i)] = population[static_cast<size_t>(j)];
        }
    }
    return result;
}

// ---------------------------------------------------------------------------------------------------
// the bundle

namespace {

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    if (!in) throw DataError(p.string(), "cannot open the file (a CORE bundle has core.yaml, eval_meta_data.csv and eval_data/)");
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// RFC 4180 rows: fields separated by commas, quoted fields may hold commas, newlines and "" quotes.
std::vector<std::vector<std::string>> csv_rows(const std::string& text) {
    std::vector<std::vector<std::string>> rows(1);
    std::string field;
    bool quoted = false, any = false;
    for (size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (quoted) {
            if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') field += '"', ++i;
            else if (c == '"') quoted = false;
            else field += c;
        } else if (c == '"') {
            quoted = true;
        } else if (c == ',') {
            rows.back().push_back(std::move(field)), field.clear();
        } else if (c == '\n' || c == '\r') {
            if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
            rows.back().push_back(std::move(field)), field.clear();
            rows.emplace_back();
            any = false;
            continue;
        } else {
            field += c;
        }
        any = true;
    }
    if (any || !field.empty()) rows.back().push_back(std::move(field));
    if (rows.back().empty()) rows.pop_back();
    return rows;
}

std::string str_of(const nlohmann::json& j, const std::string& key, const std::string& where) {
    if (!j.contains(key) || !j[key].is_string()) throw DataError(where, "\"" + key + "\" must be a string");
    return j[key].get<std::string>();
}

}  // namespace

std::vector<CoreTask> read_core_bundle(const std::string& dir) {
    const fs::path root(dir);
    std::error_code ec;
    if (!fs::is_directory(root, ec))
        throw DataError(dir, "no CORE bundle here (l3lab never downloads it: put nanochat's eval_bundle here, or name "
                             "one with --bundle)");
    const std::string yaml_path = (root / "core.yaml").string();
    YAML::Node config;
    try {
        config = YAML::Load(read_file(yaml_path));
    } catch (const YAML::Exception& e) {
        throw DataError(yaml_path, e.mark.line + 1, "not valid YAML: " + e.msg);
    }
    if (!config["icl_tasks"] || !config["icl_tasks"].IsSequence())
        throw DataError(yaml_path, "expected a list under icl_tasks");

    const std::string csv_path = (root / "eval_meta_data.csv").string();
    const auto rows = csv_rows(read_file(csv_path));
    if (rows.empty()) throw DataError(csv_path, "empty");
    const auto& header = rows.front();
    const auto task_col = std::find(header.begin(), header.end(), "Eval Task") - header.begin();
    const auto base_col = std::find(header.begin(), header.end(), "Random baseline") - header.begin();
    if (task_col == static_cast<std::ptrdiff_t>(header.size()) || base_col == static_cast<std::ptrdiff_t>(header.size()))
        throw DataError(csv_path, 1, "expected the columns \"Eval Task\" and \"Random baseline\"");
    std::map<std::string, double> baselines;
    for (size_t r = 1; r < rows.size(); ++r) {
        if (rows[r].size() <= static_cast<size_t>(std::max(task_col, base_col)))
            throw DataError(csv_path, static_cast<int>(r + 1), "too few fields");
        char* end = nullptr;
        const std::string& b = rows[r][static_cast<size_t>(base_col)];
        const double v = std::strtod(b.c_str(), &end);
        if (b.empty() || *end) throw DataError(csv_path, static_cast<int>(r + 1), "Random baseline \"" + b + "\" is not a number");
        baselines[rows[r][static_cast<size_t>(task_col)]] = v;
    }

    std::vector<CoreTask> tasks;
    for (const auto& t : config["icl_tasks"]) {
        const int line = t.Mark().line + 1;
        auto need = [&](const char* key) {
            if (!t[key]) throw DataError(yaml_path, line, std::string("a task without ") + key);
            return t[key];
        };
        CoreTask task;
        try {
            task.label = need("label").as<std::string>();
            task.dataset_uri = need("dataset_uri").as<std::string>();
            const auto shots = need("num_fewshot");
            task.num_fewshot = shots.IsSequence() ? shots[0].as<int64_t>() : shots.as<int64_t>();
            const std::string type = need("icl_task_type").as<std::string>();
            if (type == "multiple_choice") task.type = CoreTaskType::MultipleChoice;
            else if (type == "schema") task.type = CoreTaskType::Schema;
            else if (type == "language_modeling") task.type = CoreTaskType::LanguageModeling;
            else throw DataError(yaml_path, line, task.label + ": icl_task_type \"" + type + "\" is not one CORE has");
            if (t["continuation_delimiter"]) task.continuation_delimiter = t["continuation_delimiter"].as<std::string>();
        } catch (const YAML::Exception& e) {
            throw DataError(yaml_path, line, "a task entry: " + e.msg);
        }
        auto b = baselines.find(task.label);
        if (b == baselines.end()) throw DataError(csv_path, task.label + ": no row for this task (its Random baseline)");
        task.random_baseline = b->second;
        const fs::path data_path = root / "eval_data" / task.dataset_uri;
        std::istringstream lines(read_file(data_path));
        int n = 0;
        for (std::string l; std::getline(lines, l);) {
            ++n;
            if (l.find_first_not_of(" \t\r") == std::string::npos) continue;
            const std::string where = data_path.string() + ":" + std::to_string(n);
            nlohmann::json j;
            try {
                j = nlohmann::json::parse(l);
            } catch (const nlohmann::json::exception& e) {
                throw DataError(data_path.string(), n, std::string("not a JSON line: ") + e.what());
            }
            CoreExample ex;
            try {
                switch (task.type) {
                    case CoreTaskType::MultipleChoice:
                        ex.query = str_of(j, "query", where);
                        ex.choices = j.at("choices").get<std::vector<std::string>>();
                        ex.gold = j.at("gold").get<int64_t>();
                        if (ex.gold < 0 || ex.gold >= static_cast<int64_t>(ex.choices.size()))
                            throw DataError(data_path.string(), n, "gold is not the index of a choice");
                        break;
                    case CoreTaskType::Schema:
                        ex.context_options = j.at("context_options").get<std::vector<std::string>>();
                        ex.continuation = str_of(j, "continuation", where);
                        ex.gold = j.at("gold").get<int64_t>();
                        if (ex.gold < 0 || ex.gold >= static_cast<int64_t>(ex.context_options.size()))
                            throw DataError(data_path.string(), n, "gold is not the index of a context option");
                        break;
                    case CoreTaskType::LanguageModeling:
                        ex.context = str_of(j, "context", where);
                        ex.continuation = str_of(j, "continuation", where);
                        break;
                }
            } catch (const nlohmann::json::exception& e) {
                throw DataError(data_path.string(), n, std::string("a field is missing or of the wrong type: ") + e.what());
            }
            task.examples.push_back(std::move(ex));
        }
        if (task.num_fewshot < 0 || task.num_fewshot >= static_cast<int64_t>(std::max<size_t>(task.examples.size(), 1)))
            throw DataError(yaml_path, line, task.label + ": num_fewshot " + std::to_string(task.num_fewshot) +
                                                 " needs more examples than its " + std::to_string(task.examples.size()));
        tasks.push_back(std::move(task));
    }
    return tasks;
}

std::vector<CoreExample> core_subsample(const std::vector<CoreExample>& examples, int64_t max_per_task) {
    std::vector<CoreExample> data = examples;
    PythonRandom(1337).shuffle(data);
    if (max_per_task > 0 && static_cast<size_t>(max_per_task) < data.size()) data.resize(static_cast<size_t>(max_per_task));
    return data;
}

// ---------------------------------------------------------------------------------------------------
// prompts and rows

std::string python_strip(const std::string& s) {
    // str.isspace(): the characters of bidirectional class WS, B or S, or category Zs.
    auto space_at = [&](size_t i, size_t& len) {
        const auto c = static_cast<unsigned char>(s[i]);
        len = 1;
        if (c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f)) return true;
        uint32_t cp = 0;
        if (c >= 0xC2 && c <= 0xDF && i + 1 < s.size()) cp = ((c & 0x1Fu) << 6) | (s[i + 1] & 0x3F), len = 2;
        else if (c >= 0xE0 && c <= 0xEF && i + 2 < s.size())
            cp = ((c & 0x0Fu) << 12) | ((s[i + 1] & 0x3Fu) << 6) | (s[i + 2] & 0x3F), len = 3;
        else return false;
        return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
               cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
    };
    size_t begin = 0, len = 0;
    while (begin < s.size() && space_at(begin, len)) begin += len;
    size_t end = s.size();
    while (end > begin) {
        size_t start = end - 1;  // the start of the last character
        while (start > begin && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
        if (!space_at(start, len) || start + len != end) break;
        end = start;
    }
    return s.substr(begin, end - begin);
}

std::string core_max_per_task_problem(const std::vector<CoreTask>& tasks, int64_t max_per_task) {
    if (max_per_task <= 0) return "";
    for (const CoreTask& task : tasks) {
        const int64_t kept = std::min<int64_t>(max_per_task, static_cast<int64_t>(task.examples.size()));
        if (task.num_fewshot >= kept)
            return task.label + " is " + std::to_string(task.num_fewshot) + "-shot and draws its shots from the other " +
                   "evaluated examples, so it needs more than " + std::to_string(task.num_fewshot) + " per task; " +
                   std::to_string(max_per_task) + " leaves " + std::to_string(kept - 1) + " to draw from";
    }
    return "";
}

CoreRows core_rows(const CoreTask& task, const std::vector<CoreExample>& examples, size_t idx, const Tokenizer& tokenizer) {
    CoreRows r;
    if (task.num_fewshot > 0) {
        std::vector<int64_t> available;
        for (size_t i = 0; i < examples.size(); ++i)
            if (i != idx) available.push_back(static_cast<int64_t>(i));
        r.fewshot = PythonRandom(1234 + idx).sample(available, task.num_fewshot);
    }
    const std::string& d = task.continuation_delimiter;
    const CoreExample& item = examples[idx];
    std::string shots;  // the templates' loop: each example, then a blank line
    for (int64_t f : r.fewshot) {
        const CoreExample& ex = examples[static_cast<size_t>(f)];
        switch (task.type) {
            case CoreTaskType::MultipleChoice: shots += ex.query + d + ex.choices[static_cast<size_t>(ex.gold)] + "\n\n"; break;
            case CoreTaskType::Schema: shots += ex.context_options[static_cast<size_t>(ex.gold)] + d + ex.continuation + "\n\n"; break;
            case CoreTaskType::LanguageModeling: shots += python_strip(ex.context) + d + ex.continuation + "\n\n"; break;
        }
    }
    switch (task.type) {
        case CoreTaskType::MultipleChoice:
            for (const auto& choice : item.choices) r.prompts.push_back(shots + item.query + d + choice);
            break;
        case CoreTaskType::Schema:
            for (const auto& option : item.context_options) r.prompts.push_back(shots + option + d + item.continuation);
            break;
        case CoreTaskType::LanguageModeling: {
            const std::string head = shots + python_strip(item.context) + d;
            r.prompts = {python_strip(head), head + item.continuation};
            break;
        }
    }
    std::vector<std::vector<int32_t>> tokens;
    for (const auto& p : r.prompts) {
        std::vector<int32_t> t = tokenizer.encode(p);
        t.insert(t.begin(), tokenizer.bos_id());
        tokens.push_back(std::move(t));
    }
    size_t min_len = SIZE_MAX;
    for (const auto& t : tokens) min_len = std::min(min_len, t.size());
    auto common = [&](bool from_left) {
        for (size_t i = 0; i < min_len; ++i) {
            auto at = [&](const std::vector<int32_t>& t) { return from_left ? t[i] : t[t.size() - 1 - i]; };
            for (const auto& t : tokens)
                if (at(t) != at(tokens[0])) return static_cast<int64_t>(i);
        }
        return static_cast<int64_t>(min_len);
    };
    switch (task.type) {
        case CoreTaskType::MultipleChoice: {
            const int64_t start = common(true);
            for (const auto& t : tokens) r.starts.push_back(start), r.ends.push_back(static_cast<int64_t>(t.size()));
            r.tokens = std::move(tokens);
            break;
        }
        case CoreTaskType::Schema: {
            const int64_t suffix = common(false);
            for (const auto& t : tokens)
                r.ends.push_back(static_cast<int64_t>(t.size())), r.starts.push_back(static_cast<int64_t>(t.size()) - suffix);
            r.tokens = std::move(tokens);
            break;
        }
        case CoreTaskType::LanguageModeling: {
            const auto& without = tokens[0];
            const auto& with = tokens[1];
            if (without.size() >= with.size() || !std::equal(without.begin(), without.end(), with.begin()))
                throw DataError(task.label, "example " + std::to_string(idx) +
                                                ": the prompt without the continuation does not tokenize as a prefix of the "
                                                "one with it (nanochat's evaluate_example asserts the same)");
            r.starts = {static_cast<int64_t>(without.size())};
            r.ends = {static_cast<int64_t>(with.size())};
            r.tokens = {with};
            break;
        }
    }
    return r;
}

std::string nanochat_base_dir() {
    if (const char* base = std::getenv("NANOCHAT_BASE_DIR"); base && *base) return base;
    const char* home = std::getenv("HOME");
    return (fs::path(home ? home : ".") / ".cache" / "nanochat").string();
}

std::string default_core_bundle() { return (fs::path(nanochat_base_dir()) / "eval_bundle").string(); }

}  // namespace l3lab::data
