#include "runner/sweep/supervisor.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "runner/run/run_dir.h"
#include "runner/sweep/cell_state.h"
#include "runner/util/format.h"
#include "runner/util/progress.h"

namespace fs = std::filesystem;

namespace l3lab::sweep {

namespace {

volatile sig_atomic_t g_stop_signal = 0;

void on_stop_signal(int signal) { g_stop_signal = signal; }

// Stop signals interrupt waitpid (no SA_RESTART) so that they are forwarded at once.
struct SignalGuard {
    struct sigaction old_term{}, old_int{}, old_usr1{};
    SignalGuard() {
        g_stop_signal = 0;
        struct sigaction action{};
        action.sa_handler = on_stop_signal;
        sigemptyset(&action.sa_mask);
        sigaction(SIGTERM, &action, &old_term);
        sigaction(SIGINT, &action, &old_int);
        sigaction(SIGUSR1, &action, &old_usr1);
    }
    ~SignalGuard() {
        sigaction(SIGTERM, &old_term, nullptr);
        sigaction(SIGINT, &old_int, nullptr);
        sigaction(SIGUSR1, &old_usr1, nullptr);
    }
};

std::string self_executable() {
    std::error_code ec;
    fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    if (ec) throw std::runtime_error("cannot find the l3lab executable (/proc/self/exe): " + ec.message());
    return exe.string();
}

// What the failed process said last, from its log after `offset`: its last three lines, without the
// closing "N errors in the configuration" count (a refused config prints its located errors above it).
std::string attempt_error(const std::string& log, std::streamoff offset) {
    static const std::regex count_line(R"(^(\[rank \d+\] )?\d+ errors? in the configuration.*)");
    std::ifstream in(log, std::ios::binary);
    in.seekg(offset);
    std::deque<std::string> last;
    std::string line;
    while (std::getline(in, line)) {
        while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
        if (line.empty() || line.rfind("====", 0) == 0 || std::regex_match(line, count_line)) continue;
        last.push_back(line);
        if (last.size() > 3) last.pop_front();
    }
    std::string error;
    for (const auto& l : last) error += (error.empty() ? "" : " | ") + l;
    return error.size() > 600 ? error.substr(0, 600) + "..." : error;
}

struct Job {
    const Cell* cell;
    CellLock lock;
    size_t slot;
    std::string log;
    std::streamoff log_offset;
    std::chrono::steady_clock::time_point start;
};

class Supervisor {
public:
    Supervisor(const Sweep& sweep, const RunOptions& options, std::ostream& out)
        : sweep_(sweep), options_(options), out_(out),
          executable_(options.executable.empty() ? self_executable() : options.executable),
          free_slots_(static_cast<size_t>(options.jobs)) {
        for (size_t i = 0; i < free_slots_.size(); ++i) free_slots_[i] = i;
        std::set<int> selected(options.cells.begin(), options.cells.end());
        for (const auto& cell : sweep.cells)
            if (selected.empty() || selected.count(cell.index)) queue_.push_back(&cell);
    }

