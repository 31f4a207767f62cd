# SPDX-License-Identifier: MIT
"""CUDA tensors ordered on torch.cuda.current_stream(): for GPU-resident exchanges.
Skips where torch has no CUDA device, and, with a message, while this build
exchanges host tensors only."""

import pytest
import torch

import epcomm
from reference import random_inputs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible to torch")


def test_dispatch_combine_on_cuda_tensors(comm):
    rank, P = comm.Get_rank(), comm.Get_size()
    E, H, K = 2 * P, 128, 2
    try:
        buf = epcomm.Buffer(comm, num_experts=E, hidden=H, max_tokens_per_rank=8, topk=K, device="cuda",
                            dtype=torch.float32, dispatch_format="f32", combine_format="f32")
    except epcomm.Error as e:
        if e.code == "unsupported":
            pytest.skip(f"this build exchanges host tensors only: {e}")
        raise
    x, idx, w = random_inputs(rank, 6, H, E, K, drop=0.0, seed=2)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        xd, idxd, wd = x.cuda(), idx.cuda(), w.cuda()
        res = buf.dispatch(xd, idxd, wd)
        out = buf.combine(res.x * 2, res.handle)
    stream.synchronize()
    buf.close()
    assert torch.allclose(out.cpu(), 2 * (w.unsqueeze(2) * x.unsqueeze(1)).sum(1), rtol=1e-6, atol=1e-6)
