// Helpers for the bad-input suites: running the real executable under a timeout with its stdout and
// stderr kept apart, the fixture header lines, the traces a crash leaves in stderr, and a seeded
// mutator that damages valid YAML files in the ways people (and editors, and truncated copies) do.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace l3lab::test {

struct ProcessResult {
    int code = -1;          // exit status; 128 + N when killed by signal N
    bool signaled = false;  // ended by a signal (a crash, or our kill after the timeout)
    bool timed_out = false;
    std::string out, err;
    double seconds = 0;
};

// Runs `program args...` in `cwd` with stdin from /dev/null; kills it (SIGKILL) after `timeout_s`.
inline ProcessResult run_process(const std::string& program, const std::vector<std::string>& args,
                                 const std::string& cwd, double timeout_s) {
    ProcessResult r;
    int out_pipe[2], err_pipe[2];
    if (pipe(out_pipe) != 0 || pipe(err_pipe) != 0) {
        r.err = "pipe() failed";
        return r;
    }
    const auto start = std::chrono::steady_clock::now();
    pid_t pid = fork();
    if (pid == 0) {
        int null = ::open("/dev/null", O_RDONLY);
        dup2(null, 0);
        dup2(out_pipe[1], 1);
        dup2(err_pipe[1], 2);
        close(out_pipe[0]);
        close(err_pipe[0]);
        if (!cwd.empty() && chdir(cwd.c_str()) != 0) _exit(126);
        std::vector<char*> argv{const_cast<char*>(program.c_str())};
        for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
        argv.push_back(nullptr);
        execv(program.c_str(), argv.data());
        _exit(127);
    }
    close(out_pipe[1]);
    close(err_pipe[1]);
    pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
    std::string* sinks[2] = {&r.out, &r.err};
    int open_fds = 2;
    const auto deadline = start + std::chrono::duration<double>(timeout_s);
    while (open_fds > 0) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            r.timed_out = true;
            kill(pid, SIGKILL);
            break;
        }
        if (poll(fds, 2, static_cast<int>(left.count())) < 0 && errno != EINTR) break;
        for (int i = 0; i < 2; ++i) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char buf[4096];
            ssize_t n = read(fds[i].fd, buf, sizeof buf);
            if (n > 0) {
                if (sinks[i]->size() < (1u << 20)) sinks[i]->append(buf, static_cast<size_t>(n));
            } else if (n == 0 || errno != EINTR) {
                close(fds[i].fd);
                fds[i].fd = -1;
                --open_fds;
            }
        }
    }
    for (auto& f : fds)
        if (f.fd >= 0) close(f.fd);
    int status = 0;
    waitpid(pid, &status, 0);
    r.signaled = WIFSIGNALED(status);
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return r;
}

// Text that only a crash, a failed assertion, an escaped exception or a sanitizer writes.
inline std::string crash_trace_in(const std::string& text) {
    static const char* markers[] = {"terminate called", "Assertion", "assertion", "AddressSanitizer", "UndefinedBehaviorSanitizer",
                                    "LeakSanitizer", "runtime error:", "Segmentation fault", "Aborted", "core dumped",
                                    "stack trace", "Stack trace", "backtrace", "what():", "std::logic_error",
                                    "basic_string", "stoll", "stod", "vector::", "#0 0x"};
    for (const char* m : markers)
        if (text.find(m) != std::string::npos) return m;
    return "";
}

// `# name: value` lines at the top of a fixture, in order (`# expect: ...`, `# commands: ...`).
inline std::vector<std::pair<std::string, std::string>> fixture_header(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::vector<std::pair<std::string, std::string>> out;
    std::string line;
    while (std::getline(in, line) && line.rfind("# ", 0) == 0) {
        size_t colon = line.find(": ");
        if (colon == std::string::npos) break;
        out.emplace_back(line.substr(2, colon - 2), line.substr(colon + 2));
    }
    return out;
}

inline std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

