#include "runner/config/node.h"

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace fs = std::filesystem;

namespace l3lab::config {

const Node* Node::find(std::string_view key) const {
    for (const auto& [k, v] : entries)
        if (k == key) return &v;
    return nullptr;
}

Node* Node::find(std::string_view key) {
    return const_cast<Node*>(static_cast<const Node*>(this)->find(key));
}

const Node* Node::find_path(std::string_view dotted) const {
    const Node* node = this;
    while (node) {
        size_t dot = dotted.find('.');
        std::string_view head = dotted.substr(0, dot);
        if (!node->is_map()) return nullptr;
        // "graph[2]": a list item
        size_t bracket = head.find('[');
        long index = -1;
        if (bracket != std::string_view::npos && head.back() == ']') {
            index = std::strtol(std::string(head.substr(bracket + 1)).c_str(), nullptr, 10);
            head = head.substr(0, bracket);
        }
        node = node->find(head);
        if (node && index >= 0) node = node->is_sequence() && index < static_cast<long>(node->items.size())
                                           ? &node->items[index]
                                           : nullptr;
        if (dot == std::string_view::npos) return node;
        dotted.remove_prefix(dot + 1);
    }
    return nullptr;
}

Node* Node::find_path(std::string_view dotted) {
    return const_cast<Node*>(static_cast<const Node*>(this)->find_path(dotted));
}

Node& Node::set(const std::string& key, Node value) {
    if (Node* existing = find(key)) {
        *existing = std::move(value);
        return *existing;
    }
    entries.emplace_back(key, std::move(value));
    return entries.back().second;
}

void Node::erase(std::string_view key) {
    std::erase_if(entries, [&](const auto& e) { return e.first == key; });
}

Node Node::map(Location where) {
    Node n;
    n.kind = Kind::Map;
    n.where = std::move(where);
    return n;
}

Node Node::make_scalar(std::string text, Location where) {
    Node n;
    n.kind = Kind::Scalar;
    n.scalar = std::move(text);
    n.where = std::move(where);
    return n;
}

std::string Node::describe() const {
    switch (kind) {
        case Kind::Null: return "null";
        case Kind::Scalar: return quoted ? "the string \"" + scalar + "\"" : "'" + scalar + "'";
        case Kind::Sequence: return items.empty() ? "an empty list" : "a list";
        case Kind::Map: return entries.empty() ? "an empty map" : "a map";
    }
    return "?";
}

// ---------------------------------------------------------------------------------------------
// YAML -> Node

static Location location_of(const YAML::Mark& mark, const std::string& file) {
    if (mark.is_null()) return {file, 0, 0};
    return {file, mark.line + 1, mark.column + 1};
}

namespace {

// yaml-cpp keeps an alias as a reference to its anchor's node, so a few lines of anchors and aliases
// can describe billions of values ("billion laughs"); the tree built here expands them. No experiment or
// sweep has more than a few thousand values: refuse documents that expand past this many.
constexpr size_t kMaxValues = 1'000'000;

struct Converter {
    const std::string& file;
    ErrorList& errors;
    size_t values = 0;
    bool too_many = false;

