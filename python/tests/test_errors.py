# SPDX-License-Identifier: MIT
"""Bad input from Python raises epcomm.Error carrying epcomm's message ("epcomm rank
R: ...", naming the argument and value) on every rank, before anything is sent; the
buffer stays usable."""

import pytest
import torch

import epcomm
from reference import random_inputs

HIDDEN, TOPK, MAX_TOKENS = 64, 2, 8


@pytest.fixture
def buf(comm):
    b = epcomm.Buffer(comm, num_experts=2 * comm.Get_size(), hidden=HIDDEN, max_tokens_per_rank=MAX_TOKENS,
                      topk=TOPK, dtype=torch.float32, dispatch_format="bf16", combine_format="bf16")
    yield b
    b.close()


def good_inputs(buf):
    return random_inputs(buf.rank, 6, HIDDEN, buf.num_experts, TOPK, drop=0.0, seed=3)


def bad_dispatches(buf):
    """(what is wrong, expected words in the message, x, topk_idx, topk_weights)."""
    x, idx, w = good_inputs(buf)
    wide = torch.zeros((6, 2 * HIDDEN))
    out_of_range = idx.clone()
    out_of_range[2, 1] = buf.num_experts + 5
    return [
        ("wrong dtype", "x has dtype float64", x.double(), idx, w),
        ("weights dtype", "topk_weights has dtype float64", x, idx, w.double()),
        ("idx dtype", "topk_idx has dtype float32", x, idx.float(), w),
        ("non-contiguous", "x is not contiguous", wide[:, ::2], idx, w),
        ("wrong device", "x is on device meta", torch.empty((6, HIDDEN), device="meta"), idx, w),
        ("hidden mismatch", f"x has shape [6, {HIDDEN + 1}]", torch.zeros((6, HIDDEN + 1)), idx, w),
        ("tokens mismatch", "topk_idx has shape [5, 2]", x, idx[:5], w),
        ("topk mismatch", "topk_weights has shape [6, 1]", x, idx, w[:, :1]),
        ("too many tokens", f"more than max_tokens_per_rank={MAX_TOKENS}", torch.zeros((MAX_TOKENS + 1, HIDDEN)),
         torch.zeros((MAX_TOKENS + 1, TOPK), dtype=torch.int64), torch.zeros((MAX_TOKENS + 1, TOPK))),
        ("expert id", f"topk_idx[2][1]={buf.num_experts + 5}", x, out_of_range, w),
        ("int64 overflow", "topk_idx[0][0]=4294967296", x, torch.full((6, TOPK), 2 ** 32, dtype=torch.int64), w),
        ("not a tensor", "x is a list", [[0.0] * HIDDEN], idx, w),
    ]


def expect_error(fn, words, rank):
    with pytest.raises(epcomm.Error) as info:
        fn()
    message = str(info.value)
    assert message.startswith(f"epcomm rank {rank}:"), message
    assert words in message, message
    return info.value


def test_bad_dispatch_input_raises_and_buffer_stays_usable(buf, comm):
    for what, words, x, idx, w in bad_dispatches(buf):
        err = expect_error(lambda: buf.dispatch(x, idx, w), words, buf.rank)
        assert err.code in ("invalid argument", "buffer too small", "unsupported"), (what, err.code)
    # Still usable: a good dispatch and combine give the plain-sum result.
    x, idx, w = good_inputs(buf)
    res = buf.dispatch(x, idx, w)
    out = buf.combine(res.x, res.handle)
    assert torch.allclose(out, (w.unsqueeze(2) * x.unsqueeze(1)).sum(1), rtol=2 ** -7, atol=1e-6)


def test_bad_combine_input_raises_and_buffer_stays_usable(buf, comm):
    x, idx, w = good_inputs(buf)
    res = buf.dispatch(x, idx, w)
    rows = res.handle.num_rows
    y = res.x.clone()
    cases = [
        ("expert_out has dtype float64", lambda: buf.combine(y.double(), res.handle)),
        (f"expert_out has shape [{rows + 1}, {HIDDEN}]",
         lambda: buf.combine(torch.zeros((rows + 1, HIDDEN)), res.handle)),
        ("expert_out is not contiguous", lambda: buf.combine(torch.zeros((rows, 2 * HIDDEN))[:, ::2], res.handle)),
        ("expert_out is on device meta", lambda: buf.combine(torch.empty((rows, HIDDEN), device="meta"), res.handle)),
        ("out has shape [7, 64]", lambda: buf.combine(y, res.handle, out=torch.zeros((7, HIDDEN)))),
        ("not an epcomm Handle", lambda: buf.combine(y, "handle")),
    ]
    for words, call in cases:
        expect_error(call, words, buf.rank)
    out = buf.combine(y, res.handle)
    assert torch.allclose(out, (w.unsqueeze(2) * x.unsqueeze(1)).sum(1), rtol=2 ** -7, atol=1e-6)


def test_bad_buffer_arguments_raise(comm):
    rank = comm.Get_rank()
    expect_error(lambda: epcomm.Buffer(comm, num_experts=4 * comm.Get_size(), hidden=8, max_tokens_per_rank=4,
                                       topk=2, device="cuda"), "device cuda", rank)
    expect_error(lambda: epcomm.Buffer(comm, num_experts=4 * comm.Get_size(), hidden=8, max_tokens_per_rank=4,
                                       topk=2, dtype=torch.float16), "dtype torch.float16", rank)
    # Checked by the library, collectively: every rank passes the same bad value.
    expect_error(lambda: epcomm.Buffer(comm, num_experts=4 * comm.Get_size() + 1, hidden=8, max_tokens_per_rank=4,
                                       topk=2), "num_experts=", rank)
    expect_error(lambda: epcomm.Buffer(comm, num_experts=4 * comm.Get_size(), hidden=8, max_tokens_per_rank=4,
                                       topk=2, dispatch_format="fp7"), "fp7", rank)
