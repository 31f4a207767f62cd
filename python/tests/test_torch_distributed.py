# SPDX-License-Identifier: MIT
"""A Buffer works in a job where torch.distributed is initialised too: epcomm
uses its own duplicate of the MPI communicator, gloo its own sockets."""

import socket

import pytest
import torch
import torch.distributed as dist

import epcomm
from reference import random_inputs

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="this torch has no torch.distributed with gloo")


def test_buffer_beside_torch_distributed(comm):
    rank, P = comm.Get_rank(), comm.Get_size()
    address = None
    if rank == 0:
        with socket.socket() as s:
            s.bind(("", 0))
            address = (socket.gethostname(), s.getsockname()[1])
    host, port = comm.bcast(address)
    dist.init_process_group("gloo", init_method=f"tcp://{host}:{port}", rank=rank, world_size=P)
    try:
        before = torch.tensor([float(rank)])
        dist.all_reduce(before)
        buf = epcomm.Buffer(comm, num_experts=2 * P, hidden=32, max_tokens_per_rank=8, topk=2,
                            dtype=torch.float32, dispatch_format="f32", combine_format="f32")
        x, idx, w = random_inputs(rank, 5, 32, 2 * P, 2, drop=0.0, seed=9)
        res = buf.dispatch(x, idx, w)
        out = buf.combine(res.x, res.handle)
        buf.close()
        after = torch.tensor([1.0])
        dist.all_reduce(after)
    finally:
        dist.destroy_process_group()
    assert before.item() == P * (P - 1) / 2
    assert after.item() == P
    assert torch.allclose(out, (w.unsqueeze(2) * x.unsqueeze(1)).sum(1), rtol=1e-6, atol=1e-6)