// ---------------------------------------------------------------------------------------------
// Seeded mutations of YAML text.

using FuzzRng = Rng;

// Values a scalar may be replaced with: other types, extremes, non-numbers, odd text.
inline const std::vector<std::string>& fuzz_scalars() {
    static const std::vector<std::string> values = {
        "", "0", "-0", "1", "-1", "2", "3", "7", "63", "64", "65", "100", "1000", "4096", "65536", "65537",
        "10000", "1000000", "1e9", "1e12", "1e15", "1e18", "1.0e+30", "1e308", "1e309", "-1e309", "1e-320",
        "2147483647", "2147483648", "4294967296", "9223372036854775807", "9223372036854775808",
        "-9223372036854775808", "18446744073709551616", "99999999999999999999999999", "-999999999999",
        "0.5", "1.5", "-0.5", "0.0000001", "3.14159", "+5", "0x10", "0o17", "1_000", "1__0", "1e", "e5", ".5", "5.",
        ".nan", ".NaN", "nan", ".inf", "-.inf", "inf", "Infinity", "true", "false", "yes", "no", "on", "null", "~",
        "[]", "{}", "[1, 2]", "[[1], [2]]", "[a, b]", "{a: 1}", "{model: {depth: 2}}", "[{type: block}]",
        "\"16\"", "'x'", "\"\"", "''", "auto", "Auto", "lzw", "frequency", "cpu", "cuda", "SSSL", "S", "L", "X",
        "adamw", "muon", "dmodel", "scaled", "none", "linear", "constant", "continue", "abort",
        "\xC3\xBC" "n\xC3\xAF" "c\xC3\xB6" "d\xC3\xA9", "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E", "\xF0\x9F\x99\x82",
        "\xFF\xFE", "\xC3", "a\x01b", "&anchor 3", "*alias", "*a", "!!binary aGVsbG8=", "!!int 3", "!custom 3",
        "|\n  block", ">", "- a", "? x", "%YAML 1.2", "@x", "`x`", "a: b", "a # b", "#", "'unterminated",
        "\"unterminated", "[unclosed", "{unclosed", "]", "}", ",", "../../etc/passwd", "/dev/zero", "/",
        "runs/../..", "*.bin", "data/shards", "a/b c", std::string(300, 'x'), std::string(5000, '9'),
        "1.0e18", "2.15e18", "-1", "-1.0", "0.0", "10.5"};
    return values;
}

inline std::vector<std::string> split_lines(const std::string& text) {
    std::vector<std::string> lines;
    std::string line;
    std::istringstream in(text);
    while (std::getline(in, line)) lines.push_back(line);
    return lines;
}

inline std::string join_lines(const std::vector<std::string>& lines) {
    std::string out;
    for (const auto& l : lines) out += l + "\n";
    return out;
}

// Keys a renamed key may become (other real keys, near misses, odd names).
inline const std::vector<std::string>& fuzz_keys() {
    static const std::vector<std::string> keys = {
        "name", "extends", "seed", "device", "model", "depth", "dpeth", "vocab_size", "sequence_len", "aspect_ratio",
        "head_dim", "n_kv_head", "window_pattern", "softcap", "l3", "after_layers", "n_emb", "d_up", "d_emb",
        "k_max", "tie_kv", "allocation", "graph", "horizon", "num_iterations", "target_flops",
        "target_param_data_ratio", "batch", "device_batch_size", "total_batch_size", "optimizer", "groups", "lr",
        "roles", "kind", "schedule", "warmup_ratio", "eval", "every", "tokens", "data", "train", "val", "output",
        "dir", "experiment", "set", "grid", "zip", "seeds", "on_failure", "l3_at_fraction", "model.depth",
        "model.l3.after_layers", "batch.device_batch_size", "horizon.target_flops", "seed", "<<", "?", "-", "",
        "a.b", ".model", "model.", "model..depth", "mod el", "\xC3\xA9", "__proto__", "123"};
    return keys;
}

