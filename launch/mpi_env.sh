# SPDX-License-Identifier: MIT
# shellcheck shell=bash
# Sourced by launch/quickstart.sh and launch/test.sh: how to start ranks on this one
# machine. As root Open MPI refuses to run unless told; with more ranks than cores it
# refuses unless oversubscription is allowed; shared memory (vader) is the only
# transport a single host needs (the same flags tests/CMakeLists.txt passes).
if [[ $(id -u) -eq 0 ]]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# shellcheck disable=SC2034,SC2054  # used by the sourcing scripts; "self,vader" is one word
EPCOMM_MPIRUN=(mpirun --oversubscribe --bind-to none --mca btl self,vader)
