// Test-only fault injection (docs/reliability.md). The reliability suite sets L3LAB_FAULT to make a
// process hurt itself at a named place in the code, so that rare windows (a checkpoint renamed but its
// DONE not yet written, a half-appended metrics line) are hit every time instead of by luck. Unset, every
// call below is one cached branch. Nobody should set it outside tests.
//
//   L3LAB_FAULT="ENTRY[,ENTRY...]"   ENTRY = NAME[@N][=ARG]
//
// Kill points, point("checkpoint:before-done"): the N-th time (default 1) the process passes NAME it
// SIGKILLs itself; with =stop it SIGSTOPs itself instead and goes on once a SIGCONT arrives (the suite
// uses the pause to fill a disk or to send a signal at an exact moment).
// Value faults, at("grad:nan", step): armed when N equals the value passed (a step number); returns ARG.
#pragma once

#include <optional>
#include <string>

namespace l3lab::fault {

// True when L3LAB_FAULT is set (to anything).
bool active();

// Passes a kill point: SIGKILL (or SIGSTOP with =stop) on the armed occurrence, else nothing.
void point(const char* name);

// The ARG of the entry NAME@value ("" without one), or nullopt when no such entry is set.
std::optional<std::string> at(const char* name, long long value);

}  // namespace l3lab::fault
