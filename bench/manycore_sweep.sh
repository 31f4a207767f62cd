#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Build, test and measure on a many-core host (used on the 16-core host of an H100
# machine; the GPU is not used). Writes logs and JSON lines to
# OUTDIR. Extra CMake arguments come from EPCOMM_CMAKE_ARGS (e.g. a prefix path
# where Eigen lives).
#   bench/manycore_sweep.sh OUTDIR
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bench/manycore_sweep.sh OUTDIR}
mkdir -p "$out"
# shellcheck source=launch/mpi_env.sh
source launch/mpi_env.sh
build=${EPCOMM_BUILD_DIR:-/tmp/epcomm-manycore}
{ nproc; lscpu | grep -E 'Model name|^CPU\(s\)|NUMA node\(s\)'; mpirun --version | head -1; } | tee "$out/machine.txt"

# shellcheck disable=SC2086  # EPCOMM_CMAKE_ARGS is a word list on purpose
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release ${EPCOMM_CMAKE_ARGS:-} > "$out/cmake.log" 2>&1
cmake --build "$build" -j"$(nproc)" > "$out/build.log" 2>&1
ctest --test-dir "$build" -j4 --output-on-failure > "$out/ctest.log" 2>&1 || { tail -40 "$out/ctest.log"; exit 1; }
tail -3 "$out/ctest.log"

run=("${EPCOMM_MPIRUN[@]}")
echo "== core: 8 ranks as 2 nodes"
EPCOMM_RANKS_PER_NODE=4 "${run[@]}" -np 8 "$build/bench/epcomm-bench" --tokens 256,1024 --hidden 7168 \
  --experts 64 --topk 8 --max-nodes 1,2 --dtype bf16 --warmup 3 --iters 20 --json-out "$out/core-8r2n.jsonl"

# 4 ranks x (3 GEMM threads + 1 progress thread) = 16 cores; ffn sweeps compute
# from below to above the communication time.
for schedule in prefill decode; do
  echo "== overlap: $schedule, 4 ranks as 2 nodes, 3 GEMM threads per rank"
  EPCOMM_RANKS_PER_NODE=2 OMP_PROC_BIND=false "${run[@]}" -np 4 "$build/bench/epcomm-overlap-bench" \
    --schedule "$schedule" --tokens 1024 --hidden 4096 --ffn 16,64,256,1024 --experts 32 --topk 8 \
    --attn-gemms 0,1 --layers 3 --gemm-threads 3 --warmup 1 --iters 5 --json-out "$out/overlap-$schedule.jsonl"
done
