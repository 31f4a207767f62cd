#!/usr/bin/env bash
# README command 1: install, build, and run a small multi-rank dispatch/combine
# sweep (4 ranks as 2 emulated nodes) that prints a results table and writes
# build/quickstart.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
source launch/mpi_env.sh

SWEEP=(--tokens 256 --hidden 7168 --experts 32 --topk 8 --max-nodes 1,2 --dtype bf16 --warmup 3 --iters 10)
echo "== quickstart: EPCOMM_RANKS_PER_NODE=2 ${EPCOMM_MPIRUN[*]} -np 4 build/bench/epcomm-bench ${SWEEP[*]}"
EPCOMM_RANKS_PER_NODE=2 "${EPCOMM_MPIRUN[@]}" -np 4 build/bench/epcomm-bench "${SWEEP[@]}" \
  --json-out build/quickstart.jsonl
