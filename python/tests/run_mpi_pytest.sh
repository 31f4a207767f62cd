#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs the Python suite on every rank of an MPI job (ctest entry python.np4.rpn2).
#   run_mpi_pytest.sh NP PYTHON PACKAGE_DIR TEST_DIR MPIEXEC [MPIEXEC FLAGS...]
# PACKAGE_DIR holds the built epcomm package (<build>/python). The run fails when
# any rank fails (mpiexec's status) and when pytest collected nothing (status 5,
# also from a rank that could not import the suite).
set -uo pipefail
np=$1 python=$2 package_dir=$3 test_dir=$4
shift 4
export PYTHONPATH="$package_dir${PYTHONPATH:+:$PYTHONPATH}"
# Bytecode and the pytest cache stay out of the source tree.
export PYTHONDONTWRITEBYTECODE=1
"$@" -n "$np" "$python" -m pytest -q -rs -p no:cacheprovider --color=no "$test_dir"
rc=$?
if ((rc == 5)); then
  echo "run_mpi_pytest.sh: pytest collected no tests" >&2
elif ((rc != 0)); then
  echo "run_mpi_pytest.sh: a rank failed (status $rc)" >&2
fi
exit $(( rc == 0 ? 0 : 1 ))