    Node convert(const YAML::Node& yaml, const std::string& path = "") {
        Node node;
        node.where = location_of(yaml.Mark(), file);
        if (too_many) return node;
        if (++values > kMaxValues) {
            too_many = true;
            errors.add(node.where, "", "the document expands to more than " + std::to_string(kMaxValues) +
                                           " values (through YAML anchors and aliases?)");
            return node;
        }
        switch (yaml.Type()) {
            case YAML::NodeType::Undefined:
            case YAML::NodeType::Null:
                node.kind = Node::Kind::Null;
                break;
            case YAML::NodeType::Scalar:
                node.kind = Node::Kind::Scalar;
                node.scalar = yaml.Scalar();
                node.quoted = yaml.Tag() == "!";
                break;
            case YAML::NodeType::Sequence:
                node.kind = Node::Kind::Sequence;
                for (const auto& item : yaml) {
                    node.items.push_back(convert(item, path));
                    if (too_many) break;
                }
                break;
            case YAML::NodeType::Map: {
                node.kind = Node::Kind::Map;
                std::set<std::string> seen;
                for (const auto& kv : yaml) {
                    if (too_many) break;
                    Location key_where = location_of(kv.first.Mark(), file);
                    if (!kv.first.IsScalar()) {
                        errors.add(key_where, "", "map keys must be plain names, not lists or maps");
                        continue;
                    }
                    std::string key = kv.first.Scalar();
                    std::string dotted = path.empty() ? key : path + "." + key;
                    if (!seen.insert(key).second) {
                        errors.add(key_where, dotted, "duplicate key (each key may appear once per map)");
                        continue;
                    }
                    Node child = convert(kv.second, dotted);
                    child.key_where = key_where;
                    if (child.is_null() && child.where.line == 0) child.where = key_where;
                    node.entries.emplace_back(std::move(key), std::move(child));
                }
                break;
            }
        }
        return node;
    }
};

}  // namespace

Node parse_yaml(std::string_view text, const std::string& file, ErrorList& errors) {
    try {
        std::vector<YAML::Node> docs = YAML::LoadAll(std::string(text));
        if (docs.empty()) return Node{};
        if (docs.size() > 1) {
            errors.add({file, 0, 0}, "", "expected one YAML document, found " + std::to_string(docs.size()) +
                                             " (remove the extra '---')");
            return Node{};
        }
        Converter converter{file, errors};
        Node root = converter.convert(docs.front());
        return converter.too_many ? Node{} : root;
    } catch (const YAML::DeepRecursion& e) {
        errors.add(location_of(e.mark, file), "",
                   "YAML syntax error: nested too deeply (the YAML reader stops at " + std::to_string(e.depth()) + " levels)");
    } catch (const YAML::Exception& e) {
        errors.add(location_of(e.mark, file), "", "YAML syntax error: " + e.msg);
    }
    return Node{};
}

// Experiment and sweep files are a few kilobytes; anything this large is a wrong path.
constexpr uintmax_t kMaxFileBytes = 16u << 20;

Node parse_yaml_file(const std::string& path, const Location& referenced_from, std::string_view key,
                     ErrorList& errors) {
    std::error_code ec;
    if (!fs::exists(path, ec)) {
        errors.add(referenced_from, std::string(key), "file not found: " + path);
        return Node{};
    }
    if (fs::is_directory(path, ec)) {
        errors.add(referenced_from, std::string(key), "expected a YAML file, got a directory: " + path);
        return Node{};
    }
    // A device or a pipe (/dev/zero, /dev/stdin) would be read forever, or block.
    if (!fs::is_regular_file(path, ec)) {
        errors.add(referenced_from, std::string(key), "expected a YAML file, got a device, pipe or socket: " + path);
        return Node{};
    }
    if (const auto size = fs::file_size(path, ec); !ec && size > kMaxFileBytes) {
        errors.add(referenced_from, std::string(key),
                   path + " has " + std::to_string(size) + " bytes: too large for an experiment or sweep file (the limit is " +
                       std::to_string(kMaxFileBytes) + ")");
        return Node{};
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        errors.add(referenced_from, std::string(key), "cannot read " + path + ": " + std::strerror(errno));
        return Node{};
    }
    std::stringstream buffer;
    buffer << in.rdbuf();
    return parse_yaml(buffer.str(), path, errors);
}

// ---------------------------------------------------------------------------------------------
// merging, extends, overrides

void merge_into(Node& base, const Node& overlay) {
    if (base.is_map() && overlay.is_map()) {
        for (const auto& [key, value] : overlay.entries) {
            if (Node* existing = base.find(key); existing && existing->is_map() && value.is_map()) {
                merge_into(*existing, value);
                existing->key_where = value.key_where;
            } else {
                base.set(key, value);
            }
        }
        return;
    }
    base = overlay;
}

namespace {

struct ExtendsLoader {
    ErrorList& errors;
    std::vector<std::string> stack;  // canonical paths being loaded, for cycle detection

