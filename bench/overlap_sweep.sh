#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The overlap measurements of docs/overlap.md on a many-core host (the 16-core host
# of an H100 machine; the GPU is not used). Builds epcomm-overlap-bench
# (Release), then, within BUDGET_S seconds in all (default 540; a stage that would
# not fit is skipped and says so):
#   throttled: 4 emulated hosts (launch/emulate-cluster, 1 rank each, links limited
#              to $RATE per direction), per schedule one job per (ffn, attention
#              GEMMs) pair; each pair gives attention and routed experts the same
#              flops (attn_gemms = 16 ffn / hidden at top-8), compute grows across them.
#   shm:       4 ranks as 2 emulated nodes on shared memory (EPCOMM_RANKS_PER_NODE=2).
# Every rank gets 2 GEMM threads on 2 cores of its own and its progress thread on a
# third (bench/pin_rank.sh): 12 of 16 cores, the rest left to the kernel's network
# path and MPI. Writes to OUTDIR: machine.txt, sweep.log, and JSON lines
# overlap-{throttled,shm}-{prefill,decode}.jsonl, links.jsonl (link byte counters).
#   bench/overlap_sweep.sh OUTDIR [BUDGET_S]
# Environment: EPCOMM_CMAKE_ARGS (e.g. -DCMAKE_PREFIX_PATH=$PWD/.deps/eigen),
# EPCOMM_BUILD_DIR (default /tmp/epcomm-overlap), RATE (default 2gbit; none: links
# not throttled), QDISC (tbf or htb, default tbf), ITERS (10), PAIRS (FFN:ATTN list,
# default "64:1 128:2 256:4 512:8"), SCHEDULES (default "prefill decode"), SHM (0:
# skip the shared-memory runs); QUICK=1 shrinks every size (a smoke test of the
# script on a small machine).
set -uo pipefail
cd "$(dirname "$0")/.." || exit
root=$PWD
# shellcheck source=launch/mpi_env.sh
source launch/mpi_env.sh
out=$(mkdir -p "${1:?usage: bench/overlap_sweep.sh OUTDIR [BUDGET_S]}" && cd "$1" && pwd)
budget=${2:-540}
start=$SECONDS
build=${EPCOMM_BUILD_DIR:-/tmp/epcomm-overlap}
rate=${RATE:-2gbit}
iters=${ITERS:-10}
gemm=2
exec > >(tee -a "$out/sweep.log") 2>&1

left() { echo $((budget - (SECONDS - start))); }
# run_stage NAME MIN_S CMD...: runs CMD under the time left, unless less than MIN_S is left.
run_stage() {
  local name=$1 need=$2 t
  shift 2
  t=$(left)
  if ((t < need)); then
    echo "== SKIPPED $name: ${t}s left, needs ~${need}s"
    return 1
  fi
  echo "== $name (${t}s left) $(date +%T)"
  timeout -k 10 "$t" "$@"
  local rc=$?
  ((rc == 0)) || echo "== $name: exit status $rc"
  return $rc
}

{
  nproc
  lscpu | grep -E 'Model name|^CPU\(s\)|Thread\(s\) per core|Core\(s\) per socket|NUMA node\(s\)|Flags' | cut -c1-200
  uname -r
  mpirun --version | head -1
  grep -E 'MemTotal' /proc/meminfo
} | tee "$out/machine.txt"

bench=$build/bench/epcomm-overlap-bench
build_it() {
  # shellcheck disable=SC2086  # EPCOMM_CMAKE_ARGS is a list of arguments
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DEPCOMM_BUILD_TESTS=OFF -DEPCOMM_WITH_CUDA=OFF -DEPCOMM_WITH_VERBS=OFF \
    ${EPCOMM_CMAKE_ARGS:-} >"$build.cmake.log" 2>&1 || { tail -30 "$build.cmake.log"; return 1; }
  cmake --build "$build" -j"$(nproc)" --target epcomm-overlap-bench >"$build.build.log" 2>&1 ||
    { tail -40 "$build.build.log"; return 1; }
}
export build
export -f build_it
run_stage build 60 bash -c build_it || exit 1
echo "== built in $((SECONDS - start)) s"

