#include "runner/metrics/sidecar.h"

#include "runner/util/atomic_file.h"
#include "runner/util/fault.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>

#include "runner/metrics/columns.h"

namespace l3lab::metrics::detail {

namespace {

using nlohmann::ordered_json;
namespace fs = std::filesystem;

constexpr const char* kFormat = "l3lab-metrics";
constexpr int kVersion = 1;

std::string errno_str() { return std::strerror(errno); }

std::string dump_line(const ordered_json& j) {
    // Strings are cleaned before they get here; `replace` only guards against a missed one.
    return j.dump(-1, ' ', false, ordered_json::error_handler_t::replace) + '\n';
}

double number_or_nan(const nlohmann::json& j, const char* key) {
    auto it = j.find(key);
    return it == j.end() || it->is_null() ? kNaN : it->get<double>();
}

Record parse_record(const nlohmann::json& j, const std::string& kind) {
    if (kind == "train") {
        TrainRecord r;
        for (const TrainColumn& c : kTrainColumns) {
            if (auto* m = std::get_if<int64_t TrainRecord::*>(&c.member))
                r.*(*m) = j.value(c.name, int64_t{0});
            else
                r.*std::get<double TrainRecord::*>(c.member) = number_or_nan(j, c.name);
        }
        r.step = j.at("step").get<int64_t>();
        return r;
    }
    if (kind == "val") {
        ValRecord r{j.at("step").get<int64_t>(), number_or_nan(j, "bpb"), std::nullopt};
        if (auto it = j.find("loss"); it != j.end() && !it->is_null()) r.loss = it->get<double>();
        return r;
    }
    if (kind == "core") {
        CoreRecord r{j.at("step").get<int64_t>(), number_or_nan(j, "core_metric"), {}};
        for (const auto& t : j.at("tasks"))
            r.tasks.push_back({t.at("task").get<std::string>(), number_or_nan(t, "accuracy"), number_or_nan(t, "centered")});
        return r;
    }
    return Sample{j.at("step").get<int64_t>(), j.at("prompt").get<std::string>(), j.at("text").get<std::string>()};
}

class Fd {
public:
    explicit Fd(int fd) : fd_(fd) {}
    ~Fd() {
        if (fd_ >= 0) ::close(fd_);
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    int get() const { return fd_; }
    int release() { return std::exchange(fd_, -1); }

private:
    int fd_;
};

void write_all(const fs::path& path, int fd, const std::string& text) {
    const char* p = text.data();
    size_t left = text.size();
    while (left > 0) {
        ssize_t put = ::write(fd, p, left);
        if (put < 0 && errno == EINTR) continue;
        if (put < 0) throw MetricsError(path, "write failed: " + errno_str());
        p += put;
        left -= static_cast<size_t>(put);
    }
}


}  // namespace

int64_t step_of(const Record& record) {
    return std::visit([](const auto& r) { return r.step; }, record);
}

std::string header_line(const Attributes& attributes) {
    ordered_json j;
    j["kind"] = "header";
    j["format"] = kFormat;
    j["version"] = kVersion;
    j["config_yaml"] = attributes.config_yaml;
    j["provenance_json"] = attributes.provenance_json;
    return dump_line(j);
}

std::string record_line(const Record& record, double wall_time) {
    ordered_json j;
    if (auto* r = std::get_if<TrainRecord>(&record)) {
        j["kind"] = "train";
        for (const TrainColumn& c : kTrainColumns) std::visit([&](auto member) { j[c.name] = (*r).*member; }, c.member);
    } else if (auto* v = std::get_if<ValRecord>(&record)) {
        j["kind"] = "val";
        j["step"] = v->step;
        j["bpb"] = v->bpb;
        if (v->loss) j["loss"] = *v->loss;
    } else if (auto* c = std::get_if<CoreRecord>(&record)) {
        j["kind"] = "core";
        j["step"] = c->step;
        j["core_metric"] = c->core_metric;
        j["tasks"] = ordered_json::array();
        for (const CoreTaskRecord& t : c->tasks)
            j["tasks"].push_back(ordered_json{{"task", t.task}, {"accuracy", t.accuracy}, {"centered", t.centered}});
    } else {
        const auto& s = std::get<Sample>(record);
        j["kind"] = "sample";
        j["step"] = s.step;
        j["prompt"] = s.prompt;
        j["text"] = s.text;
    }
    if (wall_time > 0) j["wall_time"] = wall_time;
    return dump_line(j);
}

Attributes parse_sidecar(const fs::path& path, const std::function<void(Record&&, std::string_view)>& on_record) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw MetricsError(path, "cannot open: " + errno_str());
    std::ostringstream buffer;
    buffer << in.rdbuf();
    const std::string text = std::move(buffer).str();

