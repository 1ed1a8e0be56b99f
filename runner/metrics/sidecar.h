// metrics.jsonl: one JSON object per line, the first a header
//   {"kind":"header","format":"l3lab-metrics","version":1,"config_yaml":...,"provenance_json":...}
// then records {"kind":"train","step":..,"loss":..,...}, {"kind":"val",...}, {"kind":"sample",...},
// {"kind":"core","step":..,"core_metric":..,"tasks":[{"task":..,"accuracy":..,"centered":..},...]} in the
// order they were logged. Lines are only ever appended (or the whole file replaced atomically), so after
// a crash the file is every complete line plus at most one torn line at the end, which readers ignore.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <variant>

#include "runner/metrics/metrics.h"

namespace l3lab::metrics::detail {

using Record = std::variant<TrainRecord, ValRecord, Sample, CoreRecord>;

int64_t step_of(const Record& record);

// Each line ends with '\n'.
std::string header_line(const Attributes& attributes);
// `wall_time` (seconds since the epoch, > 0) is kept in the line for the TensorBoard view's rebuilds.
std::string record_line(const Record& record, double wall_time = 0);

// Calls `on_record(record, line)` for every complete record line (the line without its '\n'), in file
// order, and returns the header's attributes. Lines of a kind this version does not know are skipped.
Attributes parse_sidecar(const std::filesystem::path& path,
                         const std::function<void(Record&&, std::string_view line)>& on_record);

// UTF-8 as JSON and HDF5 can both hold it: invalid bytes and NULs become U+FFFD.
std::string clean_utf8(const std::string& text);

// Writes `text` to `<path>.tmp-<pid>`, fsyncs it, renames it over `path` and fsyncs the directory.
void write_file_atomically(const std::filesystem::path& path, const std::string& text);

// The open sidecar of a writer, appended to with write(2).
class SidecarAppender {
public:
    explicit SidecarAppender(const std::filesystem::path& path);
    ~SidecarAppender();
    SidecarAppender(const SidecarAppender&) = delete;
    SidecarAppender& operator=(const SidecarAppender&) = delete;

    // Appends and fsyncs. On failure the file is cut back to its previous length (so a retry does not
    // duplicate lines) and a MetricsError is thrown.
    void append_durably(const std::string& text);

private:
    std::filesystem::path path_;
    int fd_ = -1;
    off_t size_ = 0;
};

}  // namespace l3lab::metrics::detail
