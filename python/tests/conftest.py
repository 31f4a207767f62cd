# SPDX-License-Identifier: MIT
"""pytest under mpirun: every rank runs every test, in the same order. Tests make
all their collective calls before they assert, so a failure on one rank does not
leave the others waiting; mpirun fails the run if any rank fails."""

import os
import sys

import pytest
import torch
from mpi4py import MPI

# examples/torch_moe.py is the model the training test checks.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))


@pytest.fixture(scope="session")
def comm():
    return MPI.COMM_WORLD


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


def pytest_sessionfinish(session, exitstatus):
    # No test collected must fail the run, not pass it as "nothing failed".
    if session.testscollected == 0:
        session.exitstatus = 5
