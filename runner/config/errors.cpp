#include "runner/config/errors.h"

namespace l3lab::config {

std::string Location::str() const {
    if (file.empty()) return "<unknown>";
    if (line <= 0) return file;
    if (column <= 0) return file + ":" + std::to_string(line);
    return file + ":" + std::to_string(line) + ":" + std::to_string(column);
}

std::string ConfigError::str() const {
    std::string out = where.str() + ": ";
    if (!key.empty()) out += key + ": ";
    return out + message;
}

void ErrorList::add(Location where, std::string key, std::string message) {
    errors_.push_back({std::move(where), std::move(key), std::move(message)});
}

std::string ErrorList::str() const {
    std::string out;
    for (const auto& e : errors_) out += e.str() + "\n";
    return out;
}

void ErrorList::throw_if_any() const {
    if (!errors_.empty()) throw ConfigException(errors_);
}

static std::string join_errors(const std::vector<ConfigError>& errors) {
    std::string out;
    for (const auto& e : errors) out += (out.empty() ? "" : "\n") + e.str();
    return out;
}

ConfigException::ConfigException(std::vector<ConfigError> errors)
    : std::runtime_error(join_errors(errors)), errors_(std::move(errors)) {}

}  // namespace l3lab::config
