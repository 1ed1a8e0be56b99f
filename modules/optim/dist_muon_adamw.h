// nanochat's DistMuonAdamW (nanochat/optim.py) on a libtorch c10d backend: the MuonAdamW step of a
// data-parallel group, with the gradients averaged across ranks and the optimizer state sharded.
//
//   AdamW, small parameters (< 1024 elements): gradients all-reduced, every rank updates the whole
//     parameter (replicated state; scalars and biases cost nothing).
//   AdamW, large parameters: gradients reduce-scattered by rows, each rank updates its R/W rows with its
//     shard of exp_avg/exp_avg_sq (ZeRO-2), the rows are all-gathered back. A parameter whose row count
//     is not a multiple of the world size is treated as small (the reference asserts instead).
//   Muon: the K same-shape gradients of a stack are stacked, zero-padded to ceil(K/W) * W and
//     reduce-scattered; rank r owns parameters [r * ceil(K/W), ...), runs the Muon step on them alone with
//     its shard of the momentum buffers, and the updated parameters are all-gathered back.
//
// The communication overlaps as the reference orders it: (1) launch every reduction, group by group;
// (2) group by group, wait for its reduction, compute, launch its gather; (3) wait for the gathers and
// copy the Muon stacks back. Gradients are averaged with ReduceOp::AVG on NCCL; Gloo has no AVG, so there
// they are summed and divided by the world size (exact for a power-of-two world size).
//
// Each rank's update runs through MuonAdamW itself, on its slices and owned parameters, so the arithmetic
// is the single-process optimizer's. Without a backend (or with a group of one) this class is MuonAdamW,
// bit for bit.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "modules/optim/muon_adamw.h"

namespace c10d {
class Backend;
}

namespace l3lab::optim {

class DistMuonAdamW {
public:
    // `backend`: the data-parallel group, not owned (it must outlive the optimizer); nullptr for one
    // process. Throws std::invalid_argument as MuonAdamW does.
    DistMuonAdamW(std::vector<ParamGroup> groups, c10d::Backend* backend);
    ~DistMuonAdamW();
    DistMuonAdamW(const DistMuonAdamW&) = delete;
    DistMuonAdamW& operator=(const DistMuonAdamW&) = delete;

    // One step of every group. Every parameter needs a gradient on every rank when the world size is
    // above one (std::runtime_error otherwise). A failed collective throws std::runtime_error naming the
    // rank, the operation and the parameter: another rank died or did not take part within the timeout.
    void step();
    void zero_grad();

    std::vector<ParamGroup>& groups();
    const std::vector<ParamGroup>& groups() const;

    // This rank's part of the state, in MuonAdamW::state()'s names (one process: all of it). AdamW entries
    // of a row-sharded parameter hold rows [rank * R/W, (rank + 1) * R/W); Muon entries exist only for the
    // parameters this rank owns. load_state() takes what state() returned on the same rank of a group of
    // the same size.
    std::vector<NamedTensor> state() const;
    void load_state(const std::vector<NamedTensor>& state);

    int rank() const;
    int world_size() const;
    // One line per optimizer group: how its parameters are split across the ranks (for the log).
    std::vector<std::string> layout() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace l3lab::optim
