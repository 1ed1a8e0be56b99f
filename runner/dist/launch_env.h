// Who this process is in a data-parallel launch, read from the launcher's environment
// (docs/distributed.md). Torch-free: the executable reads it before it loads the torch module.
//
//   torchrun: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (TORCHELASTIC_USE_AGENT_STORE=True:
//             torchrun's agent hosts the rendezvous store and every rank is a client of it)
//   srun:     SLURM_PROCID, SLURM_STEP_NUM_TASKS (srun's SLURM_NTASKS), SLURM_LOCALID; the store is hosted by
//             rank 0 on the first host of SLURM_STEP_NODELIST (else SLURM_JOB_NODELIST), on a port derived
//             from SLURM_JOB_ID and SLURM_STEP_ID; MASTER_ADDR / MASTER_PORT override both.
//
// torchrun's variables win over SLURM's (torchrun started by srun). A world size of 1 is a plain
// single-process run: nothing distributed is initialised.
#pragma once

#include <functional>
#include <optional>
#include <string>

namespace l3lab::dist {

struct LaunchEnv {
    std::string launcher;  // "" (one process), "torchrun" or "slurm"
    int rank = 0;
    int world_size = 1;
    int local_rank = 0;
    std::string master_addr;  // the rendezvous store's host
    int master_port = 0;
    bool agent_store = false;  // the store is hosted by the launcher (torchrun's agent), not by rank 0
    std::string store_prefix;  // this launch's keys in the store (one launch attempt)

    bool distributed() const { return world_size > 1; }
    std::string describe() const;  // "rank 1 of 8 (torchrun, store 10.0.0.1:29500)"
};

// Looks a variable up; nullopt when unset.
using Environment = std::function<std::optional<std::string>(const std::string&)>;
std::optional<std::string> process_environment(const std::string& name);

// Throws config::ConfigException (exit 2) naming the variable when the environment is inconsistent
// (a rank outside [0, world size), a missing MASTER_ADDR, a value that is not a number, ...).
// `first_host` expands a SLURM node list; the default runs `scontrol show hostnames` when scontrol is
// on the PATH and parses the list itself otherwise.
LaunchEnv read_launch_env(const Environment& env = process_environment,
                          const std::function<std::string(const std::string&)>& first_host = nullptr);

// The first host of a SLURM node list in its compact form: "node[03-05,9],gpu1" -> "node03",
// "rack[1-2]-n[01-04]" -> "rack1-n01". Throws std::invalid_argument for an empty or malformed list.
std::string first_host_of_nodelist(const std::string& nodelist);

// The rendezvous port of a SLURM job step: 20000 + (31 * job_id + step_id) mod 20000, so that steps and
// jobs sharing a node rarely collide and every rank computes the same port.
int slurm_port(long long job_id, long long step_id);

}  // namespace l3lab::dist
