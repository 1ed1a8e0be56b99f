// The strict schema of experiment files: every key, its type, default and allowed range.
// Validation walks a merged Node tree, reports every problem with its location, fills in the
// defaults and rewrites each scalar in canonical form, so `l3lab config` output is deterministic.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "runner/config/node.h"

namespace l3lab::config {

enum class FieldType { Int, Float, Bool, String, Enum, IntList, StringList, RecordList };

struct Field {
    std::string path;                   // dotted key
    FieldType type;
    std::string default_yaml;           // the default, as YAML text
    std::string help = {};                   // one line, shown by `l3lab config --keys`
    std::vector<std::string> choices = {};   // Enum: the allowed words
    std::vector<std::string> keywords = {};  // Int/Float: words accepted instead of a number ("auto")
    std::optional<double> min = {};          // inclusive
    std::optional<double> max = {};          // inclusive
    std::optional<double> disabled = {};     // a sentinel accepted outside [min, max] (-1 = disabled)
    std::vector<Field> record = {};          // RecordList: the keys of each item (their paths are bare names)
    bool required = false;                   // inside a record: must be given
};

using Schema = std::vector<Field>;

const Schema& experiment_schema();

// Validates `root` against `schema` in place: unknown keys, wrong types and out-of-range values go to
// `errors` (with did-you-mean suggestions); missing keys get their defaults; scalars become canonical.
void validate_and_complete(Node& root, const Schema& schema, ErrorList& errors);

// Writes a validated tree as YAML, keys in schema order, floats so YAML 1.1 and 1.2 parsers read floats.
std::string emit_yaml(const Node& root, const Schema& schema);

// Shortest text that reads back as the same double and as a float in YAML 1.1 (1.0e+18, 0.5, .inf).
std::string format_float(double value);

// Closest candidate by edit distance, or empty when nothing is close enough to be a typo.
std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates);

// Typed access to a validated tree (the key must be in the schema).
long long get_int(const Node& root, const std::string& path);
double get_float(const Node& root, const std::string& path);
bool get_bool(const Node& root, const std::string& path);
std::string get_string(const Node& root, const std::string& path);
std::vector<long long> get_int_list(const Node& root, const std::string& path);
std::vector<std::string> get_string_list(const Node& root, const std::string& path);
// True when the value is the keyword (e.g. "auto") rather than a number.
bool is_keyword(const Node& root, const std::string& path, const std::string& keyword);
// Location of a key's value for error messages; falls back to the key itself or the file.
Location location_of(const Node& root, const std::string& path);

}  // namespace l3lab::config
