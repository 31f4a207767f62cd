# SPDX-License-Identifier: MIT
# shellcheck shell=bash
# How to start ranks on this one machine, the one place the flags are written:
# sourced by launch/quickstart.sh, the install and fault tests and the single-host
# bench sweeps; tests/CMakeLists.txt reads the EPCOMM_MPIRUN line below for the
# multi-rank tests, so keep it on one line, as "EPCOMM_MPIRUN=(mpirun FLAGS...)".
# As root Open MPI refuses to run unless told; with more ranks than cores it refuses
# unless oversubscription is allowed; shared memory (vader) is the only transport a
# single host needs.
if [[ $(id -u) -eq 0 ]]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# shellcheck disable=SC2034,SC2054  # used by the sourcing scripts; "self,vader" is one word
EPCOMM_MPIRUN=(mpirun --oversubscribe --bind-to none --mca btl self,vader)
