#!/usr/bin/env bash
# Proves that tools/slurm/local_cluster.sh gives a working SLURM, and the job-array patterns that
# `l3lab sweep slurm` relies on (docs/slurm.md):
#   1. a 2-task array (--array=0-1%2 --requeue --signal=B:USR1@5) runs both tasks to completion;
#   2. preemption by `scancel --signal=USR1 --batch`: the batch script traps USR1, forwards it to its
#      child (which saves a checkpoint and exits), requeues its own array task with `scontrol requeue`,
#      and the second run ($SLURM_RESTART_COUNT=1) resumes from the checkpoint and completes;
#   3. the same, with USR1 sent by SLURM itself ahead of the time limit (--time=1 --signal=B:USR1@40).
#      This one takes ~45 s; --quick skips it.
# Exit 0: all passed; 1: a check failed (the state dir is kept and named); 77: SLURM cannot start here.
#   tools/slurm/selftest.sh [--quick] [--keep]
set -uo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CLUSTER="$HERE/local_cluster.sh"
QUICK=0 KEEP=0
for a in "$@"; do
  case "$a" in
    --quick) QUICK=1 ;;
    --keep) KEEP=1 ;;
    *) echo "usage: $0 [--quick] [--keep]" >&2; exit 2 ;;
  esac
done

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}'; }
say() { printf 'selftest: %s\n' "$*"; }

S="$(mktemp -d "${TMPDIR:-/tmp}/l3lab-slurm-selftest.XXXXXX")"
chmod 0711 "$S"   # munged wants every directory above its socket to be traversable
FAILED=0
cleanup() {
  "$CLUSTER" stop "$S/cluster" >/dev/null 2>&1
  if (( FAILED || KEEP )); then say "state kept in $S"; else rm -rf "$S"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() { say "FAIL: $*"; FAILED=1; exit 1; }

t0="$(now)"
# The watchdog stops the cluster if this script is killed without running its EXIT trap (SIGKILL).
L3LAB_SLURM_OWNER_PID=$$ L3LAB_SLURM_MAX_LIFETIME=600 "$CLUSTER" start "$S/cluster" > "$S/env.sh"
rc=$?
if (( rc == 77 )); then say "SKIP: SLURM cannot start on this machine (reason above)"; exit 77; fi
(( rc == 0 )) || fail "local_cluster.sh start exited $rc"
say "cluster up in $(since "$t0") s"
# shellcheck disable=SC1091
source "$S/env.sh"

# The stand-in for one sweep cell. Arguments: work dir, number of 0.1 s steps.
# The child stands for `l3lab train`: on USR1 it saves its step to a checkpoint and exits with code 3
# ("interrupted, checkpoint saved", as the trainer does); the batch script then requeues the task. A
# restarted run resumes from the saved step (and, being a test, runs the remaining steps unslept).
cat > "$S/cell.sh" <<'EOF'
#!/bin/bash
# Install the trap before anything else: --signal may fire early, and an untrapped USR1 kills bash.
id="${SLURM_ARRAY_TASK_ID:?not an array task}"
W="$1"; STEPS="$2"
got_usr1=0
trap 'got_usr1=1; echo "usr1 $(date +%s.%N)" >> "$W/events.$id"; [[ -n "${child:-}" ]] && kill -USR1 "$child"' USR1
restarts="${SLURM_RESTART_COUNT:-0}"
echo "start restarts=$restarts job=$SLURM_JOB_ID $(date +%s.%N)" >> "$W/events.$id"
echo "cell $id: run with restarts=$restarts"   # to the job's --output file
start=0
[[ -f "$W/ckpt.$id" ]] && start="$(cat "$W/ckpt.$id")"
nap=0.1; (( restarts > 0 )) && nap=0
# The child runs in the background so that bash can run the trap while it waits (bash defers traps
# until a foreground command returns). The trap in the child saves and exits.
bash -c '
  step='"$start"'
  trap "echo \$step > '"$W/ckpt.$id"'; exit 3" USR1
  while (( step < '"$STEPS"' )); do sleep '"$nap"'; step=$((step + 1)); done
  echo $step > '"$W/ckpt.$id"'
' &
child=$!
# `wait` returns early (status > 128) when a trapped signal arrives; keep waiting for the child.
while kill -0 "$child" 2>/dev/null; do wait "$child"; done
wait "$child"; crc=$?
echo "child exited rc=$crc got_usr1=$got_usr1 $(date +%s.%N)" >> "$W/events.$id"
if (( crc == 3 )); then
  # Requeue this array task: SLURM kills this script at once (SIGTERM, so nothing after the call is
  # sure to run) and starts it again later with SLURM_RESTART_COUNT+1. Log first.
  echo "requeue $(date +%s.%N)" >> "$W/events.$id"
  if ! scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}" >> "$W/events.$id" 2>&1; then
    echo "requeue failed" >> "$W/events.$id"
    exit 1
  fi
  exit 0
