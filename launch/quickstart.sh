#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# README command 1: install what is missing, build, and run a small dispatch/combine
# sweep on 4 ranks split into 2 emulated nodes (EPCOMM_RANKS_PER_NODE=2), so the
# inter-node path runs on one machine. Prints the bench's table and writes its JSON
# lines (one object per configuration) to build/quickstart.json.
set -euo pipefail
cd "$(dirname "$0")/.."

# Everything the bench is asked to do, in one place (see bench/README.md).
# shellcheck disable=SC2054  # "1,2" is one comma list argument
BENCH_ARGS=(--tokens 256 --hidden 7168 --experts 32 --topk 8 --max-nodes 1,2 --dtype bf16
            --iters 10 --warmup 3 --json-out build/quickstart.json)
RANKS=4
RANKS_PER_NODE=2

bash launch/setup.sh
source launch/mpi_env.sh

export EPCOMM_RANKS_PER_NODE=$RANKS_PER_NODE
cmd=("${EPCOMM_MPIRUN[@]}" -np "$RANKS" -x EPCOMM_RANKS_PER_NODE build/bench/epcomm-bench "${BENCH_ARGS[@]}")
echo "== quickstart: EPCOMM_RANKS_PER_NODE=$EPCOMM_RANKS_PER_NODE ${cmd[*]}"
"${cmd[@]}"
echo "== quickstart: JSON lines in build/quickstart.json"