    Attributes attributes;
    size_t begin = 0, line_no = 0;
    // A last line without its '\n' is a write a crash cut short: the records before it are all there is.
    for (size_t end; (end = text.find('\n', begin)) != std::string::npos; begin = end + 1) {
        ++line_no;
        const std::string_view line(text.data() + begin, end - begin);
        auto where = [&] { return "line " + std::to_string(line_no) + ": "; };
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception& e) {
            throw MetricsError(path, where() + "not a JSON object (" + e.what() + ")");
        }
        if (!j.is_object() || !j.contains("kind") || !j["kind"].is_string())
            throw MetricsError(path, where() + "a record needs a string \"kind\"");
        const std::string kind = j["kind"].get<std::string>();
        try {
            if (line_no == 1) {
                if (kind != "header" || j.value("format", "") != kFormat)
                    throw MetricsError(path, where() + "the first line must be the l3lab-metrics header");
                if (j.value("version", 0) > kVersion)
                    throw MetricsError(path, where() + "format version " + std::to_string(j.value("version", 0)) +
                                                 " is newer than this l3lab reads (" + std::to_string(kVersion) + ")");
                attributes = {j.value("config_yaml", ""), j.value("provenance_json", "")};
            } else if (kind == "train" || kind == "val" || kind == "sample" || kind == "core") {
                on_record(parse_record(j, kind), line);
            }
        } catch (const nlohmann::json::exception& e) {
            throw MetricsError(path, where() + kind + " record: " + e.what());
        }
    }
    if (line_no == 0) throw MetricsError(path, "no header line: the file is empty or was cut short");
    return attributes;
}

std::string clean_utf8(const std::string& text) {
    std::string clean = nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    clean = nlohmann::json::parse(clean).get<std::string>();
    std::string out;
    out.reserve(clean.size());
    for (char c : clean) {
        if (c == '\0')
            out += "\xEF\xBF\xBD";
        else
            out += c;
    }
    return out;
}

void write_file_atomically(const fs::path& path, const std::string& text) {
    try {
        util::write_file_atomic(path.string(), text);
    } catch (const std::runtime_error& e) {
        throw MetricsError(path, e.what());
    }
}

SidecarAppender::SidecarAppender(const fs::path& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd_ < 0) throw MetricsError(path, "cannot open for appending: " + errno_str());
    struct stat st {};
    if (::fstat(fd_, &st) != 0) {
        ::close(fd_);
        throw MetricsError(path, "cannot stat: " + errno_str());
    }
    size_ = st.st_size;
}

SidecarAppender::~SidecarAppender() {
    if (fd_ >= 0) ::close(fd_);
}

void SidecarAppender::append_durably(const std::string& text) {
    try {
        if (fault::active()) {  // a test hook may kill the process between the two halves: a torn line
            write_all(path_, fd_, text.substr(0, text.size() / 2));
            fault::point("metrics:mid-sidecar");
            write_all(path_, fd_, text.substr(text.size() / 2));
        } else {
            write_all(path_, fd_, text);
        }
        if (::fsync(fd_) != 0) throw MetricsError(path_, "fsync failed: " + errno_str());
    } catch (...) {
        if (::ftruncate(fd_, size_) != 0) {
            // The torn tail stays; readers skip a last line without '\n', but the next append would
            // glue onto it, so say so.
            throw MetricsError(path_, "an append failed and cutting the file back failed too: " + errno_str());
        }
        throw;
    }
    size_ += static_cast<off_t>(text.size());
}

}  // namespace l3lab::metrics::detail
