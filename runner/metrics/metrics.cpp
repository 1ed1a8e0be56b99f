#include "runner/metrics/metrics.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "runner/metrics/columns.h"
#include "runner/metrics/h5view.h"
#include "runner/metrics/sidecar.h"
#include "runner/metrics/tensorboard.h"
#include "runner/util/fault.h"

namespace l3lab::metrics {

namespace fs = std::filesystem;
using namespace detail;

MetricsError::MetricsError(const fs::path& path, const std::string& problem)
    : std::runtime_error(path.string() + ": " + problem) {}

namespace {

using Clock = std::chrono::steady_clock;

double wall_clock() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// A kept sidecar record with the wall time its line carries (0 for lines written before it did).
TimedRecord timed(const Record& record, std::string_view line) {
    TimedRecord t;
    if (auto* r = std::get_if<TrainRecord>(&record)) t.kind = TimedRecord::Kind::Train, t.train = *r;
    else if (auto* v = std::get_if<ValRecord>(&record)) t.kind = TimedRecord::Kind::Val, t.val = *v;
    else if (auto* c = std::get_if<CoreRecord>(&record)) t.kind = TimedRecord::Kind::Core, t.core = *c;
    else t.kind = TimedRecord::Kind::Sample, t.sample = std::get<Sample>(record);
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("wall_time") && j["wall_time"].is_number()) t.wall_time = j["wall_time"].get<double>();
    return t;
}

// An exclusive flock on RUN_DIR/metrics.lock, which holds the owner's pid. The kernel drops the lock when
// the owner dies, SIGKILL included, so a crashed writer never blocks the next one.
class RunLock {
public:
    explicit RunLock(const fs::path& run_dir) : path_(run_dir / kLockFile) {
        fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd_ < 0) throw MetricsError(path_, std::string("cannot open the lock file: ") + std::strerror(errno));
        if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
            char pid[32] = {};
            ssize_t n = ::pread(fd_, pid, sizeof pid - 1, 0);
            ::close(fd_);
            std::string owner = n > 0 ? std::string(pid, static_cast<size_t>(n)) : std::string("?");
            while (!owner.empty() && owner.back() == '\n') owner.pop_back();
            throw MetricsError(run_dir, "another process (pid " + owner + ") is writing these metrics");
        }
        const std::string pid = std::to_string(::getpid()) + "\n";
        if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) < 0) {
            // The pid is only there for the error message above; the lock itself is held.
        }
    }
    ~RunLock() { ::close(fd_); }
    RunLock(const RunLock&) = delete;
    RunLock& operator=(const RunLock&) = delete;

private:
    fs::path path_;
    int fd_ = -1;
};

// Temporaries a killed writer left behind. Only the lock holder creates them, so they are all stale.
void remove_stale_temporaries(const fs::path& run_dir) {
    const std::string prefixes[] = {std::string(kSidecarFile) + ".tmp-", std::string(kViewFile) + ".tmp-"};
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(run_dir, ec)) {
        const std::string name = entry.path().filename().string();
        for (const auto& prefix : prefixes)
            if (name.starts_with(prefix)) fs::remove(entry.path(), ec);
    }
}

void add(MetricsLog& log, Record&& record) {
    if (auto* t = std::get_if<TrainRecord>(&record))
        log.train.push_back(*t);
    else if (auto* v = std::get_if<ValRecord>(&record))
        log.val.push_back(*v);
    else if (auto* c = std::get_if<CoreRecord>(&record))
        log.core.push_back(std::move(*c));
    else
        log.samples.push_back(std::move(std::get<Sample>(record)));
}

// Writes `log` to a fresh view beside `view_path`; renames it into place once it is complete, so a
// reader never opens a half-built view. With `swmr`, the returned view stays open for appends.
std::unique_ptr<H5View> build_view(const fs::path& view_path, const MetricsLog& log, bool swmr) {
    const fs::path tmp = view_path.string() + ".tmp-" + std::to_string(::getpid());
    try {
        auto view = H5View::create(tmp, log);
        if (swmr)
            view->start_swmr_write();
        else
            view->close();
        if (::rename(tmp.c_str(), view_path.c_str()) != 0)
            throw MetricsError(view_path, "cannot rename " + tmp.string() + " over it: " + std::strerror(errno));
        return swmr ? std::move(view) : nullptr;
    } catch (...) {
        ::unlink(tmp.c_str());
        throw;
    }
}

}  // namespace

struct MetricsWriter::Impl {
    Impl(const fs::path& run_dir, const WriterOptions& options)
        : sidecar_path(run_dir / kSidecarFile), view_path(run_dir / kViewFile), options(options), lock(run_dir) {}

