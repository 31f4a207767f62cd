#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Fault tests on an emulated cluster (ctest label "cluster"):
#   fault_test.sh stop|linkdown|kill|peerdeath|setupkill|badlaunch DRIVER
# DRIVER is build/tests/epcomm-cluster-driver. Each case starts a job with
# launch/emulate-cluster, injects its fault from outside and checks what the
# issue promises:
#   stop      a rank gets SIGSTOP mid-exchange: every other rank fails within
#             EPCOMM_TIMEOUT_S with a timeout naming the stalled rank and the phase,
#             all within 100 ms of the first (the first tells the others)
#   linkdown  host 1's link goes down mid-exchange: host 0's ranks fail within
#             EPCOMM_TIMEOUT_S with a timeout naming a rank across the cut and the
#             phase, within 100 ms of each other; then the link comes back (see
#             below) and the job must end
#   kill      a rank gets SIGKILL mid-exchange: the job ends promptly
#   peerdeath a rank gets SIGKILL mid-exchange with the survivors kept alive
#             (orte_enable_recovery): its node peer fails naming it, the others
#             naming that peer, all within 100 ms of each other
#   setupkill a rank gets SIGKILL while Exchange construction holds its new
#             shared memory: the job ends promptly
#   badlaunch mismatched configs, more ranks per node than a host has, a node split
#             that does not divide the host, and no mpirun on PATH: clear errors
# For the first five: the job exits non-zero (peerdeath: the test ends mpirun,
# which outlives its ranks with recovery on), and no process, namespace or
# /dev/shm/epcomm* segment is left behind. Exit 77 (ctest: skipped) where network
# namespaces cannot be created.
set -euo pipefail

case_name=${1:?usage: fault_test.sh stop|linkdown|kill|peerdeath|setupkill|badlaunch DRIVER}
driver=${2:?usage: fault_test.sh CASE DRIVER}
root=$(cd "$(dirname "$0")/../.." && pwd)
cluster=$root/launch/emulate-cluster
timeout_s=5        # EPCOMM_TIMEOUT_S given to the ranks
grace_s=2          # the driver's --exit-grace-s
spread_bound_ms=100  # the first rank's failure reaches the others within this
hosts=2 ranks_per_host=2  # epcomm ranks fill the hosts in order
work=$(mktemp -d /tmp/epcomm-fault.XXXXXX)
log=$work/job.log
job_pid=""
cluster_args=()    # extra emulate-cluster arguments of a case

fail() { echo "FAIL ($case_name): $*" >&2; [[ -f $log ]] && sed 's/^/  | /' "$log" >&2; exit 1; }
cleanup() {
  # Only if an assertion failed while the job still ran: end it (its teardown runs).
  [[ -n $job_pid ]] && kill -TERM "$job_pid" 2>/dev/null && wait "$job_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

[[ $(id -u) -eq 0 ]] || { echo "SKIP: the cluster tests need root (network namespaces)"; exit 77; }
probe=epcomm-probe-$$
if ! ip netns add "$probe" 2>"$work/err"; then
  echo "SKIP: cannot create network namespaces here: $(cat "$work/err")"
  exit 77
fi
ip netns del "$probe"
if [[ $(id -u) -eq 0 ]]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

# Starts DRIVER for up to 60 s on 2 hosts x 2 ranks in the background.
launch_job() {
  EPCOMM_TIMEOUT_S=$timeout_s "$cluster" --hosts "$hosts" --ranks-per-host "$ranks_per_host" "${cluster_args[@]}" -- \
    "$driver" --seconds 60 --tokens 64 --hidden 1024 --exit-grace-s "$grace_s" >"$log" 2>&1 &
  job_pid=$!
}

# launch_job, then wait until it exchanges.
start_job() {
  launch_job
  local i
  for ((i = 0; i < 120; ++i)); do
    grep -q '^cluster_driver: exchanging' "$log" && return 0
    kill -0 "$job_pid" 2>/dev/null || fail "the job ended before it started exchanging"
    sleep 0.5
  done
  fail "the job did not start exchanging within 60 s"
}

# The pid of the first rank on emulated host $1 (the driver's name, cut to 15 chars).
rank_pid() {
  local pid
  for pid in $(ip netns pids "epcn$1"); do
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == epcomm-cluster- ]] && { echo "$pid"; return 0; }
  done
  fail "no rank process found in namespace epcn$1"
}

