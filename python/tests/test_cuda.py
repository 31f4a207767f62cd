# SPDX-License-Identifier: MIT
"""CUDA tensors: a buffer on the GPU against a buffer on the CPU (the host exchange,
the oracle) given the same inputs, compared bit for bit. Work is queued on a side
stream and its results read through that stream, with no host wait in between.
Each rank takes the GPU of its rank within the host. Skips where torch sees no
CUDA device (as in CI); a build without CUDA fails these tests on a GPU host."""

import pytest
import torch
from mpi4py import MPI

import epcomm
from epcomm.compat import deep_ep
from reference import random_inputs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible to torch")

_INT_VIEW = {torch.bfloat16: torch.int16, torch.float32: torch.int32}


@pytest.fixture(scope="module")
def device(comm):
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    dev = torch.device("cuda", local.Get_rank() % torch.cuda.device_count())
    local.Free()
    torch.cuda.set_device(dev)
    return dev


def bits(t):
    """The tensor's bits on the CPU: equal bits, not equal values (NaN, -0)."""
    t = t.detach().cpu().contiguous()
    return t.view(_INT_VIEW[t.dtype]) if t.dtype in _INT_VIEW else t


def same_bits(a, b):
    if a is None or b is None:
        return a is None and b is None
    return torch.equal(bits(a), bits(b))


def buffers(comm, device, **kw):
    return epcomm.Buffer(comm, **kw), epcomm.Buffer(comm, device=device, **kw)


def expert_outputs(rows, dtype):
    """Expert outputs that depend on each row's values (computed on the CPU)."""
    return (rows.float() * 1.5 - 0.25).to(dtype)


# (dispatch format, combine format, dtype, hidden)
CASES = [
    ("bf16", "bf16", torch.bfloat16, 7168),
    ("fp8", "bf16", torch.bfloat16, 7168),
    ("fp8-ue8m0", "logfmt10", torch.bfloat16, 129),
    ("logfmt8", "fp8", torch.float32, 256),
    ("f32", "f32", torch.float32, 1),
]


@pytest.mark.parametrize("dispatch_format,combine_format,dtype,hidden", CASES)
def test_device_buffer_matches_the_host_buffer(comm, device, dispatch_format, combine_format, dtype, hidden):
    rank, P = comm.Get_rank(), comm.Get_size()
    E, K, T = 4 * P, 3, 40 + 7 * rank
    kw = dict(num_experts=E, hidden=hidden, max_tokens_per_rank=64, topk=K, dtype=dtype,
              dispatch_format=dispatch_format, combine_format=combine_format, expert_alignment=4)
    cpu, gpu = buffers(comm, device, **kw)
    x, idx, w = random_inputs(rank, T, hidden, E, K, seed=7)
    x = x.to(dtype)
    want = cpu.dispatch(x, idx, w, decode=True)
    want_out = cpu.combine(expert_outputs(want.x, dtype), want.handle)

    stream = torch.cuda.Stream(device)
    with torch.cuda.stream(stream):
        xd, idxd, wd = x.to(device), idx.to(device), w.to(device)
        got = gpu.dispatch(xd, idxd, wd, decode=True)
        got_out = gpu.combine(expert_outputs(want.x, dtype).to(device), got.handle)
        got_out_cpu = got_out.cpu()  # read on the stream that ordered the combine
    cpu.close()
    gpu.close()

    assert got.x.device == device and got_out.device == device
    for name in ("x", "x_codes", "x_scales", "weights", "src_rank", "src_token"):
        assert same_bits(getattr(got, name), getattr(want, name)), name
    assert torch.equal(got.num_tokens_per_expert, want.num_tokens_per_expert)
    assert torch.equal(got.expert_offsets, want.expert_offsets)
    assert same_bits(got_out_cpu, want_out)


