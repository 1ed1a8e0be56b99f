// Progress of work that can take more than a few seconds (docs/progress.md): evaluation, sampling,
// CORE, tokenizer training, tokenizing, the L3 allocation, sweeps. One component everywhere:
//   - stderr is a terminal: a live bar from 0.5 s on, redrawn at most 10 times a second, with rate and
//     time left;
//   - otherwise (logs, SLURM): a plain line every `interval` seconds (first after `interval`), so short
//     work prints nothing, and one closing line for work that printed any.
// L3LAB_PROGRESS=bar|lines|off overrides the choice; L3LAB_PROGRESS_INTERVAL=S sets the interval of the
// plain lines (default 10 s). No torch and no fmt here: libtorch translation units include it.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace l3lab::util {

struct ProgressOptions {
    bool enabled = true;  // false: nothing is ever printed (ranks other than 0)
    // Where the plain lines go (default: stderr). The trainer sends them to its log too.
    std::function<void(const std::string&)> plain_line;
    // Counts are shown multiplied by this, with one decimal when it is not 1 (bytes counted, MB shown).
    double unit_scale = 1.0;
    // Report on the clock from a background thread too, for work that cannot count (a library call):
    // with an empty unit the line shows only the time spent.
    bool ticker = false;
};

class Progress {
public:
    // `total` <= 0: unknown (no bar, no time left). `unit`: what is counted ("batches", "documents").
    Progress(std::string what, int64_t total, std::string unit, ProgressOptions options = {});
    ~Progress();  // finish()
    Progress(const Progress&) = delete;
    Progress& operator=(const Progress&) = delete;

    // Thread-safe and cheap: one atomic add, and a clock read every few calls.
    void advance(int64_t n = 1);
    void set(int64_t done);
    // The bar's last state and a newline, or the closing plain line; idempotent.
    void finish();
    // Runs `print` (which writes whole lines elsewhere: a log line, a message) with the bar taken off the
    // terminal and drawn again below it; serialised with the reports of other threads.
    void print_above(const std::function<void()>& print);

    int64_t done() const { return done_.load(); }
    // The text of one progress line at this moment (what the bar or a plain line shows).
    std::string line() const;

private:
    void maybe_report(bool force);
    void draw_bar();  // with mutex_ held

    enum class Mode { Off, Bar, Lines };
    const std::string what_, unit_;
    const int64_t total_;
    ProgressOptions options_;
    Mode mode_;
    double interval_;
    std::chrono::steady_clock::time_point start_, last_report_;
    std::atomic<int64_t> done_{0};
    std::atomic<int64_t> calls_{0};
    std::mutex mutex_;
    bool reported_ = false, finished_ = false;
    std::thread ticker_;
    std::mutex ticker_mutex_;
    std::condition_variable ticker_cv_;
    bool ticker_stop_ = false;
};

}  // namespace l3lab::util
