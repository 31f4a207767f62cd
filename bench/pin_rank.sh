#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Gives each MPI rank on this machine its own cores: GEMM_THREADS cores for the
# OpenMP threads of the matrix multiplies (one thread per core, bound) and the next
# core for epcomm's progress thread (EPCOMM_PROGRESS_CORE). Rank r takes cores
# [r*(GEMM_THREADS+1), (r+1)*(GEMM_THREADS+1)), counted from FIRST_CORE (default 0).
# For runs where mpirun cannot bind (launch/emulate-cluster runs every emulated
# host on the same cores, so it starts ranks with --bind-to none).
#   mpirun ... bench/pin_rank.sh GEMM_THREADS PROGRAM ARGS...
set -euo pipefail
gemm=${1:?usage: pin_rank.sh GEMM_THREADS PROGRAM ARGS...}
shift
rank=${OMPI_COMM_WORLD_RANK:-${PMIX_RANK:-0}}
cores=$(nproc --all)
per=$((gemm + 1))
first=$((${FIRST_CORE:-0} + rank * per))
if ((per > cores)); then
  echo "pin_rank.sh: $per cores per rank but the machine has $cores" >&2
  exit 2
fi
if ((first + per > cores)); then
  # More ranks than core sets (a small test machine): wrap around, sharing cores.
  first=$(((first % cores) / per * per))
  echo "pin_rank.sh: rank $rank: not enough cores, sharing cores $first.. with another rank" >&2
fi
places=""
for ((c = first; c < first + gemm; ++c)); do places+="${places:+,}{$c}"; done
export OMP_NUM_THREADS=$gemm OMP_PLACES=$places OMP_PROC_BIND=close
export EPCOMM_PROGRESS_CORE=$((first + gemm))
echo "pin_rank.sh: rank $rank on $(hostname): GEMM threads on cores $places, progress thread on core $EPCOMM_PROGRESS_CORE" >&2
exec taskset -c "$first-$((first + gemm))" "$@"