    fs::path sidecar_path, view_path;
    WriterOptions options;
    RunLock lock;
    std::unique_ptr<SidecarAppender> sidecar;
    std::unique_ptr<H5View> view;  // null once an HDF5 failure has been reported
    std::unique_ptr<TensorBoardWriter> tb;  // null without options.tensorboard, or after a failure

    // Records since the last flush: as sidecar lines and as rows for the view.
    std::string pending_lines;
    std::vector<TrainRecord> pending_train;
    std::vector<ValRecord> pending_val;
    std::vector<Sample> pending_samples;
    std::vector<CoreRecord> pending_core;

    std::optional<int64_t> last_train, last_val, last_sample, last_core;
    int64_t min_step = 0;  // the resume step: the resumed loop logs nothing before it
    Clock::time_point last_flush = Clock::now();

    void check_step(const char* kind, int64_t step, std::optional<int64_t>& last, bool strictly) const {
        if (step < min_step)
            throw MetricsError(sidecar_path, std::string(kind) + " step " + std::to_string(step) +
                                                 " is before the step the run resumed at (" + std::to_string(min_step) +
                                                 ")");
        if (last && (strictly ? step <= *last : step < *last))
            throw MetricsError(sidecar_path, std::string(kind) + " step " + std::to_string(step) +
                                                 " logged after step " + std::to_string(*last) +
                                                 ": steps must increase");
        last = step;
    }

    // The TensorBoard view is a convenience: a failure (a full disk) is reported once on stderr and the
    // view abandoned; the sidecar, the source of truth, goes on, and the next open rebuilds the view.
    template <class F>
    void to_tensorboard(F&& write) {
        if (!tb) return;
        try {
            write(*tb);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "warning: TensorBoard events no longer written: %s\n", e.what());
            tb.reset();
        }
    }

    void flush() {
        last_flush = Clock::now();
        to_tensorboard([](TensorBoardWriter& w) { w.flush(); });
        if (pending_lines.empty()) return;
        sidecar->append_durably(pending_lines);  // on failure everything stays pending, for a retry
        pending_lines.clear();
        fault::point("metrics:after-sidecar");  // the records are durable; the view lags until the next open
        auto train = std::move(pending_train);
        auto val = std::move(pending_val);
        auto samples = std::move(pending_samples);
        auto core = std::move(pending_core);
        pending_train.clear(), pending_val.clear(), pending_samples.clear(), pending_core.clear();
        if (!view) return;
        try {
            view->append(train, val, samples, core);
        } catch (...) {
            view.reset();  // the sidecar holds these records; recover() or the next open rebuilds the view
            throw;
        }
    }
};

MetricsWriter::MetricsWriter(const fs::path& run_dir, const Attributes& attributes, const WriterOptions& options) {
    if (!fs::is_directory(run_dir))
        throw MetricsError(run_dir, "not a directory (the run directory must exist before its metrics)");
    if (options.resume_at_step && *options.resume_at_step < 0)
        throw MetricsError(run_dir, "resume step " + std::to_string(*options.resume_at_step) + " is negative");
    auto impl = std::make_unique<Impl>(run_dir, options);
    remove_stale_temporaries(run_dir);

    MetricsLog log;
    log.attributes = {clean_utf8(attributes.config_yaml), clean_utf8(attributes.provenance_json)};
    std::string text = header_line(log.attributes);
    std::vector<TimedRecord> kept;  // for the TensorBoard view
    if (options.resume_at_step) {
        const int64_t k = *options.resume_at_step;
        impl->min_step = k;
        if (fs::exists(impl->sidecar_path)) {
            parse_sidecar(impl->sidecar_path, [&](Record&& record, std::string_view line) {
                if (step_of(record) >= k) return;  // the resumed loop logs it again
                text.append(line).push_back('\n');
                if (options.tensorboard) kept.push_back(timed(record, line));
                add(log, std::move(record));
            });
        }
    } else if (fs::exists(impl->sidecar_path)) {
        throw MetricsError(impl->sidecar_path,
                           "the run directory already holds metrics: resume it (resume_at_step) or use a new one");
    }
    write_file_atomically(impl->sidecar_path, text);
    if (options.resume_at_step) fault::point("metrics:resume-rewrite");  // the sidecar is cut, the view is stale
    impl->sidecar = std::make_unique<SidecarAppender>(impl->sidecar_path);
    impl->view = build_view(impl->view_path, log, /*swmr=*/true);
    if (options.tensorboard) impl->tb = std::make_unique<TensorBoardWriter>(run_dir / kTensorBoardDir, log.attributes, kept);

    if (!log.train.empty()) impl->last_train = log.train.back().step;
    if (!log.val.empty()) impl->last_val = log.val.back().step;
    if (!log.samples.empty()) impl->last_sample = log.samples.back().step;
    if (!log.core.empty()) impl->last_core = log.core.back().step;
    impl->last_flush = Clock::now();
    impl_ = std::move(impl);
}

