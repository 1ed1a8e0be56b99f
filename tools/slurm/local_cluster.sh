#!/usr/bin/env bash
# A private single-node SLURM cluster (munged + slurmctld + slurmd on 127.0.0.1) for tests.
#
#   tools/slurm/local_cluster.sh start  STATE_DIR   # start it; prints the client env on success
#   tools/slurm/local_cluster.sh env    STATE_DIR   # print `export SLURM_CONF=...` for clients (eval it)
#   tools/slurm/local_cluster.sh status STATE_DIR   # 0 = up and the node answers, 3 = not running, 1 = partly
#   tools/slurm/local_cluster.sh stop   STATE_DIR   # cancel jobs, stop every daemon it started
#
# Everything (munge key and socket, slurm.conf, state, spool, logs, pid files) lives under STATE_DIR;
# nothing system-wide is touched. Ports are picked free, so several clusters can run side by side.
# `start` exits 77 with one `local_cluster: cannot start SLURM: <reason>` line on stderr when the
# cluster cannot come up (packages missing, a daemon refuses to start, the node never becomes idle);
# a test maps 77 to "skipped". Every step is bounded by a timeout; nothing waits forever.
# A test should stop the cluster in an EXIT trap, and also pass L3LAB_SLURM_OWNER_PID=$$ (and/or
# L3LAB_SLURM_MAX_LIFETIME=SECONDS) to `start`: a small watchdog then stops the cluster by itself once
# that process is gone (e.g. killed by a CTest timeout, which sends SIGKILL, so no trap runs) or the
# lifetime is over. The daemons detach from the caller, so without that they would outlive it.
# Debian packages: slurmctld slurmd slurm-client munge (tools/bootstrap.sh). See docs/slurm.md.
set -uo pipefail
export PATH="$PATH:/usr/sbin:/sbin"   # the daemons live in /usr/sbin, often not on a user's PATH

PROG=local_cluster
START_TIMEOUT="${L3LAB_SLURM_START_TIMEOUT:-30}"   # seconds for the node to become idle
PARTITION="${L3LAB_SLURM_PARTITION:-local}"
# AuthInfo cred_expire: job-step credential lifetime, and how long a requeued job waits before it
# may start again. SLURM's minimum is 5 (3 is rejected by slurmd); 10 leaves room on a loaded machine.
CRED_EXPIRE="${L3LAB_SLURM_CRED_EXPIRE:-10}"

usage() {
  echo "usage: $0 start|stop|status|env STATE_DIR" >&2
  exit 2
}

