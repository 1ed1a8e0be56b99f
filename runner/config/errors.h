// Located configuration errors: `file:line:col: dotted.key: message`, all collected before exiting 2.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

namespace l3lab::config {

struct Location {
    std::string file;  // a path, or a description such as "<override model.depth=x>"
    int line = 0;      // 1-based; 0 = unknown
    int column = 0;    // 1-based; 0 = unknown
    std::string str() const;
};

struct ConfigError {
    Location where;
    std::string key;  // dotted key, empty when the error is about a whole file
    std::string message;
    std::string str() const;
};

class ErrorList {
public:
    void add(Location where, std::string key, std::string message);
    bool empty() const { return errors_.empty(); }
    size_t size() const { return errors_.size(); }
    const std::vector<ConfigError>& all() const { return errors_; }
    // One error per line, in the order they were found.
    std::string str() const;
    // Throws ConfigException when anything was collected.
    void throw_if_any() const;

private:
    std::vector<ConfigError> errors_;
};

// Everything that makes l3lab exit 2: bad YAML, bad keys, bad values, impossible plans.
class ConfigException : public std::runtime_error {
public:
    explicit ConfigException(std::vector<ConfigError> errors);
    const std::vector<ConfigError>& errors() const { return errors_; }

private:
    std::vector<ConfigError> errors_;
};

}  // namespace l3lab::config
