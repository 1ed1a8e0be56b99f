#include "runner/util/stop.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

namespace l3lab::util {

namespace {

volatile sig_atomic_t g_signal = 0;        // the first stop signal
volatile sig_atomic_t g_forced = 0;        // a second one arrived inside a critical section
std::atomic<int> g_critical{0};            // critical sections open (lock-free: read in the handler)
static_assert(std::atomic<int>::is_always_lock_free);

// Only async-signal-safe calls below: write(2) and _exit(2).
void say(const char* text) {
    ssize_t ignored = ::write(STDERR_FILENO, text, std::strlen(text));
    (void)ignored;
}

const char* name_of(int signal) {
    switch (signal) {
        case SIGTERM: return "SIGTERM";
        case SIGUSR1: return "SIGUSR1";
        case SIGINT: return "SIGINT";
        default: return "a signal";
    }
}

[[noreturn]] void exit_now(int signal) {
    say("l3lab: a second stop signal: stopping now, without a new checkpoint; `l3lab resume` continues from "
        "the last complete one\n");
    ::_exit(128 + signal);
}

void on_signal(int signal) {
    if (g_signal == 0) {
        g_signal = signal;
        say("l3lab: ");
        say(name_of(signal));
        say(": stopping at the next safe point (checkpoint, exit 3); a second SIGTERM or SIGINT stops at once\n");
        return;
    }
    if (signal == SIGUSR1) return;  // SLURM's warning signal, repeated: already stopping
    if (g_critical.load() > 0) {
        g_forced = signal;  // the last CriticalSection to close ends the process
        return;
    }
    exit_now(signal);
}

struct sigaction g_old_term {}, g_old_usr1 {}, g_old_int {};

}  // namespace

StopSignals::StopSignals() {
    g_signal = 0;
    g_forced = 0;
    struct sigaction action {};
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &action, &g_old_term);
    sigaction(SIGUSR1, &action, &g_old_usr1);
    sigaction(SIGINT, &action, &g_old_int);
}

StopSignals::~StopSignals() {
    sigaction(SIGTERM, &g_old_term, nullptr);
    sigaction(SIGUSR1, &g_old_usr1, nullptr);
    sigaction(SIGINT, &g_old_int, nullptr);
}

int stop_signal() { return g_signal; }
bool stop_requested() { return g_signal != 0; }

std::string signal_name(int signal) {
    if (signal == SIGTERM || signal == SIGUSR1 || signal == SIGINT) return name_of(signal);
    return "signal " + std::to_string(signal);
}

std::string stop_reason() { return g_signal ? signal_name(g_signal) : "a stop signal on another rank"; }

void request_stop(int signal) {
    if (g_signal == 0) g_signal = signal;
}

Interrupted::Interrupted(const std::string& where) : std::runtime_error(where) {}

void throw_if_stop_requested(std::string_view where) {
    if (g_signal != 0) throw Interrupted(stop_reason() + " during " + std::string(where));
}

CriticalSection::CriticalSection() { g_critical.fetch_add(1); }

CriticalSection::~CriticalSection() {
    if (g_critical.fetch_sub(1) == 1 && g_forced != 0) exit_now(g_forced);
}

}  // namespace l3lab::util
