// A YAML document as l3lab sees it: a tree of maps, lists and scalars in which every value remembers
// the file, line and column it came from, so errors can point at it after files have been merged.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "runner/config/errors.h"

namespace l3lab::config {

// What a validated scalar turned out to be; decides how `l3lab config` writes it back.
enum class ScalarType { Raw, Int, Float, Bool, String, Keyword };

struct Node {
    enum class Kind { Null, Scalar, Sequence, Map };

    Kind kind = Kind::Null;
    std::string scalar;           // raw text of a scalar, canonical text once validated
    bool quoted = false;          // scalar was written in quotes: always a string
    ScalarType scalar_type = ScalarType::Raw;
    std::vector<Node> items;                            // Sequence
    std::vector<std::pair<std::string, Node>> entries;  // Map, in insertion order
    Location where;               // where the value starts
    Location key_where;           // where its key starts, when it is a map entry

    bool is_map() const { return kind == Kind::Map; }
    bool is_sequence() const { return kind == Kind::Sequence; }
    bool is_scalar() const { return kind == Kind::Scalar; }
    bool is_null() const { return kind == Kind::Null; }

    const Node* find(std::string_view key) const;
    Node* find(std::string_view key);
    // Follows a dotted path ("model.l3.k_max") through nested maps; nullptr when absent.
    const Node* find_path(std::string_view dotted) const;
    Node* find_path(std::string_view dotted);
    // Inserts or replaces a map entry, keeping the position of an existing key.
    Node& set(const std::string& key, Node value);
    void erase(std::string_view key);

    static Node map(Location where = {});
    static Node make_scalar(std::string text, Location where = {});
    // Short human description of the value for messages: 'abc', a list, a map, null.
    std::string describe() const;
};

// Parses YAML text. Syntax errors land in `errors` with their line and column; returns a Null node then.
Node parse_yaml(std::string_view text, const std::string& file, ErrorList& errors);
// Reads and parses a file; a missing or unreadable file is reported at `referenced_from`.
Node parse_yaml_file(const std::string& path, const Location& referenced_from, std::string_view key,
                     ErrorList& errors);

// Deep merge: maps merge key by key (overlay wins), everything else (lists included) is replaced.
void merge_into(Node& base, const Node& overlay);

// Loads an experiment or sweep file with its `extends:` chain resolved: each entry is a path relative
// to the file naming it, merged in order, then the file itself on top. Cycles are errors.
Node load_with_extends(const std::string& path, ErrorList& errors);

// Applies one positional `dotted.key=value` override (value parsed as YAML) on top of `root`.
// `index` numbers the override on the command line, for error locations.
void apply_override(Node& root, std::string_view text, int index, ErrorList& errors);

}  // namespace l3lab::config
