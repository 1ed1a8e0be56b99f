#include "runner/config/errors.h"

namespace l3lab::config {

// Text from the input as it is safe to print on one line: control characters, bytes that are not UTF-8
// and invisible code points (BOM, zero-width spaces) become escapes. A key with a stray tab or BOM then
// shows why it is unknown, and every error stays one line.
static std::string printable(const std::string& s) {
    std::string out;
    auto hex = [&](unsigned v, int digits, const char* prefix) {
        static const char* d = "0123456789ABCDEF";
        out += prefix;
        for (int i = digits - 1; i >= 0; --i) out += d[(v >> (4 * i)) & 0xF];
    };
    for (size_t i = 0; i < s.size();) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        if (c == '\t') out += "\\t", ++i;
        else if (c == '\n') out += "\\n", ++i;
        else if (c == '\r') out += "\\r", ++i;
        else if (c < 0x20 || c == 0x7F) hex(c, 2, "\\x"), ++i;
        else if (c < 0x80) out += static_cast<char>(c), ++i;
        else {
            // A well-formed UTF-8 sequence is kept unless it is an invisible code point.
            const size_t n = c >= 0xC2 && c < 0xE0 ? 2 : c >= 0xE0 && c < 0xF0 ? 3 : c >= 0xF0 && c < 0xF5 ? 4 : 0;
            bool ok = n > 0 && i + n <= s.size();
            unsigned cp = n == 2 ? c & 0x1F : n == 3 ? c & 0x0F : c & 0x07;
            for (size_t k = 1; ok && k < n; ++k) {
                const unsigned char t = static_cast<unsigned char>(s[i + k]);
                ok = (t & 0xC0) == 0x80;
                cp = (cp << 6) | (t & 0x3F);
            }
            ok = ok && !(n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp < 0xE000))) && !(n == 4 && (cp < 0x10000 || cp > 0x10FFFF));
            if (!ok) {
                hex(c, 2, "\\x");
                ++i;
            } else if (cp == 0xFEFF || (cp >= 0x200B && cp <= 0x200F) || cp == 0x2060 || (cp >= 0x80 && cp < 0xA0)) {
                hex(cp, 4, "\\u");
                i += n;
            } else {
                out.append(s, i, n);
                i += n;
            }
        }
    }
    return out;
}

std::string Location::str() const {
    if (file.empty()) return "<unknown>";
    const std::string f = printable(file);
    if (line <= 0) return f;
    if (column <= 0) return f + ":" + std::to_string(line);
    return f + ":" + std::to_string(line) + ":" + std::to_string(column);
}

std::string ConfigError::str() const {
    std::string out = where.str() + ": ";
    if (!key.empty()) out += printable(key) + ": ";
    return out + printable(message);
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