    int run() {
        SignalGuard guard;
        write_manifest(sweep_);
        say("sweep " + sweep_.name + ": " + std::to_string(queue_.size()) + " cell(s) in " + sweep_.sweep_dir() +
            ", " + std::to_string(options_.jobs) + " at a time");
        // Cells done of this run's cells, with the rate and time left: a bar on a terminal, else a line
        // every 10 s; the clock drives it while the supervisor waits for its children.
        util::ProgressOptions shown;
        shown.ticker = true;
        shown.plain_line = [this](const std::string& line) { out_ << line << std::endl; };
        progress_ = std::make_unique<util::Progress>("sweep " + sweep_.name, static_cast<int64_t>(queue_.size()), "cells", shown);
        for (;;) {
            if (g_stop_signal && !forwarded_) forward_stop();
            while (!g_stop_signal && !aborting_ && jobs_.size() < static_cast<size_t>(options_.jobs) && !queue_.empty()) {
                const Cell* cell = queue_.front();
                queue_.pop_front();
                consider(*cell);
            }
            if (jobs_.empty()) break;
            int status = 0;
            pid_t pid = ::waitpid(-1, &status, 0);
            if (pid < 0) {
                if (errno == EINTR) continue;
                throw std::runtime_error(std::string("waitpid: ") + std::strerror(errno));
            }
            auto it = jobs_.find(pid);
            if (it == jobs_.end()) continue;
            finish(it->second, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
            free_slots_.push_back(it->second.slot);
            jobs_.erase(it);
        }
        progress_->finish();
        return summarise();
    }

private:
    void say(const std::string& line) {
        if (progress_) progress_->print_above([&] { out_ << line << std::endl; });
        else out_ << line << std::endl;
    }
    // Cells this process is done with, whatever their outcome.
    void count_done() {
        if (progress_)
            progress_->set(static_cast<int64_t>(completed_.size() + failed_.size() + interrupted_.size() + elsewhere_.size()));
    }
    std::string label(const Cell& cell) const { return "cell " + cell.dir; }

    // Claims the cell, decides from its files what to do, and starts its training if there is any.
    void consider(const Cell& cell) {
        std::optional<CellLock> lock = CellLock::try_acquire(sweep_, cell);
        if (!lock) {
            say(label(cell) + ": running in another process, left to it");
            elsewhere_.insert(cell.index);
            count_done();
            return;
        }
        // Decided under the lock: another process may have finished it since the queue was made.
        CellStatus status = read_cell_status(sweep_, cell, /*holding_lock=*/true);
        if (status.state == CellState::Completed) {
            say(label(cell) + ": completed, skipped" +
                (status.config_changed ? " (its frozen config differs from this sweep file's)" : ""));
            completed_.insert(cell.index);
            count_done();
            return;
        }
        if (status.state == CellState::Failed && !options_.retry_failed) {
            say(label(cell) + ": failed earlier (" + status.last_error + "), skipped; --retry-failed reruns it");
            failed_.insert(cell.index);
            count_done();
            return;
        }
        const std::string run_dir = cell_run_dir(sweep_, cell);
        // A directory made by an attempt killed before it wrote its config holds nothing to keep.
        if (fs::exists(run_dir) && !run::is_run_dir(run_dir) && !fs::exists(fs::path(run_dir) / "checkpoints"))
            fs::remove_all(run_dir);
        launch(cell, std::move(*lock), status);
    }

    void launch(const Cell& cell, CellLock lock, const CellStatus& status) {
        const std::string log = cell_log_path(sweep_, cell);
        fs::create_directories(fs::path(log).parent_path());
        std::vector<std::string> args;
        if (options_.srun_tasks > 0)
            args = {"srun", "--ntasks=" + std::to_string(options_.srun_tasks), "--kill-on-bad-exit=1", executable_};
        else
            args = {executable_};
        args.insert(args.end(), {"train", sweep_.experiment});
        args.insert(args.end(), cell.overrides.begin(), cell.overrides.end());
        args.insert(args.end(), {"--run-dir", cell_run_dir(sweep_, cell), "--resume", "auto"});

        const size_t slot = free_slots_.front();
        free_slots_.erase(free_slots_.begin());
        std::streamoff offset = 0;
        {
            std::ofstream header(log, std::ios::app);
            header.seekp(0, std::ios::end);
            offset = header.tellp();
            header << "==== " << iso_now() << " attempt " << status.attempts.size() + 1 << ":";
            for (const auto& a : args) header << " " << a;
            header << "\n";
        }
        pid_t pid = ::fork();
        if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
        if (pid == 0) exec_child(args, lock.fd(), log, slot);
        const std::string what = status.state == CellState::Pending ? "starting" : "resuming (" + std::string(to_string(status.state)) +
                                 ", step " + std::to_string(status.step) + ")";
        say(label(cell) + ": " + what + ", pid " + std::to_string(pid) + ", log " + log);
        record_attempt_start(sweep_, cell, pid);
        jobs_.emplace(pid, Job{&cell, std::move(lock), slot, log, offset, std::chrono::steady_clock::now()});
        if (g_stop_signal) ::kill(pid, SIGTERM);
    }

    // In the child: its own process group (terminal signals reach the supervisor, which forwards them),
    // SIGTERM when the supervisor dies, the cell's lock kept open across exec, output to the log.
    [[noreturn]] void exec_child(const std::vector<std::string>& args, int lock_fd, const std::string& log, size_t slot) {
        ::setpgid(0, 0);
        ::prctl(PR_SET_PDEATHSIG, SIGTERM);
        int flags = ::fcntl(lock_fd, F_GETFD);
        ::fcntl(lock_fd, F_SETFD, flags & ~FD_CLOEXEC);
        int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            ::dup2(fd, 1);
            ::dup2(fd, 2);
            ::close(fd);
        }
        int devnull = ::open("/dev/null", O_RDONLY);
        if (devnull >= 0) ::dup2(devnull, 0);
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGUSR1, SIG_DFL);
        if (!options_.devices.empty()) ::setenv("CUDA_VISIBLE_DEVICES", options_.devices[slot].c_str(), 1);
        if (options_.jobs > 1 && !std::getenv("OMP_NUM_THREADS")) {
            unsigned cores = std::max(1u, std::thread::hardware_concurrency());
            ::setenv("OMP_NUM_THREADS", std::to_string(std::max(1u, cores / options_.jobs)).c_str(), 1);
        }
        std::vector<char*> argv;
        for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
        argv.push_back(nullptr);
        ::execvp(argv[0], argv.data());
        std::fprintf(stderr, "l3lab sweep run: cannot start %s: %s\n", argv[0], std::strerror(errno));
        ::_exit(127);
    }

    void forward_stop() {
        forwarded_ = true;
        const int sig = g_stop_signal == SIGUSR1 ? SIGUSR1 : SIGTERM;
        say("signal " + std::to_string(g_stop_signal) + ": asking " + std::to_string(jobs_.size()) +
            " training process(es) to checkpoint and stop; no new cells");
        for (const auto& [pid, job] : jobs_) ::kill(pid, sig);
    }