def test_autograd_on_cuda_matches_cpu(comm, device):
    rank, P = comm.Get_rank(), comm.Get_size()
    E, H, K, T = 2 * P, 64, 2, 24
    kw = dict(num_experts=E, hidden=H, max_tokens_per_rank=32, topk=K, dtype=torch.float32,
              dispatch_format="f32", combine_format="f32", max_inflight=3)
    cpu, gpu = buffers(comm, device, **kw)
    x, idx, w = random_inputs(rank, T, H, E, K, seed=11)
    g = torch.randn((T, H), generator=torch.Generator().manual_seed(5 + rank))

    def step(buf, dev):
        # Fresh leaves each call: x.to("cpu") is x itself, so requires_grad_() on it
        # would make the later CUDA copy a non-leaf without .grad.
        xs = x.detach().to(dev).requires_grad_()
        ws = w.detach().to(dev).requires_grad_()
        res = buf.dispatch(xs, idx.to(dev), ws)
        out = buf.combine(res.x * 2.0 + 1.0, res.handle)
        (out * g.to(dev)).sum().backward()
        return out.detach().cpu(), xs.grad.cpu(), ws.grad.cpu()

    want = step(cpu, torch.device("cpu"))
    got = step(gpu, device)
    cpu.close()
    gpu.close()
    # The exchange's sums are bit-identical; the weights' gradient adds torch's own
    # reductions (a dot product per row), whose order differs between CPU and GPU.
    assert same_bits(got[0], want[0])
    assert same_bits(got[1], want[1])
    assert torch.allclose(got[2], want[2], rtol=1e-5, atol=1e-5)


def test_deep_ep_compat_on_cuda(comm, device):
    rank, P = comm.Get_rank(), comm.Get_size()
    E, H, K, T = 2 * P, 128, 2, 16
    kw = dict(num_experts=E, hidden=H, max_tokens_per_rank=32, topk=K, dtype=torch.bfloat16)
    cpu = deep_ep.Buffer(comm, **kw)
    gpu = deep_ep.Buffer(comm, device=device, **kw)
    x, idx, w = random_inputs(rank, T, H, E, K, seed=3)
    x = x.to(torch.bfloat16)
    want = cpu.dispatch(x, topk_idx=idx, topk_weights=w)
    want_out = cpu.combine(want[0] * 3, want[4])[0]
    got = gpu.dispatch(x.to(device), topk_idx=idx.to(device), topk_weights=w.to(device))
    got_out = gpu.combine(got[0] * 3, got[4])[0]
    cpu.buffer.close()
    gpu.buffer.close()
    for a, b in zip(got[:3], want[:3]):
        assert same_bits(a, b)
    assert got[3] == want[3]
    assert same_bits(got_out, want_out)


def test_host_tensors_are_refused_and_the_buffer_stays_usable(comm, device):
    rank, P = comm.Get_rank(), comm.Get_size()
    E, H, K, T = 2 * P, 128, 2, 8
    buf = epcomm.Buffer(comm, num_experts=E, hidden=H, max_tokens_per_rank=8, topk=K, dtype=torch.float32,
                        dispatch_format="f32", combine_format="f32", device=device)
    x, idx, w = random_inputs(rank, T, H, E, K, seed=2)
    errors = []
    for args in ((x, idx.to(device), w.to(device)), (x.to(device), idx.to(device), w)):
        try:
            buf.dispatch(*args)
        except epcomm.Error as e:
            errors.append(e)
    res = buf.dispatch(x.to(device), idx.to(device), w.to(device))
    out = buf.combine(res.x, res.handle, weighted=False).cpu()
    buf.close()
    assert len(errors) == 2
    for e in errors:
        assert e.code == "invalid argument"
        assert f"epcomm rank {rank}" in str(e) and "cpu" in str(e) and str(device) in str(e)
    # Unweighted combine of dispatched rows: each token times its routed experts.
    hits = (idx >= 0).sum(dim=1, keepdim=True).float()
    assert torch.equal(out, x * hits)