MetricsWriter::~MetricsWriter() {
    try {
        close();
    } catch (...) {
    }
}

MetricsWriter::MetricsWriter(MetricsWriter&&) noexcept = default;
MetricsWriter& MetricsWriter::operator=(MetricsWriter&& other) noexcept {
    if (this != &other) {
        try {
            close();  // what this writer still buffers is flushed, not dropped
        } catch (...) {
        }
        impl_ = std::move(other.impl_);
    }
    return *this;
}

MetricsWriter::Impl& MetricsWriter::live() const {
    if (!impl_) throw std::logic_error("metrics: the writer is closed");
    return *impl_;
}

void MetricsWriter::train(const TrainRecord& record) {
    Impl& m = live();
    TrainRecord r = record;
    for (const TrainColumn& c : kTrainColumns)
        if (auto* member = std::get_if<double TrainRecord::*>(&c.member)) r.*(*member) = finite_or_nan(r.*(*member));
    m.check_step("train", r.step, m.last_train, /*strictly=*/true);
    const double now = wall_clock();
    m.pending_lines += record_line(r, now);
    m.pending_train.push_back(r);
    m.to_tensorboard([&](TensorBoardWriter& tb) {
        tb.train(r, now);
        tb.flush_every(m.options.tensorboard_flush_interval);
    });
    if (Clock::now() - m.last_flush >= m.options.flush_interval) m.flush();
}

void MetricsWriter::val(const ValRecord& record) {
    Impl& m = live();
    ValRecord r{record.step, finite_or_nan(record.bpb), record.loss};
    if (r.loss && !std::isfinite(*r.loss)) r.loss.reset();
    m.check_step("val", r.step, m.last_val, /*strictly=*/true);
    const double now = wall_clock();
    m.pending_lines += record_line(r, now);
    m.pending_val.push_back(r);
    m.to_tensorboard([&](TensorBoardWriter& tb) { tb.val(r, now); });
    m.flush();
}

void MetricsWriter::sample(const Sample& sample) {
    Impl& m = live();
    Sample s{sample.step, clean_utf8(sample.prompt), clean_utf8(sample.text)};
    m.check_step("sample", s.step, m.last_sample, /*strictly=*/false);
    const double now = wall_clock();
    m.pending_lines += record_line(s, now);
    m.to_tensorboard([&](TensorBoardWriter& tb) { tb.sample(s, now); });
    m.pending_samples.push_back(std::move(s));
    m.flush();
}

void MetricsWriter::core(const CoreRecord& record) {
    Impl& m = live();
    CoreRecord r{record.step, finite_or_nan(record.core_metric), {}};
    for (const CoreTaskRecord& t : record.tasks)
        r.tasks.push_back({clean_utf8(t.task), finite_or_nan(t.accuracy), finite_or_nan(t.centered)});
    m.check_step("core", r.step, m.last_core, /*strictly=*/true);
    const double now = wall_clock();
    m.pending_lines += record_line(r, now);
    m.to_tensorboard([&](TensorBoardWriter& tb) { tb.core(r, now); });
    m.pending_core.push_back(std::move(r));
    m.flush();
}

void MetricsWriter::flush() { live().flush(); }

void MetricsWriter::close() {
    if (!impl_) return;
    std::unique_ptr<Impl> impl = std::move(impl_);  // closed and unlocked whatever happens below
    impl->flush();
    if (impl->view) impl->view->close();
}

std::optional<int64_t> MetricsWriter::last_train_step() const { return live().last_train; }

MetricsLog read_metrics(const fs::path& run_dir) {
    MetricsLog log;
    log.attributes =
        parse_sidecar(run_dir / kSidecarFile, [&](Record&& r, std::string_view) { add(log, std::move(r)); });
    return log;
}

MetricsLog recover(const fs::path& run_dir) {
    RunLock lock(run_dir);
    remove_stale_temporaries(run_dir);
    MetricsLog log = read_metrics(run_dir);
    build_view(run_dir / kViewFile, log, /*swmr=*/false);
    return log;
}

}  // namespace l3lab::metrics