    void finish(const Job& job, int code) {
        const Cell& cell = *job.cell;
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - job.start).count();
        auto status = run::read_status(cell_run_dir(sweep_, cell));
        std::string error;
        if (code != 0 && code != 3) {
            error = status && status->state == "failed" && !status->last_error.empty()
                        ? status->last_error
                        : attempt_error(job.log, job.log_offset);
            if (error.empty()) error = "exit code " + std::to_string(code);
        }
        record_attempt_end(sweep_, cell, code, seconds, error);
        const std::string took = util::fixed(seconds, 1) + " s";
        if (code == 0) {
            completed_.insert(cell.index);
            say(label(cell) + ": completed in " + took);
        } else if (code == 3) {
            interrupted_.insert(cell.index);
            say(label(cell) + ": interrupted after " + took + " (checkpointed; the next 'sweep run' resumes it)");
        } else {
            failed_.insert(cell.index);
            say(label(cell) + ": FAILED (exit " + std::to_string(code) + ") after " + took + ": " + error);
            if (sweep_.on_failure == "abort" && !aborting_) {
                aborting_ = true;
                say("on_failure: abort: no new cells are started");
            }
        }
        count_done();
    }

    int summarise() {
        const size_t pending = queue_.size();
        say("sweep " + sweep_.name + ": " + std::to_string(completed_.size()) + " completed, " +
            std::to_string(failed_.size()) + " failed, " + std::to_string(interrupted_.size()) + " interrupted, " +
            std::to_string(elsewhere_.size()) + " running elsewhere, " + std::to_string(pending) + " not started");
        if (g_stop_signal || !interrupted_.empty()) return 3;
        if (!failed_.empty() || aborting_) return 1;
        return 0;
    }

    const Sweep& sweep_;
    const RunOptions& options_;
    std::ostream& out_;
    std::string executable_;
    std::vector<size_t> free_slots_;
    std::deque<const Cell*> queue_;
    std::map<pid_t, Job> jobs_;
    std::set<int> completed_, failed_, interrupted_, elsewhere_;
    bool forwarded_ = false, aborting_ = false;
    std::unique_ptr<util::Progress> progress_;
};

}  // namespace

int run_sweep(const Sweep& sweep, const RunOptions& options, std::ostream& out) {
    if (options.jobs < 1) throw std::invalid_argument("--jobs must be at least 1");
    if (!options.devices.empty() && options.devices.size() < static_cast<size_t>(options.jobs))
        throw std::invalid_argument("--jobs " + std::to_string(options.jobs) + " needs as many devices, only " +
                                    std::to_string(options.devices.size()) + " given");
    return Supervisor(sweep, options, out).run();
}

std::vector<int> parse_cell_list(const std::string& text, int num_cells) {
    std::vector<int> cells;
    std::stringstream parts(text);
    std::string part;
    auto number = [&](const std::string& s) {
        size_t used = 0;
        int v = -1;
        try {
            v = std::stoi(s, &used);
        } catch (const std::exception&) {
            used = 0;
        }
        if (used != s.size() || s.empty() || v < 0)
            throw std::invalid_argument("'" + s + "' in '" + text + "' is not a cell index");
        if (v >= num_cells)
            throw std::invalid_argument("cell " + s + " does not exist (the sweep has " + std::to_string(num_cells) +
                                        " cells, 0.." + std::to_string(num_cells - 1) + ")");
        return v;
    };
    while (std::getline(parts, part, ',')) {
        size_t dash = part.find('-');
        if (dash == std::string::npos) {
            cells.push_back(number(part));
            continue;
        }
        int a = number(part.substr(0, dash)), b = number(part.substr(dash + 1));
        if (b < a) throw std::invalid_argument("'" + part + "' is an empty range");
        for (int i = a; i <= b; ++i) cells.push_back(i);
    }
    if (cells.empty()) throw std::invalid_argument("no cells in '" + text + "'");
    std::sort(cells.begin(), cells.end());
    cells.erase(std::unique(cells.begin(), cells.end()), cells.end());
    return cells;
}

std::vector<std::string> detect_devices(const Sweep& sweep) {
    bool cuda = false;
    for (const auto& cell : sweep.cells) cuda = cuda || cell.experiment.device != "cpu";
    if (!cuda) return {};
    std::vector<std::string> devices;
    if (const char* visible = std::getenv("CUDA_VISIBLE_DEVICES")) {
        std::stringstream list(visible);
        std::string d;
        while (std::getline(list, d, ','))
            if (!d.empty()) devices.push_back(d);
        return devices;
    }
    std::error_code ec;
    size_t n = 0;
    if (fs::is_directory("/proc/driver/nvidia/gpus", ec))
        for (auto it = fs::directory_iterator("/proc/driver/nvidia/gpus", ec); !ec && it != fs::directory_iterator(); ++it) ++n;
    for (size_t i = 0; i < n; ++i) devices.push_back(std::to_string(i));
    return devices;
}

}  // namespace l3lab::sweep