fi
(( crc == 0 )) || exit "$crc"
echo "task=$id steps=$(cat "$W/ckpt.$id") resumed_from=$start restarts=$restarts" > "$W/result.$id"
EOF
chmod +x "$S/cell.sh"

# submit NAME STEPS SBATCH_ARGS...: prints the array job id
submit() {
  local name="$1" steps="$2"; shift 2
  mkdir -p "$S/$name"
  timeout 10 sbatch --parsable --job-name="l3lab-$name" --chdir="$S/$name" \
    --output="$S/$name/slurm-%A_%a.out" --open-mode=append -n 1 -c 1 "$@" \
    "$S/cell.sh" "$S/$name" "$steps"
}

# wait_done JOBID SECONDS: until no task is pending/running (squeue empty)
wait_done() {
  local j="$1" deadline=$((SECONDS + $2))
  while [[ -n "$(timeout 10 squeue -h -j "$j" -o %i 2>/dev/null)" ]]; do
    (( SECONDS < deadline )) || { timeout 10 squeue -j "$j"; return 1; }
    sleep 0.2
  done
}

# check_array NAME JOBID RESTARTS: both tasks COMPLETED with exit 0, results present
check_array() {
  local name="$1" j="$2" want="$3" id st
  st="$(timeout 10 scontrol show job "$j" 2>&1)"
  for id in 0 1; do
    local rec
    rec="$(awk -v t="ArrayTaskId=$id" '/^JobId=/ {keep = index($0, t " ") > 0 || $0 ~ t "$"} keep' <<<"$st")"
    grep -q 'JobState=COMPLETED' <<<"$rec" || fail "$name: task $id not COMPLETED: $(grep -o 'JobState=[A-Z_]*' <<<"$rec")"
    grep -q 'ExitCode=0:0' <<<"$rec" || fail "$name: task $id exit code: $(grep -o 'ExitCode=[0-9:]*' <<<"$rec")"
    grep -q "Restarts=$want " <<<"$rec" || fail "$name: task $id: $(grep -o 'Restarts=[0-9]*' <<<"$rec"), expected $want"
    [[ -f "$S/$name/result.$id" ]] || fail "$name: task $id wrote no result"
    grep -q "restarts=$want\$" "$S/$name/result.$id" || fail "$name: task $id result: $(cat "$S/$name/result.$id")"
  done
}

# event_time NAME ID WHAT [N]: the N-th (default 1st) timestamp of an event line
event_time() {
  awk -v w="$3" -v n="${4:-1}" '$1 == w && ++c == n {print $NF}' "$S/$1/events.$2"
}

# ---- 1. plain 2-task array
t1="$(now)"
J1="$(submit plain 5 --array=0-1%2 --requeue --signal=B:USR1@5)" || fail "sbatch failed"
wait_done "$J1" 60 || fail "plain: array $J1 not done after 60 s"
lat1="$(since "$t1")"
check_array plain "$J1" 0
say "1. plain array $J1: both tasks COMPLETED, results present; submit -> all done ${lat1} s"

# ---- 2. preemption by an explicit USR1 (scancel --signal=USR1 --batch), requeue, resume
t2="$(now)"
J2="$(submit scancel 600 --array=0-1%2 --requeue)" || fail "sbatch failed"
deadline=$((SECONDS + 30))
until [[ "$(timeout 10 squeue -h -j "$J2" -t RUNNING -o %i | wc -l)" == 2 ]] &&
      [[ -f "$S/scancel/events.0" && -f "$S/scancel/events.1" ]]; do
  (( SECONDS < deadline )) || fail "scancel: tasks not running after 30 s"
  sleep 0.2