# Can this machine emulate hosts? Namespaces, veth, a bridge and tbf.
netns_ok=0
probe() {
  ip netns add epcprobe &&
    ip link add epcprobev type veth peer name eth0 netns epcprobe &&
    ip link add epcprobebr type bridge &&
    tc qdisc replace dev epcprobev root tbf rate 1gbit burst 262144 latency 100ms &&
    command -v unshare >/dev/null
}
if probe; then netns_ok=1; fi
ip link del epcprobev 2>/dev/null
ip link del epcprobebr 2>/dev/null
ip netns del epcprobe 2>/dev/null
echo "== network namespaces + veth + bridge + tbf: $( ((netns_ok)) && echo usable || echo NOT usable)" | tee -a "$out/machine.txt"
{
  echo "== name lookup of an emulated host (should fail): $(getent hosts epcn0 || echo none)"
  echo "== Open MPI variables: $(env | grep -E '^(OMPI_MCA|PMIX_MCA|OPAL)_' | tr '\n' ' ')"
} | tee -a "$out/machine.txt"
if ((netns_ok)) && ! run_stage "emulated cluster smoke test" 20 "$root/launch/emulate-cluster" --hosts 2 -- hostname; then
  netns_ok=0
fi

warmup=1
# 512 tokens: each transfer lasts ~30 ms on the link, so the tbf bucket (256 KB,
# full again after an idle gap) is a small part of it (see docs/overlap.md).
shape=(--tokens 512 --hidden 1024 --layers 4)
# shellcheck disable=SC2054  # "32,128" and "0,1" are one word each
shm_shape=(--tokens 512 --hidden 2048 --ffn 32,128 --attn-gemms 0,1 --layers 4)
pairs=${PAIRS:-64:1 128:2 256:4 512:8}
schedules=${SCHEDULES:-prefill decode}
link=(--qdisc "${QDISC:-tbf}")
[[ $rate == none ]] || link+=(--rate "$rate")
if [[ ${QUICK:-0} == 1 ]]; then
  gemm=1 warmup=0 iters=2
  shape=(--tokens 32 --hidden 256 --layers 2)
  shm_shape=(--tokens 32 --hidden 256 --ffn 32 --attn-gemms 1 --layers 2)
  pairs="64:1"
fi
throttled() {  # throttled SCHEDULE FFN ATTN_GEMMS
  local tmp=/tmp/overlap-job.jsonl links=/tmp/overlap-links.json
  rm -f "$tmp" "$links"
  run_stage "throttled $1 ffn $2 attn $3" 40 \
    "$root/launch/emulate-cluster" --hosts 4 "${link[@]}" --counters "$links" -- \
    "$root/bench/pin_rank.sh" $gemm "$bench" --schedule "$1" --ffn "$2" --attn-gemms "$3" "${shape[@]}" \
    --experts 32 --topk 8 --gemm-threads $gemm --warmup $warmup --iters "$iters" --json-out "$tmp"
  [[ -s $tmp ]] && cat "$tmp" >>"$out/overlap-throttled-$1.jsonl"
  [[ -s $links ]] && sed "s/^{/{\"schedule\": \"$1\", \"ffn\": $2, \"attn_gemms\": $3, /" "$links" >>"$out/links.jsonl"
  return 0
}
shm() {  # shm SCHEDULE
  run_stage "shm $1" 60 env EPCOMM_RANKS_PER_NODE=2 \
    "${EPCOMM_MPIRUN[@]}" -np 4 -x EPCOMM_RANKS_PER_NODE "$root/bench/pin_rank.sh" $gemm "$bench" \
    --schedule "$1" "${shm_shape[@]}" --experts 32 --topk 8 --gemm-threads $gemm \
    --warmup $warmup --iters "$iters" --json-out "$out/overlap-shm-$1.jsonl"
}

if ((netns_ok)); then
  for schedule in $schedules; do
    for p in $pairs; do throttled "$schedule" "${p%:*}" "${p#*:}"; done
  done
fi
if [[ ${SHM:-1} != 0 ]]; then
  for schedule in $schedules; do shm "$schedule"; done
fi
echo "== done in $((SECONDS - start)) s"
sleep 1  # let tee write the log out
