#include "runner/util/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "runner/util/format.h"

namespace l3lab::util {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

double interval_from_env() {
    const char* v = std::getenv("L3LAB_PROGRESS_INTERVAL");
    if (!v || !*v) return 10.0;
    char* end = nullptr;
    const double s = std::strtod(v, &end);
    return end != v && s > 0 ? s : 10.0;
}

void to_stderr(const std::string& text) {
    std::fwrite(text.data(), 1, text.size(), stderr);
    std::fflush(stderr);
}

std::string rate_text(double per_second, const std::string& unit) {
    if (per_second >= 100) return group_digits(static_cast<int64_t>(per_second)) + " " + unit + "/s";
    return fixed(per_second, per_second >= 10 ? 1 : 2) + " " + unit + "/s";
}

std::string count_text(int64_t n, double scale) {
    return scale == 1.0 ? group_digits(n) : fixed(static_cast<double>(n) * scale, 1);
}

}  // namespace

Progress::Progress(std::string what, int64_t total, std::string unit, ProgressOptions options)
    : what_(std::move(what)), unit_(std::move(unit)), total_(total), options_(std::move(options)),
      interval_(interval_from_env()), start_(Clock::now()), last_report_(start_) {
    const char* forced = std::getenv("L3LAB_PROGRESS");
    const std::string choice = forced ? forced : "";
    if (!options_.enabled || choice == "off") mode_ = Mode::Off;
    else if (choice == "bar") mode_ = Mode::Bar;
    else if (choice == "lines") mode_ = Mode::Lines;
    else mode_ = ::isatty(STDERR_FILENO) ? Mode::Bar : Mode::Lines;
    if (mode_ != Mode::Off && options_.ticker)
        ticker_ = std::thread([this] {
            std::unique_lock<std::mutex> lock(ticker_mutex_);
            while (!ticker_cv_.wait_for(lock, std::chrono::milliseconds(100), [this] { return ticker_stop_; }))
                maybe_report(false);
        });
}

Progress::~Progress() { finish(); }

void Progress::advance(int64_t n) {
    done_.fetch_add(n);
    // The clock is read on every 8th call at most: advance() sits in tight loops.
    if (mode_ != Mode::Off && (calls_.fetch_add(1) & 7) == 0) maybe_report(false);
}

void Progress::set(int64_t done) {
    done_.store(done);
    if (mode_ != Mode::Off) maybe_report(false);
}

std::string Progress::line() const {
    const int64_t done = done_.load();
    const double elapsed = seconds_since(start_);
    const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0;
    const double scale = options_.unit_scale;
    std::string text = what_ + ": ";
    if (unit_.empty()) return text + human_duration(elapsed);  // a ticker without counts
    if (total_ > 0) {
        const double fraction = std::clamp(static_cast<double>(done) / static_cast<double>(total_), 0.0, 1.0);
        text += fmt::format("{:3.0f}% {}/{} {}", 100.0 * fraction, count_text(done, scale), count_text(total_, scale), unit_);
    } else {
        text += count_text(done, scale) + " " + unit_;
    }
    text += ", " + rate_text(rate * scale, unit_) + ", " + human_duration(elapsed);
    if (total_ > 0 && done < total_ && rate > 0)
        text += ", " + human_duration(static_cast<double>(total_ - done) / rate) + " left";
    return text;
}

void Progress::maybe_report(bool force) {
    // Another thread reporting: a periodic report is skipped, a forced (final) one waits its turn.
    std::unique_lock<std::mutex> lock(mutex_, std::defer_lock);
    if (force) lock.lock();
    else if (!lock.try_lock()) return;
    if (finished_) return;
    const double since = seconds_since(last_report_);
    if (mode_ == Mode::Bar) {
        if (!force && (since < 0.1 || seconds_since(start_) < 0.5)) return;  // quick work draws no bar
        draw_bar();
    } else {
        if (!force && since < interval_) return;
        const std::string text = line();
        if (options_.plain_line) options_.plain_line(text);
        else to_stderr(text + "\n");
    }
    reported_ = true;
    last_report_ = Clock::now();
}

void Progress::draw_bar() {
    std::string bar;
    if (total_ > 0) {
        const int width = 24;
        const auto filled = static_cast<int>(
            std::clamp(static_cast<double>(done_.load()) / static_cast<double>(total_), 0.0, 1.0) * width);
        bar = "[" + std::string(static_cast<size_t>(filled), '#') + std::string(static_cast<size_t>(width - filled), '.') + "] ";
    }
    to_stderr("\r\033[K" + bar + line());
}

void Progress::print_above(const std::function<void()>& print) {
    std::lock_guard<std::mutex> lock(mutex_);
    const bool bar_shown = mode_ == Mode::Bar && reported_ && !finished_;
    if (bar_shown) to_stderr("\r\033[K");
    print();
    if (bar_shown) draw_bar();
}

void Progress::finish() {
    if (mode_ == Mode::Off) return;
    if (ticker_.joinable()) {
        {
            std::lock_guard<std::mutex> lock(ticker_mutex_);
            ticker_stop_ = true;
        }
        ticker_cv_.notify_all();
        ticker_.join();
    }
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (finished_) return;
    }
    // Work that showed progress ends on its final state; quick work printed nothing and prints nothing.
    if (reported_) maybe_report(true);
    std::lock_guard<std::mutex> lock(mutex_);
    if (mode_ == Mode::Bar && reported_) to_stderr("\n");
    finished_ = true;
}

}  // namespace l3lab::util