// One random mutation of `text` (which may come back unchanged or empty).
inline std::string mutate_once(const std::string& text, FuzzRng& rng) {
    std::string s = text;
    std::vector<std::string> lines = split_lines(s);
    auto random_line = [&]() -> size_t { return rng.below(lines.size()); };
    // The value part of a `key: value` or `- value` line, as [begin, end) in that line.
    auto value_span = [](const std::string& line, size_t& b, size_t& e) {
        size_t colon = line.find(": ");
        size_t dash = line.find_first_not_of(' ');
        if (colon != std::string::npos) b = colon + 2;
        else if (dash != std::string::npos && line.compare(dash, 2, "- ") == 0) b = dash + 2;
        else return false;
        e = line.find(" #", b);
        if (e == std::string::npos) e = line.size();
        return b <= e;
    };
    switch (rng.below(20)) {
        case 0:  // delete a character
            if (!s.empty()) s.erase(rng.below(s.size()), 1);
            return s;
        case 1:  // duplicate a character
            if (!s.empty()) {
                size_t i = rng.below(s.size());
                s.insert(i, 1, s[i]);
            }
            return s;
        case 2:  // swap two neighbouring characters
            if (s.size() > 1) {
                size_t i = rng.below(s.size() - 1);
                std::swap(s[i], s[i + 1]);
            }
            return s;
        case 3:  // delete a line
            if (!lines.empty()) lines.erase(lines.begin() + static_cast<long>(random_line()));
            return join_lines(lines);
        case 4:  // duplicate a line
            if (!lines.empty()) {
                size_t i = random_line();
                lines.insert(lines.begin() + static_cast<long>(i), lines[i]);
            }
            return join_lines(lines);
        case 5:  // swap two lines
            if (lines.size() > 1) std::swap(lines[random_line()], lines[random_line()]);
            return join_lines(lines);
        case 6: {  // change a line's indentation
            if (lines.empty()) return s;
            std::string& l = lines[random_line()];
            size_t indent = l.find_first_not_of(' ');
            if (indent == std::string::npos) indent = l.size();
            if (rng.below(2) && indent > 0) l.erase(0, 1 + rng.below(indent));
            else l.insert(0, 1 + rng.below(4), ' ');
            return join_lines(lines);
        }
        case 7: case 8: case 9: {  // replace a value with another type or an extreme
            for (int tries = 0; tries < 8 && !lines.empty(); ++tries) {
                std::string& l = lines[random_line()];
                size_t b, e;
                if (!value_span(l, b, e)) continue;
                l.replace(b, e - b, rng.pick(fuzz_scalars()));
                break;
            }
            return join_lines(lines);
        }
        case 10: {  // a number nearby: off by one, doubled, halved, negated, zero
            for (int tries = 0; tries < 16 && !lines.empty(); ++tries) {
                std::string& l = lines[random_line()];
                size_t b, e;
                if (!value_span(l, b, e)) continue;
                std::string v = l.substr(b, e - b);
                char* end = nullptr;
                double d = std::strtod(v.c_str(), &end);
                if (v.empty() || end != v.c_str() + v.size()) continue;
                static const char* ops[] = {"+1", "-1", "*2", "/2", "neg", "0", "*1000"};
                std::string op = ops[rng.below(7)];
                double n = op == "+1" ? d + 1 : op == "-1" ? d - 1 : op == "*2" ? d * 2 : op == "/2" ? d / 2
                         : op == "neg" ? -d : op == "0" ? 0 : d * 1000;
                std::ostringstream os;
                os.precision(17);
                os << n;
                l.replace(b, e - b, os.str());
                break;
            }
            return join_lines(lines);
        }
        case 11: {  // rename a key
            for (int tries = 0; tries < 8 && !lines.empty(); ++tries) {
                std::string& l = lines[random_line()];
                size_t colon = l.find(':');
                size_t start = l.find_first_not_of(" -");
                if (colon == std::string::npos || start == std::string::npos || start >= colon || l[start] == '#') continue;
                std::string key = l.substr(start, colon - start);
                std::string renamed = rng.below(2) ? rng.pick(fuzz_keys()) : key;
                if (renamed == key && !key.empty()) renamed[rng.below(key.size())] = static_cast<char>('a' + rng.below(26));
                l.replace(start, colon - start, renamed);
                break;
            }
            return join_lines(lines);
        }
        case 12:  // truncate
            return s.substr(0, rng.below(s.size() + 1));
        case 13:  // insert a tab
            s.insert(rng.below(s.size() + 1), "\t");
            return s;
        case 14: {  // nest a value in a list or a map, or a map in a list
            for (int tries = 0; tries < 8 && !lines.empty(); ++tries) {
                std::string& l = lines[random_line()];
                size_t b, e;
                if (!value_span(l, b, e)) continue;
                std::string v = l.substr(b, e - b);
                static const char* wraps[][2] = {{"[", "]"}, {"{x: ", "}"}, {"[{a: ", "}]"}, {"[[", "]]"}, {"{", "}"}};
                const auto& w = wraps[rng.below(5)];
                l.replace(b, e - b, std::string(w[0]) + v + w[1]);
                break;
            }
            return join_lines(lines);
        }
        case 15: {  // a block under a scalar key, or a list item where a map entry was
            if (lines.empty()) return s;
            size_t i = random_line();
            std::string indent(lines[i].find_first_not_of(' ') == std::string::npos ? 0 : lines[i].find_first_not_of(' '), ' ');
            static const char* blocks[] = {"- 1", "- {depth: 3}", "  nested: 1", "-", "? complex", "<<: *a", "---",
                                           "...", "%TAG ! tag:x", "&a x: 1", "*a: 2"};
            lines.insert(lines.begin() + static_cast<long>(i + 1), indent + blocks[rng.below(11)]);
            return join_lines(lines);
        }
        case 16: {  // random bytes, NUL included
            std::string junk(1 + rng.below(8), '\0');
            for (auto& c : junk) c = static_cast<char>(rng.next());
            s.insert(rng.below(s.size() + 1), junk);
            return s;
        }
        case 17: {  // a real key of the schema, with an odd value, somewhere
            if (lines.empty()) return s;
            static const char* entries[] = {"depth: ", "model: ", "l3: ", "after_layers: ", "groups: ", "grid: ",
                                            "zip: ", "seeds: ", "set: ", "extends: ", "experiment: ", "graph: ",
                                            "l3_at_fraction: ", "total_batch_size: ", "window_pattern: "};
            size_t i = random_line();
            std::string indent(lines[i].find_first_not_of(' ') == std::string::npos ? 0 : lines[i].find_first_not_of(' '), ' ');
            lines.insert(lines.begin() + static_cast<long>(i), indent + entries[rng.below(15)] + rng.pick(fuzz_scalars()));
            return join_lines(lines);
        }
        case 18: {  // a long run of one character (deep nesting, long lines)
            static const char* runs[] = {"[", "{", "-", " ", "a", "9", "\n", ":"};
            const char* r = runs[rng.below(8)];
            size_t n = 1 + rng.below(3000);
            std::string run;
            for (size_t k = 0; k < n; ++k) run += r;
            s.insert(rng.below(s.size() + 1), run);
            return s;
        }
        default: {  // CRLF line ends, a BOM, or a comment marker in the middle of a line
            static const char* bits[] = {"\r\n", "\xEF\xBB\xBF", " #", "\r", "\v", "\f"};
            s.insert(rng.below(s.size() + 1), bits[rng.below(6)]);
            return s;
        }
    }
}

// 1 to 3 mutations.
inline std::string mutate(const std::string& text, FuzzRng& rng) {
    std::string s = text;
    const size_t n = 1 + rng.below(3);
    for (size_t i = 0; i < n; ++i) s = mutate_once(s, rng);
    return s;
}

}  // namespace l3lab::test
