#include "runner/sweep/cell_state.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "runner/data/sha256.h"
#include "runner/run/run_dir.h"
#include "runner/util/atomic_file.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace l3lab::sweep {

namespace {

fs::path state_dir(const Sweep& sweep) { return fs::path(sweep.sweep_dir()) / ".sweep"; }
fs::path lock_path(const Sweep& sweep, const Cell& cell) { return state_dir(sweep) / (cell.dir + ".lock"); }
fs::path attempts_path(const Sweep& sweep, const Cell& cell) { return state_dir(sweep) / (cell.dir + ".attempts"); }

std::string read_text(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream buffer;
    buffer << in.rdbuf();
    return buffer.str();
}

std::string hostname() {
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    return host;
}

// One whole line per write(2) with O_APPEND: concurrent writers never interleave within a line.
void append_line(const fs::path& path, const json& record) {
    fs::create_directories(path.parent_path());
    const std::string line = record.dump() + "\n";
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) throw std::runtime_error(path.string() + ": cannot open: " + std::strerror(errno));
    ssize_t n = ::write(fd, line.data(), line.size());
    int saved = errno;
    ::fsync(fd);
    ::close(fd);
    if (n != static_cast<ssize_t>(line.size()))
        throw std::runtime_error(path.string() + ": cannot append: " + std::strerror(saved));
}

std::vector<Attempt> read_attempts(const fs::path& path) {
    std::vector<Attempt> attempts;
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
        json r;
        try {
            r = json::parse(line);
        } catch (const json::exception&) {
            continue;  // a line torn by a crash
        }
        if (r.contains("start")) {
            Attempt a;
            a.start = r.value("start", "");
            a.host = r.value("host", "");
            a.pid = r.value("pid", 0LL);
            attempts.push_back(a);
        } else if (r.contains("end") && !attempts.empty() && !attempts.back().exit_code) {
            Attempt& a = attempts.back();
            a.end = r.value("end", "");
            a.seconds = r.value("seconds", 0.0);
            a.exit_code = r.value("exit_code", -1);
            a.error = r.value("error", "");
        }
    }
    return attempts;
}

}  // namespace

const char* to_string(CellState state) {
    switch (state) {
        case CellState::Pending: return "pending";
        case CellState::Running: return "running";
        case CellState::Interrupted: return "interrupted";
        case CellState::Completed: return "completed";
        case CellState::Failed: return "failed";
    }
    return "?";
}

std::string iso_now() {
    std::time_t now = std::time(nullptr);
    std::tm utc{};
    gmtime_r(&now, &utc);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &utc);
    return buf;
}

std::string cell_run_dir(const Sweep& sweep, const Cell& cell) { return (fs::path(sweep.sweep_dir()) / cell.dir).string(); }

std::string cell_log_path(const Sweep& sweep, const Cell& cell) {
    return (fs::path(sweep.sweep_dir()) / "logs" / (cell.dir + ".log")).string();
}

CellStatus read_cell_status(const Sweep& sweep, const Cell& cell, bool holding_lock) {
    CellStatus s;
    s.run_dir = cell_run_dir(sweep, cell);
    s.num_iterations = cell.plan.num_iterations;
    s.attempts = read_attempts(attempts_path(sweep, cell));
    const bool has_run = run::is_run_dir(s.run_dir);
    std::optional<run::Status> status = has_run ? run::read_status(s.run_dir) : std::nullopt;
    if (status) s.step = status->step;
    if (has_run) {
        const std::string frozen = read_text(fs::path(s.run_dir) / "config.yaml");
        s.config_changed = data::sha256_hex(frozen).substr(0, cell.id.size()) != cell.id;
    }
    if (!holding_lock && cell_locked(sweep, cell)) {
        s.state = CellState::Running;
    } else if (status && status->state == "completed") {
        s.state = CellState::Completed;
    } else if (status && status->state == "failed") {
        s.state = CellState::Failed;
        s.last_error = status->last_error;
    } else if (has_run) {
        s.state = CellState::Interrupted;
    } else if (!s.attempts.empty() && s.attempts.back().exit_code && *s.attempts.back().exit_code != 0) {
        s.state = CellState::Failed;  // refused before its run directory existed (e.g. bad data)
    }
    if (s.last_error.empty() && s.state == CellState::Failed && !s.attempts.empty())
        s.last_error = s.attempts.back().error;
    return s;
}

