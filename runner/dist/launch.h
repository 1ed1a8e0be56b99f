// The executable's part of a data-parallel launch (docs/distributed.md). Every rank runs the same
// command line; before any run directory exists they meet at the rendezvous store (through the torch
// module), check that they resolved the same config, run their checks, and let rank 0 alone create or
// choose the run directory. With one process every method runs its argument and nothing else: no torch
// module, no store.
#pragma once

#include <functional>
#include <string>

#include "runner/dist/launch_env.h"

namespace l3lab::dist {

class Launch {
public:
    // Reads the launcher's environment. With more than one process, joins the rendezvous (waiting up to
    // `timeout_s` for every rank) and compares the sha256 of `resolved_config` across ranks: a rank that
    // never arrives or a different config is a config error (exit 2) on every rank, naming the ranks.
    static Launch join(const std::string& resolved_config, double timeout_s);

    const LaunchEnv& env() const { return env_; }
    int rank() const { return env_.rank; }
    int world_size() const { return env_.world_size; }
    bool is_root() const { return env_.rank == 0; }
    bool distributed() const { return env_.distributed(); }

    // Runs `check` on every rank. When it throws anywhere, it throws everywhere: on the failing rank its
    // own exception, on the others a ConfigException (a config error there) or a runtime_error naming it.
    void agree(const std::function<void()>& check) const;
    // Runs `decide` on rank 0 only and returns its result on every rank; an exception on rank 0 is thrown
    // on every rank as in agree().
    std::string from_root(const std::function<std::string()>& decide) const;

private:
    LaunchEnv env_;
};

}  // namespace l3lab::dist
