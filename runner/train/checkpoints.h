// Checkpoint directories (PRODUCT.md §4): <run>/checkpoints/step-00000500/ with the model, optimizer,
// state.json and a DONE marker written last. DONE lists every file's sha256, so a checkpoint counts
// only when it is complete and unchanged. Torch-free: the trainer writes the files, this moves them.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace l3lab::train {

struct Checkpoint {
    long long step = 0;
    std::string dir;
};

std::string checkpoints_root(const std::string& run_dir);
std::string checkpoint_name(long long step);  // step-00000500

// A fresh staging directory for the checkpoint of `step` (checkpoints/.partial-step-...); any old one
// is removed first.
std::string begin_checkpoint(const std::string& run_dir, long long step);
// The staging directory begin_checkpoint() makes for `step` (checkpoints/.partial-step-...).
std::string staging_checkpoint_dir(const std::string& run_dir, long long step);
// fsyncs the staged files, renames the directory into place, then writes DONE (with the files' sha256)
// atomically. Returns the final directory.
std::string finish_checkpoint(const std::string& run_dir, long long step, const std::string& staging_dir);

// Complete checkpoints, oldest first. With `verify`, DONE's checksums are checked and a checkpoint
// whose files do not match is skipped; each skipped one adds a line to `problems`.
std::vector<Checkpoint> complete_checkpoints(const std::string& run_dir, bool verify,
                                             std::vector<std::string>* problems = nullptr);
std::optional<Checkpoint> newest_checkpoint(const std::string& run_dir, std::vector<std::string>* problems = nullptr);
// Empty when `checkpoint_dir` is complete and every file matches DONE's sha256; otherwise what is wrong,
// naming the file ("model.safetensors does not match its checksum").
std::string checkpoint_problem(const std::string& checkpoint_dir);

// A checkpoint's optimizer state for one rank: "optimizer.safetensors" for one process, each rank's shard
// "optimizer.rank-00001-of-00008.safetensors" in a data-parallel run (docs/distributed.md).
std::string optimizer_file(int rank, int world_size);
// How many processes wrote the checkpoint in `checkpoint_dir` (its state.json "world_size"; 1 when
// absent). Throws std::runtime_error when state.json cannot be read.
int checkpoint_world_size(const std::string& checkpoint_dir);

// Keeps the newest `keep_last` complete checkpoints (never fewer than one) and removes older ones and
// leftover staging directories.
void prune_checkpoints(const std::string& run_dir, long long keep_last);

}  // namespace l3lab::train