std::optional<CellLock> CellLock::try_acquire(const Sweep& sweep, const Cell& cell) {
    const fs::path path = lock_path(sweep, cell);
    fs::create_directories(path.parent_path());
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) throw std::runtime_error(path.string() + ": cannot open the cell lock: " + std::strerror(errno));
    struct flock lock{};
    lock.l_type = F_WRLCK;
    lock.l_whence = SEEK_SET;
    if (::fcntl(fd, F_OFD_SETLK, &lock) != 0) {
        int saved = errno;
        ::close(fd);
        if (saved == EAGAIN || saved == EACCES) return std::nullopt;
        throw std::runtime_error(path.string() + ": cannot lock: " + std::strerror(saved));
    }
    return CellLock(fd);
}

CellLock::CellLock(CellLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }

CellLock& CellLock::operator=(CellLock&& other) noexcept {
    if (this != &other) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = other.fd_;
        other.fd_ = -1;
    }
    return *this;
}

CellLock::~CellLock() {
    if (fd_ >= 0) ::close(fd_);
}

bool cell_locked(const Sweep& sweep, const Cell& cell) {
    const fs::path path = lock_path(sweep, cell);
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;  // never claimed
    struct flock lock{};
    lock.l_type = F_WRLCK;
    lock.l_whence = SEEK_SET;
    bool locked = ::fcntl(fd, F_OFD_GETLK, &lock) == 0 && lock.l_type != F_UNLCK;
    ::close(fd);
    return locked;
}

void record_attempt_start(const Sweep& sweep, const Cell& cell, long long pid) {
    append_line(attempts_path(sweep, cell), {{"start", iso_now()}, {"host", hostname()}, {"pid", pid}});
}

void record_attempt_end(const Sweep& sweep, const Cell& cell, int exit_code, double seconds, const std::string& error) {
    append_line(attempts_path(sweep, cell),
                {{"end", iso_now()}, {"exit_code", exit_code}, {"seconds", seconds}, {"error", error}});
}

void write_manifest(const Sweep& sweep) {
    // JSON strings are YAML double-quoted scalars: every value below reads back verbatim.
    auto q = [](const std::string& s) { return json(s).dump(); };
    std::ostringstream out;
    out << "# The cells of sweep " << q(sweep.name) << ": index -> id, run directory, overrides.\n"
        << "# Written by l3lab sweep run|slurm|collect; the state of each cell is in its run directory.\n"
        << "name: " << q(sweep.name) << "\n"
        << "source: " << q(fs::absolute(sweep.source).lexically_normal().string()) << "\n"
        << "experiment: " << q(fs::absolute(sweep.experiment).lexically_normal().string()) << "\n"
        << "on_failure: " << sweep.on_failure << "\n"
        << "swept_keys: [";
    for (size_t i = 0; i < sweep.swept_keys.size(); ++i) out << (i ? ", " : "") << q(sweep.swept_keys[i]);
    out << "]\ncells:\n";
    for (const auto& cell : sweep.cells) {
        out << "  - index: " << cell.index << "\n    id: " << q(cell.id) << "\n    dir: " << q(cell.dir)
            << "\n    overrides:";
        if (cell.overrides.empty()) out << " []";
        out << "\n";
        for (const auto& o : cell.overrides) out << "      - " << q(o) << "\n";
    }
    fs::create_directories(sweep.sweep_dir());
    util::write_file_atomic((fs::path(sweep.sweep_dir()) / "manifest.yaml").string(), out.str());
}

}  // namespace l3lab::sweep
