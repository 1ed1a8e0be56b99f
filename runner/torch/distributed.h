// The torch side of data-parallel training (docs/distributed.md). The executable joins the launch
// through l3lab_torch_distributed (runner/dist/launch.h): a c10d::TCPStore rendezvous that this module
// keeps for the life of the process. The trainer then makes its Group on it: libtorch's c10d Gloo
// backend for the CPU, NCCL for CUDA. No communication code of our own.
#pragma once

#include <c10/core/Device.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace c10d {
class Backend;
}

namespace l3lab::dist {

// This process's place in the launch: rank 0 of 1 when there is none.
bool active();
int rank();
int world_size();
int local_rank();
double timeout_seconds();
// For provenance.json: launcher, store address, timeout and every rank's host, pid and local rank.
nlohmann::json describe();
// Tells the other ranks why this one stops (best effort, through the rendezvous store): a collective
// that fails on them because this rank is gone then names this rank and its message.
void report_fatal(const std::string& message);
// What other ranks reported with report_fatal ("rank 1 failed: ..."), waiting up to 1 s for a report
// (a rank reports before it exits); empty when none did.
std::string reported_failures();

// The data-parallel group of a training run. A default Group is one process: every collective returns
// its input.
class Group {
public:
    Group();
    // The group for this run's device: Gloo for the CPU, NCCL for a CUDA device (which must be
    // cuda:LOCAL_RANK). One process: a default Group. Throws std::runtime_error naming the ranks missing.
    static Group create(const c10::Device& device);

    int rank() const;
    int world_size() const;
    bool is_root() const { return rank() == 0; }
    c10d::Backend* backend() const;  // nullptr for one process
    std::string backend_name() const;  // "gloo", "nccl" or "none"

    // Collectives on the group's device. A failure (a rank died, or did not take part within the
    // timeout) throws std::runtime_error: "rank R of W: <what> failed after S s: <reason> ...", where the
    // reason is what a failed rank reported (report_fatal) when it did.
    void barrier(const std::string& what) const;
    void sum(std::vector<double>& values, const std::string& what) const;  // float64 sums, on every rank
    bool any(bool flag, const std::string& what) const;
    // Every rank's `value`, in rank order, through the rendezvous store (for small texts such as loader
    // states).
    std::vector<std::string> gather(const std::string& value, const std::string& what) const;

private:
    struct Impl;
    std::shared_ptr<Impl> impl_;
};

}  // namespace l3lab::dist
