// Stop requests (docs/stopping.md). SIGTERM, SIGUSR1 and SIGINT only set a flag; long work polls it at
// safe points (a training step boundary, an evaluation batch, a generated token, a sample row of the L3
// allocation, a shard opened) and gives up with Interrupted, after which the trainer checkpoints and
// exits 3. A second SIGTERM or SIGINT while stopping ends the process at once, with 128 + the signal, as
// soon as no atomic file write is in progress (the files on disk are then as after a crash: every
// complete checkpoint intact, nothing half-written taken for whole). A second SIGUSR1 is ignored.
// No torch and no fmt here: libtorch translation units include it.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace l3lab::util {

// Installs the handlers for its lifetime (and clears any earlier request); restores the previous ones.
class StopSignals {
public:
    StopSignals();
    ~StopSignals();
    StopSignals(const StopSignals&) = delete;
    StopSignals& operator=(const StopSignals&) = delete;
};

// The first stop signal received since the handlers were installed (0: none).
int stop_signal();
bool stop_requested();
// "SIGTERM", "SIGUSR1", "SIGINT" or "signal N".
std::string signal_name(int signal);
// signal_name(stop_signal()), or "a stop signal on another rank" when this rank got none itself.
std::string stop_reason();
// Sets the flag as a signal would (tests).
void request_stop(int signal);

// Thrown by work that gave up because a stop was requested; `what()` names the work and where it was.
class Interrupted : public std::runtime_error {
public:
    explicit Interrupted(const std::string& where);
};

// Throws Interrupted("<signal> during <where>") when a stop has been requested. A string_view: the
// polling loops pass literals, and nothing is built unless a stop has come.
void throw_if_stop_requested(std::string_view where);

// While one lives, a second signal does not end the process; it ends when the last one closes. Around
// the few instructions that must not be cut short (an atomic file write: temporary, fsync, rename).
class CriticalSection {
public:
    CriticalSection();
    ~CriticalSection();
    CriticalSection(const CriticalSection&) = delete;
    CriticalSection& operator=(const CriticalSection&) = delete;
};

}  // namespace l3lab::util