[[ $# -eq 2 ]] || usage
CMD="$1"
mkdir -p "$2" 2>/dev/null || { echo "$PROG: cannot create state dir $2" >&2; exit 2; }
S="$(cd "$2" && pwd)"

CONF="$S/etc/slurm.conf"
MUNGE_DIR="$S/munge"
MUNGE_SOCK="$MUNGE_DIR/munge.socket.2"
MUNGE_PID="$MUNGE_DIR/munged.pid"
CTLD_PID="$S/run/slurmctld.pid"
SLURMD_PID="$S/run/slurmd.pid"
ENV_FILE="$S/env.sh"
WATCHDOG_PID="$S/run/watchdog.pid"
SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
MARKER="L3LAB_SLURM_CLUSTER=$S"

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }

# ---------------------------------------------------------------- helpers

pid_of() {  # pid_of PIDFILE -> prints the pid if the process is alive
  local f="$1" p
  [[ -f "$f" ]] || return 1
  read -r p < "$f" 2>/dev/null || return 1
  [[ "$p" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$p" 2>/dev/null || return 1
  echo "$p"
}

wait_gone() {  # wait_gone PID SECONDS -> 0 once the process has exited
  local p="$1" deadline=$((SECONDS + $2))
  while kill -0 "$p" 2>/dev/null; do
    # A zombie child of ours counts as gone.
    [[ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" == Z ]] && return 0
    (( SECONDS >= deadline )) && return 1
    sleep 0.1
  done
  return 0
}

stop_pid() {  # stop_pid PID NAME: TERM, wait, KILL
  local p="$1" name="$2"
  kill -TERM "$p" 2>/dev/null || return 0
  if ! wait_gone "$p" 10; then
    log "$name (pid $p) ignored SIGTERM for 10 s; sending SIGKILL"
    kill -KILL "$p" 2>/dev/null
    wait_gone "$p" 5 || log "$name (pid $p) is still alive after SIGKILL"
  fi
}

port_in_use() {  # port_in_use PORT
  if command -v ss >/dev/null 2>&1; then
    ss -Htan 2>/dev/null | awk '{print $4}' | grep -Eq "[:.]$1\$" && return 0
  fi
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
  return 1
}

pick_ports() {  # prints two distinct free TCP ports
  local a b tries=0
  while (( tries++ < 200 )); do
    a=$((20000 + RANDOM % 20000)); b=$((a + 1))
    port_in_use "$a" || port_in_use "$b" || { echo "$a $b"; return 0; }
  done
  return 1
}

client() {  # client CMD ARGS...: a bounded client call against this cluster
  SLURM_CONF="$CONF" timeout 10 "$@"
}

node_name() { hostname -s 2>/dev/null || hostname; }

node_state() { client sinfo -h -N -n "$(node_name)" -o '%T' 2>/dev/null | head -1; }

node_reason() { client sinfo -h -N -n "$(node_name)" -o '%E' 2>/dev/null | head -1; }

# Processes started by this cluster's slurmd carry $MARKER in their environment (slurmstepd inherits
# slurmd's). Prints their pids and those of all their descendants (the job scripts and their children).
cluster_processes() {
  local roots=() p
  for p in /proc/[0-9]*; do
    p="${p#/proc/}"
    [[ "$p" == "$$" ]] && continue
    if tr '\0' '\n' 2>/dev/null < "/proc/$p/environ" | grep -qxF "$MARKER"; then
      [[ "$(cat "/proc/$p/comm" 2>/dev/null)" == slurmstepd ]] && roots+=("$p")
    fi
  done
  ((${#roots[@]})) || return 0
  # Descendants via the ppid field of /proc/PID/stat (field 4, after the parenthesised comm).
  local table
  table="$(for p in /proc/[0-9]*; do
             s="$(cat "$p/stat" 2>/dev/null)" || continue
             s="${s##*) }"; set -- $s; echo "${p#/proc/} $2"
           done)"
  local frontier=("${roots[@]}") all=("${roots[@]}") next child
  while ((${#frontier[@]})); do
    next=()
    for p in "${frontier[@]}"; do
      while read -r child; do
        [[ -n "$child" ]] && next+=("$child")
      done < <(awk -v pp="$p" '$2 == pp {print $1}' <<<"$table")
    done
    all+=("${next[@]}")
    frontier=("${next[@]}")
  done
  printf '%s\n' "${all[@]}"
}

# ---------------------------------------------------------------- commands

cmd_status() {
  local up=0 total=3 m c d st
  m="$(pid_of "$MUNGE_PID")" && up=$((up + 1))
  c="$(pid_of "$CTLD_PID")" && up=$((up + 1))
  d="$(pid_of "$SLURMD_PID")" && up=$((up + 1))
  echo "munged:    ${m:-not running}"
  echo "slurmctld: ${c:-not running}"
  echo "slurmd:    ${d:-not running}"
  local w; w="$(pid_of "$WATCHDOG_PID")" && echo "watchdog:  $w"
  if [[ -n "$c" ]]; then
    st="$(node_state)"
    echo "node:      $(node_name) ${st:-unreachable}"
  fi
  (( up == 0 )) && return 3
  (( up == total )) && [[ "${st:-}" =~ ^(idle|mixed|allocated|completing) ]] && return 0
  return 1
}

cmd_env() {
  if [[ ! -f "$CONF" ]]; then
    echo "$PROG: no cluster in $S (run start first)" >&2
    return 1
  fi
  cat <<EOF
export SLURM_CONF='$CONF'
export L3LAB_SLURM_STATE_DIR='$S'
export L3LAB_SLURM_PARTITION='$PARTITION'
unset SBATCH_PARTITION SBATCH_ACCOUNT SBATCH_QOS SBATCH_RESERVATION SBATCH_CLUSTERS SLURM_CLUSTERS
EOF
}

cmd_stop_daemons() {  # slurmd and slurmctld only
  local c d
  if d="$(pid_of "$SLURMD_PID")"; then stop_pid "$d" slurmd; fi
  if c="$(pid_of "$CTLD_PID")"; then stop_pid "$c" slurmctld; fi
  rm -f "$CTLD_PID" "$SLURMD_PID"
}

cmd_stop() {
  local c d m ids w
  # The watchdog removes its pid file before it calls stop itself.
  if w="$(pid_of "$WATCHDOG_PID")"; then kill -TERM "$w" 2>/dev/null; fi
  rm -f "$WATCHDOG_PID"
  if c="$(pid_of "$CTLD_PID")"; then
    # Cancel every job so slurmd's job steps (slurmstepd) end cleanly before the daemons go.
    ids="$(client squeue -h -o '%F' 2>/dev/null | sort -u)"
    if [[ -n "$ids" ]]; then
      # shellcheck disable=SC2086
      client scancel $ids 2>/dev/null
      # Wait for the steps to end (KillWait=5 s), but only while a slurmd is there to end them.
      local deadline=$((SECONDS + 10))
      while pid_of "$SLURMD_PID" >/dev/null && [[ -n "$(client squeue -h -o '%i' 2>/dev/null)" ]] &&
            (( SECONDS < deadline )); do
        sleep 0.3
      done
    fi
  fi
  cmd_stop_daemons
  # Left-over job steps (a job that outlived scancel, or slurmd killed first): kill the whole tree.
  local left
  left="$(cluster_processes)"
  if [[ -n "$left" ]]; then
    log "killing left-over job processes: $(echo $left)"
    # shellcheck disable=SC2086
    kill -TERM $left 2>/dev/null; sleep 1
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null
  fi
  if m="$(pid_of "$MUNGE_PID")"; then stop_pid "$m" munged; fi
  rm -f "$CTLD_PID" "$SLURMD_PID" "$MUNGE_PID"
  return 0
}

fail() {  # fail REASON: one clear line, clean up, exit 77 (the test maps it to "skipped")
  echo "$PROG: cannot start SLURM: $*" >&2
  cmd_stop >/dev/null 2>&1
  exit 77
}

start_munged() {
  mkdir -p "$MUNGE_DIR"
  # munged insists that everyone can traverse to its socket and that nobody else can write there.
  chmod 0711 "$S" "$MUNGE_DIR"
  if [[ ! -s "$MUNGE_DIR/munge.key" ]]; then
    if command -v mungekey >/dev/null 2>&1; then
      mungekey --create --keyfile="$MUNGE_DIR/munge.key" >/dev/null 2>&1
    else
      head -c 1024 /dev/urandom > "$MUNGE_DIR/munge.key"
    fi
  fi
  chmod 0600 "$MUNGE_DIR/munge.key"
  rm -f "$MUNGE_SOCK" "$MUNGE_SOCK.lock"
  local args=(--key-file="$MUNGE_DIR/munge.key" --socket="$MUNGE_SOCK" --pid-file="$MUNGE_PID"
              --log-file="$MUNGE_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed")
  # munged forks, and its parent returns once the socket is ready.
  if ! timeout 15 munged "${args[@]}" </dev/null >>"$MUNGE_DIR/munged.out" 2>&1; then
    # Typically "insecure permissions" on a parent directory (e.g. a 0700 home); --force accepts it.
    echo "retrying with --force" >>"$MUNGE_DIR/munged.out"
    timeout 15 munged --force "${args[@]}" </dev/null >>"$MUNGE_DIR/munged.out" 2>&1 ||
      fail "munged did not start: $(grep -h Error "$MUNGE_DIR/munged.out" | tail -1) (see $MUNGE_DIR/munged.log)"
  fi
  pid_of "$MUNGE_PID" >/dev/null || fail "munged exited right after starting (see $MUNGE_DIR/munged.log)"
  local cred
  cred="$(timeout 5 munge -S "$MUNGE_SOCK" -n 2>&1)" && timeout 5 unmunge -S "$MUNGE_SOCK" <<<"$cred" >/dev/null 2>&1 ||
    fail "munged does not answer on $MUNGE_SOCK: ${cred:0:200}"
}

write_config() {
  local node cpus mem_kib mem_mib user ports ctld_port d_port topo
  node="$(node_name)"
  cpus="$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)"   # nproc alone honours OMP_NUM_THREADS (CTest sets 1)
  mem_kib="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
  mem_mib=$(( mem_kib / 1024 ))
  # Use slurmd's own view of the topology when it agrees with nproc (otherwise slurmd would drain
  # the node for a socket/core mismatch); fall back to plain CPUs=.
  topo="CPUs=$cpus"
  local hw
  hw="$(timeout 10 slurmd -C 2>/dev/null | head -1)"
  if [[ "$hw" =~ CPUs=([0-9]+)\ Boards=([0-9]+)\ SocketsPerBoard=([0-9]+)\ CoresPerSocket=([0-9]+)\ ThreadsPerCore=([0-9]+) ]] &&
     [[ "${BASH_REMATCH[1]}" == "$cpus" ]]; then
    topo="CPUs=$cpus Boards=${BASH_REMATCH[2]} SocketsPerBoard=${BASH_REMATCH[3]} CoresPerSocket=${BASH_REMATCH[4]} ThreadsPerCore=${BASH_REMATCH[5]}"
  fi
  user="$(id -un)"
  if [[ -n "${L3LAB_SLURM_PORTS:-}" && "${attempt:-1}" == 1 ]]; then
    ports="$L3LAB_SLURM_PORTS"   # "CTLD_PORT SLURMD_PORT", to test the retry on a conflict
  else
    ports="$(pick_ports)" || fail "no two free TCP ports found in 20000-40000"
  fi
  read -r ctld_port d_port <<<"$ports"
  mkdir -p "$S/etc" "$S/state" "$S/spool" "$S/log" "$S/run" "$S/tmp"
  : > "$S/etc/plugstack.conf"
  cat > "$S/etc/cgroup.conf" <<'EOF'
# Written by tools/slurm/local_cluster.sh. No cgroup plugin is configured in slurm.conf
# (proctrack/linuxproc, task/none, jobacct_gather/none), so nothing here is used; the file exists so
# slurmd never falls back to a system-wide /etc/slurm/cgroup.conf.
CgroupAutomount=no
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainDevices=no
EOF
  cat > "$CONF" <<EOF
# Written by tools/slurm/local_cluster.sh for a private single-node test cluster (docs/slurm.md).
ClusterName=l3lab
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (SLURM default 120 s).
AuthInfo=socket=$MUNGE_SOCK,cred_expire=$CRED_EXPIRE
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$S/etc/plugstack.conf
TmpFS=$S/tmp
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
# Scan pending jobs every 2 s (default 60 s) so a requeued job restarts soon after its BeginTime.
SchedulerParameters=sched_interval=2,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MaxArraySize=100001
MaxJobCount=200000
MinJobAge=300
JobRequeue=1
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
MessageTimeout=10
NodeName=$node NodeAddr=127.0.0.1 NodeHostname=$node $topo RealMemory=$mem_mib State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
}

# In the log's lines written since offset $2 (bytes), a failed bind?
bind_failed() { tail -c +"$(( $2 + 1 ))" "$1" 2>/dev/null | grep -q 'Address already in use'; }

log_size() { stat -c %s "$1" 2>/dev/null || echo 0; }

# Starts slurmctld then slurmd and waits for the node to be idle. Returns 1 on a port conflict (the
# caller retries with new ports), calls fail for anything else.
start_daemons() {
  local ctld_log="$S/log/slurmctld.log" d_log="$S/log/slurmd.log" off deadline st=""
  # Both daemons fork into the background and write their pid files; stdio must not stay attached to
  # the caller's pipes (a test runner would wait for them to close).
  off="$(log_size "$ctld_log")"
  env "$MARKER" timeout 20 slurmctld -f "$CONF" </dev/null >>"$S/log/slurmctld.out" 2>&1 ||
    fail "slurmctld failed: $(tail -1 "$S/log/slurmctld.out") (see $ctld_log)"
  deadline=$((SECONDS + 15))
  until pid_of "$CTLD_PID" >/dev/null && client scontrol ping >/dev/null 2>&1; do
    if bind_failed "$ctld_log" "$off"; then cmd_stop_daemons; return 1; fi
    if (( SECONDS >= deadline )); then
      fail "slurmctld is not answering: $(grep -hE 'error|fatal' "$ctld_log" 2>/dev/null | grep -v -e pmix -e 'state file' -e 'backup state' | tail -1) (see $ctld_log)"
    fi
    sleep 0.2
  done
  off="$(log_size "$d_log")"
  env "$MARKER" timeout 20 slurmd -f "$CONF" -N "$(node_name)" </dev/null >>"$S/log/slurmd.out" 2>&1 ||
    fail "slurmd failed: $(tail -1 "$S/log/slurmd.out") (see $d_log)"
  deadline=$((SECONDS + START_TIMEOUT))
  local gone_since=""
  while :; do
    if bind_failed "$d_log" "$off"; then cmd_stop_daemons; return 1; fi
    if pid_of "$SLURMD_PID" >/dev/null; then
      gone_since=""
    else  # the pid file appears a moment after the fork
      [[ -n "$gone_since" ]] || gone_since=$SECONDS
      (( SECONDS - gone_since < 3 )) ||
        fail "slurmd exited: $(grep -hE 'error|fatal' "$d_log" 2>/dev/null | grep -v pmix | tail -1) (see $d_log)"
    fi
    st="$(node_state)"
    [[ "$st" == idle ]] && return 0
    if (( SECONDS >= deadline )); then
      fail "node $(node_name) is '${st:-unknown}' after ${START_TIMEOUT} s, not idle (reason: $(node_reason); see $S/log/)"
    fi
    sleep 0.2
  done
}

# Stops the cluster once L3LAB_SLURM_OWNER_PID is gone or L3LAB_SLURM_MAX_LIFETIME seconds are over.
start_watchdog() {
  local owner="${L3LAB_SLURM_OWNER_PID:-}" life="${L3LAB_SLURM_MAX_LIFETIME:-}"
  [[ -z "$owner" && -z "$life" ]] && return 0
  [[ -z "$owner" || "$owner" =~ ^[0-9]+$ ]] || fail "L3LAB_SLURM_OWNER_PID='$owner' is not a pid"
  [[ -z "$life" || "$life" =~ ^[0-9]+$ ]] || fail "L3LAB_SLURM_MAX_LIFETIME='$life' is not a number of seconds"
  # setsid: its own session, so the caller's process group being killed does not take it along.
  setsid bash -c '
    owner="$1" life="$2" ctld_pid="$3" wpid="$4" self="$5" dir="$6"
    end=$(( ${life:-0} > 0 ? SECONDS + life : 0 ))
    while sleep 1; do
      [[ -f "$ctld_pid" ]] || exit 0                            # stopped by someone else
      [[ -n "$owner" ]] && ! kill -0 "$owner" 2>/dev/null && { echo "owner $owner gone"; break; }
      (( end > 0 && SECONDS >= end )) && { echo "lifetime ${life} s over"; break; }
    done
    rm -f "$wpid"
    exec "$self" stop "$dir"
  ' watchdog "$owner" "$life" "$CTLD_PID" "$WATCHDOG_PID" "$SELF" "$S" \
    </dev/null >>"$S/log/watchdog.log" 2>&1 &
  echo $! > "$WATCHDOG_PID"
}

cmd_start() {
  local t0=$SECONDS
  if cmd_status >/dev/null 2>&1; then
    log "already running in $S"
    cmd_env
    return 0
  fi
  cmd_stop >/dev/null 2>&1   # clear a half-started or crashed cluster in the same dir
  local b
  for b in munged munge unmunge slurmctld slurmd sinfo sbatch scontrol squeue scancel timeout; do
    command -v "$b" >/dev/null 2>&1 ||
      fail "'$b' not found (install Debian's slurmctld slurmd slurm-client munge: tools/bootstrap.sh)"
  done
  if [[ "$(id -u)" -ne 0 ]]; then
    log "not root: running the daemons as $(id -un) (SlurmUser=SlurmdUser=$(id -un)); jobs run as $(id -un) only"
  fi
  start_munged
  export SLURM_CONF="$CONF"
  # Ports are picked free but not reserved; if another process takes one first, the daemon fails to
  # bind and we try again with new ports.
  local attempt
  for attempt in 1 2 3; do
    write_config
    start_daemons && break
    (( attempt < 3 )) || fail "slurmctld/slurmd could not bind their ports in 3 attempts (see $S/log/)"
    log "port conflict; retrying with other ports"
  done
  start_watchdog
  cmd_env > "$ENV_FILE"
  log "up in $((SECONDS - t0)) s: node $(node_name) idle, partition $PARTITION, $(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc) CPUs, state in $S"
  cat "$ENV_FILE"
}

case "$CMD" in
  start)  cmd_start ;;
  stop)   cmd_stop ;;
  status) cmd_status ;;
  env)    cmd_env ;;
  *)      usage ;;
esac
