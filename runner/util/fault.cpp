#include "runner/util/fault.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <vector>

namespace l3lab::fault {

namespace {

struct Entry {
    std::string name, arg;
    long long n = 1;
    std::atomic<long long> passes{0};
};

// Parsed once, on first use. A malformed entry is reported on stderr and ignored: this is a test hook,
// and a typo must not turn into a different fault.
const std::vector<std::unique_ptr<Entry>>& entries() {
    static const std::vector<std::unique_ptr<Entry>> parsed = [] {
        std::vector<std::unique_ptr<Entry>> out;
        const char* env = std::getenv("L3LAB_FAULT");
        if (!env) return out;
        const std::string spec = env;
        size_t begin = 0;
        while (begin <= spec.size()) {
            size_t end = spec.find(',', begin);
            if (end == std::string::npos) end = spec.size();
            std::string item = spec.substr(begin, end - begin);
            begin = end + 1;
            if (item.empty()) continue;
            auto e = std::make_unique<Entry>();
            if (size_t eq = item.find('='); eq != std::string::npos) {
                e->arg = item.substr(eq + 1);
                item.resize(eq);
            }
            if (size_t at = item.find('@'); at != std::string::npos) {
                try {
                    size_t used = 0;
                    e->n = std::stoll(item.substr(at + 1), &used);
                    if (used != item.size() - at - 1) throw std::invalid_argument("trailing characters");
                } catch (const std::exception&) {
                    std::cerr << "l3lab: L3LAB_FAULT: ignoring '" << item << "' (expected NAME@N)\n";
                    continue;
                }
                item.resize(at);
            }
            e->name = item;
            out.push_back(std::move(e));
        }
        return out;
    }();
    return parsed;
}

}  // namespace

bool active() {
    static const bool set = std::getenv("L3LAB_FAULT") != nullptr;
    return set;
}

void point(const char* name) {
    if (!active()) return;
    for (const auto& e : entries()) {
        if (e->name != name || e->passes.fetch_add(1) + 1 != e->n) continue;
        std::cerr << "l3lab: L3LAB_FAULT: " << (e->arg == "stop" ? "stopping" : "killing") << " at " << name << "@"
                  << e->n << std::endl;
        ::kill(::getpid(), e->arg == "stop" ? SIGSTOP : SIGKILL);
    }
}

std::optional<std::string> at(const char* name, long long value) {
    if (!active()) return std::nullopt;
    for (const auto& e : entries())
        if (e->name == name && e->n == value) return e->arg;
    return std::nullopt;
}

}  // namespace l3lab::fault