# Waits for the job to end within $1 seconds of now and checks the exit status
# and the leftovers.
finish_job() {
  local limit=$1 t0=$SECONDS rc=0
  while kill -0 "$job_pid" 2>/dev/null; do
    ((SECONDS - t0 <= limit)) || fail "the job still runs ${limit}s after the fault"
    sleep 0.5
  done
  wait "$job_pid" || rc=$?
  job_pid=""
  echo "job ended $((SECONDS - t0))s after the fault, exit status $rc"
  ((rc != 0)) || fail "the job exited 0 after the fault"
  ((rc != 77)) || fail "emulate-cluster could not create the cluster"
  ! grep -q 'killing processes left in' "$log" || fail "processes outlived the job (killed by the teardown)"
  ! grep -q 'leftover shared-memory segment' "$log" || fail "an epcomm shared-memory segment outlived the job"
  ! ip netns list | grep -q '^epcn' || fail "a namespace outlived emulate-cluster"
  ! pgrep -f -- "^$driver " >/dev/null || fail "a driver process outlived the job: $(pgrep -af -- "^$driver ")"
}

# True if error line $1 ("... waiting for ranks 0 (receive), 2 (receive)") lists
# a rank matching the pattern $2 anywhere in its list, not only first.
waits_for() {
  local rank
  for rank in $(grep -oE '[0-9]+ \(' <<<"${1##*waiting for ranks }" | tr -d ' ('); do
    [[ $rank =~ ^$2$ ]] && return 0
  done
  return 1
}

# True if driver rank $1 reported a timeout waiting for rank(s) $2.
names_stalled() {
  local line
  line=$(grep "^cluster_driver: rank $1 .*FAILED.*: timeout: .*waiting for ranks " "$log") || return 1
  waits_for "$line" "$2"
}

# True if rank $1 shares an emulated host with a rank matching the pattern $2. A
# rail peer there waits for its stalled node peer (shared memory) and so holds up
# the ranks that wait for it; it may be told of the failure before its own timeout
# names the stalled rank.
beside_stalled() {
  local r
  for ((r = 0; r < hosts * ranks_per_host; ++r)); do
    [[ $r =~ ^$2$ ]] && ((r / ranks_per_host == $1 / ranks_per_host)) && return 0
  done
  return 1
}

# Every rank in $1 (a space-separated list) printed a timeout naming a phase and
# either the stalled rank(s) $2 or a rank that waits for them (its own timeout
# says so, or it lives on a stalled rank's host: a rank hears from one rail peer
# per remote node, so it names the peer that the stall holds up), or it failed at once because another rank gave up first and told every rank
# (its abort message or its node's shared failure record: "group failed: ... the
# group failed because of rank N: ...").
expect_timeouts() {
  local r line peer
  for r in $1; do
    line=$(grep "^cluster_driver: rank $r .*FAILED" "$log" || true)
    [[ -n $line ]] || fail "rank $r reported no error"
    if [[ $line =~ group\ failed:.*because\ of\ rank\ ([0-9]+) ]]; then
      peer=${BASH_REMATCH[1]}
      grep -q "^cluster_driver: rank $peer .*FAILED.*: timeout: " "$log" ||
        fail "rank $r blames rank $peer, which did not time out: $line"
      echo "ok: $line"
      continue
    fi
    [[ $line == *": timeout: "* ]] || fail "rank $r failed, but not with a timeout: $line"
    [[ $line == *"in phase '"* ]] || fail "rank $r's error names no phase: $line"
    if ! waits_for "$line" "$2"; then
      [[ $line =~ waiting\ for\ ranks\ ([0-9]+) ]] || fail "rank $r's error names no rank: $line"
      peer=${BASH_REMATCH[1]}
      names_stalled "$peer" "$2" || beside_stalled "$peer" "$2" ||
        fail "rank $r's error names rank $peer, which neither waits for rank(s) $2 nor shares their host: $line"
    fi
    echo "ok: $line"
  done
}

