#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The verbs transport against MPI over TCP, in the soft-RoCE guest
# (launch/verbs-vm): the same exchange, the same run, plus the ceilings of that
# virtual link. Results go to OUTDIR (default docs/results):
#   verbs-vm-bench.jsonl   epcomm-bench rows, one per (transport, configuration)
#   verbs-vm-ceiling.txt   ibv_rc_pingpong and verbs_write_bw on rxe0
#
#   bench/verbs_vm_sweep.sh [OUTDIR]      (after building build/)
# Inside the guest both ranks share one 2-vCPU TCG machine: ratios between the
# transports mean something, absolute numbers do not.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mkdir -p "${1:-docs/results}" && cd "${1:-docs/results}" && pwd)
build=${EPCOMM_BUILD_DIR:-build}
for bin in "$build/bench/epcomm-bench" "$build/tests/verbs_write_bw"; do
  [[ -x $bin ]] || { echo "verbs_vm_sweep: $bin not built" >&2; exit 2; }
done

# Two ranks as two nodes; MPI restricted to TCP (and self), so "mpi" is MPI over
# the guest's TCP stack and "verbs" is epcomm's RDMA writes over rxe0. Layout
# messages go over MPI in both.
guest_script=$(cat <<'GUEST'
set -e
run=(mpirun --oversubscribe --bind-to none --mca pml ob1 --mca btl self,tcp -n 2)
{
  echo "## ibv_rc_pingpong (send/receive ping-pong over rxe0 loopback)"
  for s in 65536 1048576; do
    ibv_rc_pingpong -d rxe0 -g 1 -s $s -n 200 > /dev/null & sleep 1
    ibv_rc_pingpong -d rxe0 -g 1 -s $s -n 200 localhost | tail -2; wait
  done
  echo "## verbs_write_bw (one-way RDMA writes with immediate, 64 in flight)"
  "${run[@]}" "$BUILD/tests/verbs_write_bw" 65536 1048576 8388608
} > "$EPCOMM_VM_OUT/verbs-vm-ceiling.txt" 2>&1
cat "$EPCOMM_VM_OUT/verbs-vm-ceiling.txt"
EPCOMM_RANKS_PER_NODE=1 "${run[@]}" "$BUILD/bench/epcomm-bench" --transport mpi,verbs \
  --tokens 128,512 --hidden 7168 --experts 16 --topk 8 --dispatch-format bf16,fp8 \
  --warmup 2 --iters 10 --json-out "$EPCOMM_VM_OUT/verbs-vm-bench.jsonl"
GUEST
)
BUILD=$(cd "$build" && pwd) launch/verbs-vm/run-in-vm --timeout 580 --out "$out" -- \
  env BUILD="$(cd "$build" && pwd)" bash -c "$guest_script"