    Node load(const std::string& path, const Location& referenced_from, std::string_view key) {
        std::error_code ec;
        std::string canonical = fs::weakly_canonical(fs::absolute(path), ec).string();
        if (ec) canonical = path;
        if (std::find(stack.begin(), stack.end(), canonical) != stack.end()) {
            std::string chain;
            for (const auto& p : stack) chain += p + " -> ";
            errors.add(referenced_from, std::string(key), "extends cycle: " + chain + canonical);
            return Node::map();
        }
        Node doc = parse_yaml_file(path, referenced_from, key, errors);
        if (doc.is_null()) return Node::map({path, 1, 1});
        if (!doc.is_map()) {
            errors.add(doc.where, "", "expected a map of settings at the top of the file, got " + doc.describe());
            return Node::map({path, 1, 1});
        }
        stack.push_back(canonical);
        Node result = Node::map(doc.where);
        if (const Node* extends = doc.find("extends")) {
            std::vector<const Node*> parents;
            if (extends->is_scalar()) {
                parents.push_back(extends);
            } else if (extends->is_sequence()) {
                for (const auto& item : extends->items) parents.push_back(&item);
            } else if (!extends->is_null()) {
                errors.add(extends->where, "extends", "expected a file name or a list of file names, got " +
                                                          extends->describe());
            }
            fs::path dir = fs::path(path).parent_path();
            for (const Node* parent : parents) {
                if (!parent->is_scalar() || parent->scalar.empty()) {
                    errors.add(parent->where, "extends", "expected a file name, got " + parent->describe());
                    continue;
                }
                fs::path parent_path = dir / parent->scalar;
                merge_into(result, load(parent_path.lexically_normal().string(), parent->where, "extends"));
            }
        }
        Node own = doc;
        own.erase("extends");
        merge_into(result, own);
        stack.pop_back();
        return result;
    }
};

}  // namespace

Node load_with_extends(const std::string& path, ErrorList& errors) {
    ExtendsLoader loader{errors, {}};
    return loader.load(path, Location{path, 0, 0}, "");
}

void apply_override(Node& root, std::string_view text, int index, ErrorList& errors) {
    std::string origin = "<override " + std::to_string(index) + ": " + std::string(text) + ">";
    size_t eq = text.find('=');
    if (eq == std::string_view::npos || eq == 0) {
        errors.add({origin, 1, 1}, "", "expected dotted.key=value (for example model.depth=12)");
        return;
    }
    std::string key(text.substr(0, eq));
    std::string value_text(text.substr(eq + 1));
    if (key.front() == '.' || key.back() == '.' || key.find("..") != std::string::npos ||
        key.find_first_of(" \t") != std::string::npos) {
        errors.add({origin, 1, 1}, key, "malformed key (expected names joined by dots, like model.l3.k_max)");
        return;
    }
    ErrorList parse_errors;
    Node value = parse_yaml(value_text, origin, parse_errors);
    const int value_column = static_cast<int>(eq) + 2;
    for (const auto& e : parse_errors.all())
        errors.add({origin, 1, value_column + std::max(0, e.where.column - 1)}, key, e.message);
    if (!parse_errors.empty()) return;

    // Shift the value's locations so they point into the override text.
    std::vector<Node*> todo{&value};
    while (!todo.empty()) {
        Node* n = todo.back();
        todo.pop_back();
        n->where = {origin, 1, value_column + std::max(0, n->where.column - 1)};
        if (n->key_where.line) n->key_where = {origin, 1, value_column + std::max(0, n->key_where.column - 1)};
        for (auto& item : n->items) todo.push_back(&item);
        for (auto& [k, v] : n->entries) todo.push_back(&v);
    }
    if (value.is_null() && value_text.find_first_not_of(" \t") != std::string::npos) value.where = {origin, 1, value_column};
    if (value.is_null()) value.where = {origin, 1, value_column};

    // Build the nested map {a: {b: {c: value}}} and merge it on top.
    Node overlay = std::move(value);
    overlay.key_where = {origin, 1, 1};
    size_t end = key.size();
    while (true) {
        size_t dot = key.rfind('.', end - 1);
        size_t start = dot == std::string::npos ? 0 : dot + 1;
        Node parent = Node::map({origin, 1, 1});
        parent.entries.emplace_back(key.substr(start, end - start), std::move(overlay));
        overlay = std::move(parent);
        overlay.key_where = {origin, 1, 1};
        if (dot == std::string::npos) break;
        end = dot;
    }
    if (!root.is_map()) root = Node::map();
    merge_into(root, overlay);
}

}  // namespace l3lab::config