# The failure reaches every rank in $1 within $2 ms of the first of them: each
# rank's "FAILED at U" (Unix time of its catch; the emulated hosts share one clock)
# is at most $2 ms after the earliest. Prints the spread.
expect_spread_within() {
  local r line at first="" last=""
  for r in $1; do
    line=$(grep -m1 "^cluster_driver: rank $r .*FAILED at " "$log") || fail "rank $r printed no failure time"
    at=$(sed -E 's/.* FAILED at ([0-9.]+) .*/\1/' <<<"$line")
    first=$(awk -v a="$at" -v f="$first" 'BEGIN { print (f == "" || a < f) ? a : f }')
    last=$(awk -v a="$at" -v l="$last" 'BEGIN { print (l == "" || a > l) ? a : l }')
  done
  local spread_ms
  spread_ms=$(awk -v f="$first" -v l="$last" 'BEGIN { printf "%.1f", (l - f) * 1000 }')
  echo "spread: ranks $1 failed within $spread_ms ms of the first (bound $2 ms)"
  awk -v s="$spread_ms" -v b="$2" 'BEGIN { exit !(s <= b) }' ||
    fail "ranks $1 failed $spread_ms ms apart, over the $2 ms bound"
}

case $case_name in
  stop)
    start_job
    victim=$(rank_pid 1)   # epcomm rank 2, the first rank of host 1
    kill -STOP "$victim"
    finish_job $((timeout_s + grace_s + 20))
    expect_timeouts "0 1 3" 2
    expect_spread_within "0 1 3" "$spread_bound_ms"
    ;;
  linkdown)
    start_job
    ip -n epcn1 link set eth0 down
    # Host 0's ranks time out on host 1's ranks (2 and 3), all within
    # EPCOMM_TIMEOUT_S. Host 1's ranks time out too, but their output, like the
    # daemon's reports, reaches mpirun only over the cut link: with the link left
    # down mpirun would wait out TCP's retransmission timeout (~15 minutes) for
    # that daemon. So once host 0 has reported, the link comes back up (a flap),
    # and the job must then end by itself.
    t0=$SECONDS
    until (($(grep -c '^cluster_driver: rank [01] .*FAILED' "$log") == 2)); do
      ((SECONDS - t0 <= timeout_s + grace_s + 15)) || fail "host 0's ranks did not both fail within $((timeout_s + 15))s"
      sleep 0.5
    done
    ip -n epcn1 link set eth0 up
    finish_job 60
    expect_timeouts "0 1" "[23]"
    # Host 1's ranks hear of it only when the link is back: host 0 alone.
    expect_spread_within "0 1" "$spread_bound_ms"
    ;;
  kill)
    start_job
    victim=$(rank_pid 1)
    kill -KILL "$victim"
    finish_job $((timeout_s + grace_s + 20))
    grep -q 'exited on signal 9\|killed\|signal 9' "$log" || fail "mpirun did not report the killed rank"
    ;;
  peerdeath)
    # As kill, but the runtime keeps the survivors alive (Open MPI's
    # orte_enable_recovery): rank 3 sees its node peer's process gone and fails
    # naming it, and tells the others; all within the bound of the kill.
    cluster_args=(--mpirun-arg=--mca --mpirun-arg=orte_enable_recovery --mpirun-arg=1)
    start_job
    victim=$(rank_pid 1)
    killed_at=$(date +%s.%N)
    kill -KILL "$victim"
    t0=$SECONDS
    until (($(grep -c '^cluster_driver: rank [013] .*FAILED' "$log") == 3)); do
      ((SECONDS - t0 <= timeout_s + grace_s + 15)) || fail "ranks 0, 1, 3 did not all fail"
      sleep 0.5
    done
    line=$(grep '^cluster_driver: rank 3 .*FAILED' "$log")
    [[ $line == *"peer lost: "*"rank 2 (pid $victim, on this node) is gone"* ]] ||
      fail "rank 3 did not name its dead node peer: $line"
    echo "ok: $line"
    for r in 0 1; do
      line=$(grep "^cluster_driver: rank $r .*FAILED" "$log")
      [[ $line == *"group failed: "*"because of rank 3"*"rank 2 (pid $victim"* ]] ||
        fail "rank $r did not fail naming rank 3 and the dead rank: $line"
      echo "ok: $line"
    done
    expect_spread_within "0 1 3" "$spread_bound_ms"
    first=$(grep -ohE 'FAILED at [0-9.]+' "$log" | awk '{print $3}' | sort -n | head -1)
    echo "first failure $(awk -v k="$killed_at" -v f="$first" 'BEGIN { printf "%.1f", (f - k) * 1000 }') ms after the kill"
    # Every rank exits after its grace, but with recovery on, Open MPI 4.1's
    # mpirun stays up; once the ranks are gone, end it (its teardown runs).
    t0=$SECONDS
    while pgrep -f -- "^$driver " >/dev/null; do
      ((SECONDS - t0 <= grace_s + 10)) || fail "a rank still runs $((grace_s + 10))s after failing"
      sleep 0.5
    done
    kill -TERM "$job_pid"
    wait "$job_pid" || true
    job_pid=""
    ! grep -q 'leftover shared-memory segment' "$log" || fail "an epcomm shared-memory segment outlived the job"
    ! ip netns list | grep -q '^epcn' || fail "a namespace outlived emulate-cluster"
    ;;
  setupkill)
    # Every rank holds its new shared memory, not yet shown to its node peers, for
    # 20 s inside Exchange construction (a fault-injection build's
    # EPCOMM_FAULT_SETUP_STALL_S); rank 2 is killed in that window. The job must end
    # at once and leave nothing behind (finish_job: no /dev/shm segment, no process).
    EPCOMM_FAULT_SETUP_STALL_S=20 launch_job
    t0=$SECONDS
    until [[ $(ip netns pids epcn0 2>/dev/null | xargs -r -I{} cat /proc/{}/comm 2>/dev/null |
               grep -c '^epcomm-cluster-$') -eq 2 && -n $(ip netns pids epcn1 2>/dev/null) ]]; do
      ((SECONDS - t0 <= 30)) || fail "the ranks did not start within 30 s"
      sleep 0.2
    done
    sleep 3   # Group construction done, every rank in the stall
    ! grep -q '^cluster_driver: exchanging' "$log" || fail "the job got past construction: no stall (fault injection off?)"
    victim=$(rank_pid 1)
    kill -KILL "$victim"
    finish_job $((grace_s + 10))
    grep -q 'signal 9\|killed' "$log" || fail "mpirun did not report the killed rank"
    ;;
  badlaunch)
    # shellcheck source=launch/mpi_env.sh
    source "$root/launch/mpi_env.sh"
    mpirun=("${EPCOMM_MPIRUN[@]}")
    # expect_launch_error NEEDLE COMMAND...: the launch fails and prints NEEDLE.
    expect_launch_error() {
      local needle=$1 rc=0
      shift
      "$@" >"$log" 2>&1 || rc=$?
      ((rc != 0)) || fail "'$*' exited 0"
      grep -qF -- "$needle" "$log" || fail "'$*' did not say '$needle'"
      echo "ok (exit $rc): $(grep -F -m1 -- "$needle" "$log")"
    }
    expect_launch_error "hidden=" "${mpirun[@]}" -np 1 "$driver" --iters 1 --hidden 1024 : \
      -np 1 "$driver" --iters 1 --hidden 2048
    expect_launch_error "fewer than EPCOMM_RANKS_PER_NODE=4" \
      env EPCOMM_RANKS_PER_NODE=4 "${mpirun[@]}" -np 2 -x EPCOMM_RANKS_PER_NODE "$driver" --iters 1
    expect_launch_error "not a multiple of EPCOMM_RANKS_PER_NODE=2" \
      env EPCOMM_RANKS_PER_NODE=2 "${mpirun[@]}" -np 3 -x EPCOMM_RANKS_PER_NODE "$driver" --iters 1 --experts 24
    # A PATH with every tool of /usr/bin but the MPI launchers.
    mkdir "$work/bin"
    for tool in /usr/bin/*; do
      case ${tool##*/} in mpirun|mpiexec|orterun|srun|mpiexec.*|mpirun.*) ;; *) ln -s "$tool" "$work/bin/" ;; esac
    done
    expect_launch_error "mpirun not found" env PATH="$work/bin" "$root/launch/epcomm-run" -n 2 -- "$driver" --iters 1
    ;;
  *) fail "unknown case (stop|linkdown|kill|peerdeath|setupkill|badlaunch)" ;;
esac
echo "PASS ($case_name)"