done
sleep 1   # let the batch scripts reach their trap (installed first thing; this only makes the demo tidy)
ts="$(now)"
timeout 10 scancel --signal=USR1 --batch "$J2" || fail "scancel --signal=USR1 --batch failed"
wait_done "$J2" 90 || fail "scancel: array $J2 not done 90 s after the signal"
lat2="$(since "$t2")"
check_array scancel "$J2" 1
for id in 0 1; do
  grep -q '^usr1 ' "$S/scancel/events.$id" || fail "scancel: task $id never saw USR1"
  grep -q '^requeue failed' "$S/scancel/events.$id" && fail "scancel: task $id: scontrol requeue failed: $(cat "$S/scancel/events.$id")"
  from="$(sed -n 's/.*resumed_from=\([0-9]*\).*/\1/p' "$S/scancel/result.$id")"
  (( from > 0 && from < 600 )) || fail "scancel: task $id resumed from step '$from', expected a checkpoint in (0, 600)"
  # --open-mode=append keeps the first run's output; the default (truncate) would lose it.
  grep -q 'run with restarts=0' "$S/scancel/slurm-${J2}_$id.out" && grep -q 'run with restarts=1' "$S/scancel/slurm-${J2}_$id.out" ||
    fail "scancel: task $id output lacks one of the two runs: $(cat "$S/scancel/slurm-${J2}_$id.out")"
done
requeue_at="$(event_time scancel 0 requeue)"; restart_at="$(awk '$1 == "start" && /restarts=1/ {print $NF}' "$S/scancel/events.0")"
usr1_at="$(event_time scancel 0 usr1)"
say "2. scancel --signal=USR1 --batch on $J2: USR1 trapped and forwarded, checkpoint saved, task requeued" \
    "and resumed (restarts=1) in both tasks; scancel -> USR1 in the task" \
    "$(awk -v a="$ts" -v b="$usr1_at" 'BEGIN {printf "%.2f", b - a}') s; requeue -> restart $(awk -v a="$requeue_at" -v b="$restart_at" 'BEGIN {printf "%.1f", b - a}') s;" \
    "submit -> all done ${lat2} s"

# ---- 3. preemption by SLURM's own warning signal ahead of the time limit
if (( QUICK )); then
  say "3. --signal=B:USR1@40 with --time=1 skipped (--quick)"
else
  t3="$(now)"
  J3="$(submit timelimit 1200 --array=0-1%2 --requeue --time=1 --signal=B:USR1@40)" || fail "sbatch failed"
  wait_done "$J3" 150 || fail "timelimit: array $J3 not done after 150 s"
  lat3="$(since "$t3")"
  check_array timelimit "$J3" 1
  for id in 0 1; do
    grep -q '^usr1 ' "$S/timelimit/events.$id" || fail "timelimit: task $id never saw USR1"
    grep -q '^requeue failed' "$S/timelimit/events.$id" && fail "timelimit: task $id: scontrol requeue failed"
  done
  st0="$(event_time timelimit 0 start)"; u0="$(event_time timelimit 0 usr1)"
  say "3. --time=1 --signal=B:USR1@40 on $J3: USR1 came $(awk -v a="$st0" -v b="$u0" 'BEGIN {printf "%.1f", b - a}') s" \
      "after the task started (limit 60 s), task requeued and resumed (restarts=1) in both tasks;" \
      "submit -> all done ${lat3} s"
fi

t4="$(now)"
pids=()
for f in munge/munged.pid run/slurmctld.pid run/slurmd.pid; do pids+=("$(cat "$S/cluster/$f")"); done
"$CLUSTER" stop "$S/cluster" || fail "stop failed"
for f in munge/munged.pid run/slurmctld.pid run/slurmd.pid; do
  [[ ! -f "$S/cluster/$f" ]] || fail "stop left $f behind"
done
for p in "${pids[@]}"; do  # gone, or a zombie waiting for init to reap it
  st="$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)"
  [[ -z "$st" || "$st" == Z ]] || fail "daemon pid $p is still running after stop"
done
"$CLUSTER" status "$S/cluster" >/dev/null; [[ $? == 3 ]] || fail "status after stop is not 'not running'"
say "cluster stopped in $(since "$t4") s; total $(since "$t0") s"
say "PASS"
