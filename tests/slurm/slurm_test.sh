#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# launch/epcomm-run under a real Slurm: starts slurmctld and slurmd (Debian's
# slurm-wlm 22.05) on this one host from a generated configuration, then runs the
# same 4-rank epcomm-bench job (2 emulated nodes) twice: with mpirun, and as
#   salloc -N1 -n4 launch/epcomm-run --oversubscribe -- epcomm-bench ...
# (srun inside the allocation, with the PMIx or else the PMI-2 plugin).
# Every row must say check=true, and both launches must give the same rows:
# configuration, byte counts and check (times differ).
#   tests/slurm/slurm_test.sh EPCOMM_BENCH      (ctest: slurm.bench)
# Exit 77 (skipped) without root, without the Slurm packages (launch/setup.sh --dev),
# without an MPI plugin in srun, with the test's ports taken, or when the daemons do
# not come up here (their logs are printed). The daemons are stopped on exit.
set -euo pipefail
bench=$(realpath "${1:?usage: slurm_test.sh EPCOMM_BENCH}")
root=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=launch/mpi_env.sh
source "$root/launch/mpi_env.sh"

skip() { echo "slurm_test: $*, skipped"; exit 77; }
((EUID == 0)) || skip "needs root (the daemons run as root)"
for tool in slurmctld slurmd salloc srun sinfo; do
  command -v "$tool" >/dev/null || skip "$tool not installed (launch/setup.sh --dev)"
done
ctld_port=16817 d_port=16818
for port in $ctld_port $d_port; do
  if (: </dev/tcp/127.0.0.1/"$port") 2>/dev/null; then skip "port $port is taken"; fi
done

work=$(mktemp -d)
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

host=$(hostname -s)
mkdir -p "$work/state" "$work/spool"
export SLURM_CONF=$work/slurm.conf
# One node with 4 CPUs whatever the machine has (config_overrides): the job is
# oversubscribed like every multi-rank test here. No authentication daemon
# (auth/none) and no cgroups: a throwaway cluster of one host.
cat >"$SLURM_CONF" <<CONF
ClusterName=epcommtest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
AuthType=auth/none
CredType=cred/none
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=4 State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
slurmctld -D -f "$SLURM_CONF" >"$work/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" >"$work/slurmd.out" 2>&1 &
pids+=($!)
up=0
for _ in $(seq 1 40); do
  if [[ $(sinfo -h -o %t 2>/dev/null) == idle ]]; then up=1; break; fi
  sleep 0.5
done
if ((!up)); then
  tail -n 20 "$work"/*.out "$work"/*.log 2>/dev/null || true
  skip "slurmctld + slurmd did not bring the node up within 20 s"
fi
# srun's MPI plugins come from the packages: PMIx where built, else PMI-2; chosen
# as a user would, through SLURM_MPI_TYPE (srun --mpi).
plugins=$(srun --mpi=list 2>&1 || true)
if grep -qw pmix <<<"$plugins"; then mpi=pmix
elif grep -qw pmi2 <<<"$plugins"; then mpi=pmi2
else skip "srun has neither the pmix nor the pmi2 plugin"
fi
export SLURM_MPI_TYPE=$mpi
echo "-- Slurm up: node $host idle, srun --mpi=$mpi"

# shellcheck disable=SC2054  # "1,2" and "bf16,f32" are comma lists, one argument each
args=(--tokens 64 --hidden 512 --experts 8 --topk 2 --max-nodes 1,2 --dtype bf16,f32 --warmup 1 --iters 2)
export EPCOMM_RANKS_PER_NODE=2 EPCOMM_TIMEOUT_S=60
echo "-- mpirun: 4 ranks, 2 emulated nodes"
"${EPCOMM_MPIRUN[@]}" -np 4 -x EPCOMM_RANKS_PER_NODE -x EPCOMM_TIMEOUT_S "$bench" "${args[@]}" \
  --json-out "$work/mpirun.jsonl" >/dev/null
echo "-- salloc -N1 -n4 launch/epcomm-run --oversubscribe -- epcomm-bench"
timeout 300 salloc -N1 -n4 "$root/launch/epcomm-run" --oversubscribe -- "$bench" "${args[@]}" \
  --json-out "$work/slurm.jsonl"

# The rows without their times: the fields both launches must agree on.
rows() {
  grep -o -E '"(ranks|nodes|tokens|hidden|experts|topk|max_nodes|dtype|dispatch_format|combine_format|internode_bytes|intranode_bytes|layout_bytes|check)": ?("[^"]*"|[0-9a-z.]+)' "$1" |
    paste -sd' ' | sed 's/"ranks"/\n"ranks"/g' | sed '/^$/d'
}
rows "$work/mpirun.jsonl" >"$work/mpirun.rows"
rows "$work/slurm.jsonl" >"$work/slurm.rows"
n=$(wc -l <"$work/slurm.rows")
((n == 4)) || { cat "$work/slurm.jsonl"; echo "FAIL: $n rows under Slurm, expected 4" >&2; exit 1; }
if grep -v -q -E '"check": ?true' "$work/slurm.rows" "$work/mpirun.rows"; then
  cat "$work/slurm.rows" "$work/mpirun.rows"; echo "FAIL: a row without check=true" >&2; exit 1
fi
diff "$work/mpirun.rows" "$work/slurm.rows" || { echo "FAIL: Slurm and mpirun rows differ" >&2; exit 1; }
echo "-- Slurm and mpirun: the same $n rows, all check=true"
