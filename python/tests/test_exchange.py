# SPDX-License-Identifier: MIT
"""Buffer.dispatch / combine against the single-process reference, in every wire
format (FP8 and LogFMT within the bounds of docs/formats.md)."""

import math

import numpy as np
import pytest
import torch

import epcomm
from reference import expected_rows, expert_fn, fp8_e4m3_values, gather, random_inputs

HIDDEN = 160  # two 1x128 tiles, the second one partial
TOPK = 3
MAX_TOKENS = 24

# (dtype, dispatch_format, combine_format, expert_alignment, topk_idx dtype)
CASES = [
    (torch.float32, "f32", "f32", 1, torch.int64),
    (torch.bfloat16, "bf16", "bf16", 4, torch.int32),
    (torch.bfloat16, "fp8", "bf16", 1, torch.int64),
    (torch.float32, "fp8-ue8m0", "fp8", 2, torch.int32),
    (torch.float32, "logfmt8", "logfmt10", 1, torch.int64),
]


def logfmt_bits(fmt):
    return int(fmt[len("logfmt"):]) if fmt.startswith("logfmt") else 0


def tokens_of(rank):
    return 0 if rank == 1 else min(MAX_TOKENS, 5 + 4 * rank)  # one rank sends nothing


def combine_rel_tolerance(dtype, fmt):
    """Relative to sum_k |w_k y_k|: one of the output, and two in the combine
    format in a row, r (2 + r) for a rounding r: the owner partials a node peer
    reads (their magnitudes sum to at most the bound) and the node partial on the
    wire summed from them; FP8 adds the subnormal floor separately."""
    rel = 1e-6
    if dtype == torch.bfloat16:
        rel += 2.0 ** -8
    r = 0.0
    if fmt == "bf16":
        r = 2.0 ** -8
    if fmt.startswith("fp8"):
        r = 2.0 ** -4
    if logfmt_bits(fmt):
        r = (2.0 ** (32 / (2 ** (logfmt_bits(fmt) - 1) - 2)) - 1) / 2
    return rel + r * (2 + r)


def received_values(res, fmt):
    """The rows as the experts see them, float64: decoded by epcomm for plain and
    LogFMT rows, from codes and scales by the E4M3 table here for FP8."""
    if not fmt.startswith("fp8"):
        return res.x.double(), None
    table = fp8_e4m3_values()
    vals = table[res.x_codes.long()]
    scales = res.x_scales.double() if fmt == "fp8" else 2.0 ** (res.x_scales.double() - 127)
    per_col = scales.repeat_interleave(128, dim=1)[:, :HIDDEN]
    return vals * per_col, per_col


def check_rows(res, fmt, expected, align, scales):
    """Layout, metadata and values of the received rows."""
    seen = res.x.double() if res.x is not None else None
    offset = 0
    for j, rows in enumerate(expected):
        assert int(res.expert_offsets[j]) == offset, f"expert {j}"
        assert int(res.num_tokens_per_expert[j]) == len(rows), f"expert {j}"
        for i, (s, t, w, x) in enumerate(rows):
            r = offset + i
            assert (int(res.src_rank[r]), int(res.src_token[r])) == (s, t), f"row {r}"
            assert float(res.weights[r]) == w, f"row {r}"
        padded = (len(rows) + align - 1) // align * align
        for r in range(offset + len(rows), offset + padded):
            assert int(res.src_rank[r]) == -1 and float(res.weights[r]) == 0.0, f"padding row {r}"
        offset += padded
    assert res.handle.num_rows == offset
    return seen


def value_bound(fmt, x, per_col_scale):
    """Per element bound on |received - sent| from docs/formats.md."""
    ax = np.abs(x)
    if fmt in ("f32", "bf16"):
        return np.zeros_like(ax)
    if fmt.startswith("fp8"):
        return 2.0 ** -4 * ax + 2.0 ** -10 * per_col_scale + 1e-12
    n = logfmt_bits(fmt)
    bound = np.zeros_like(ax)
    for start in range(0, x.shape[0], 128):
        tile = ax[start:start + 128]
        nz = tile[tile > 0]
        if nz.size == 0:
            continue
        lo, hi = math.floor(128 * math.log2(nz.min())), math.ceil(128 * math.log2(nz.max()))
        lo = max(lo, hi - 32 * 128)
        step = (hi - lo) / 128 / (2 ** (n - 1) - 2)
        bound[start:start + 128] = (2.0 ** step - 1) / 2 * tile * (1 + 1e-6) + 1e-30
    return bound


@pytest.mark.parametrize("dtype,dfmt,cfmt,align,idx_dtype", CASES,
                         ids=[f"{c[1]}-{c[2]}-{str(c[0])[6:]}-align{c[3]}" for c in CASES])
def test_dispatch_and_combine_match_reference(comm, dtype, dfmt, cfmt, align, idx_dtype):
    rank, P = comm.Get_rank(), comm.Get_size()
    E = 2 * P
    buf = epcomm.Buffer(comm, num_experts=E, hidden=HIDDEN, max_tokens_per_rank=MAX_TOKENS, topk=TOPK,
                        dispatch_format=dfmt, combine_format=cfmt, dtype=dtype, expert_alignment=align)
    x, idx, w = random_inputs(rank, tokens_of(rank), HIDDEN, E, TOPK, seed=len(dfmt) + align)
    res = buf.dispatch(x.to(dtype), idx.to(idx_dtype), w)
    values, per_col_scale = received_values(res, dfmt)
    # Expert outputs as sent (rounded to dtype), zero on padding rows.
    y = torch.zeros((res.handle.num_rows, HIDDEN), dtype=torch.float64)
    J = E // P
    for j in range(J):
        start, count = int(res.expert_offsets[j]), int(res.num_tokens_per_expert[j])
        y[start:start + count] = expert_fn(rank * J + j, values[start:start + count])
    y_sent = y.to(dtype)
    out = buf.combine(y_sent, res.handle)
    # Every collective call is done: gather what the references need, then check.
    all_inputs = gather(comm, x, idx, w)
    contrib = comm.allgather((res.src_rank.numpy(), res.src_token.numpy(),
                              (res.weights.double().unsqueeze(1) * y_sent.double()).numpy()))
    buf.close()

    expected = expected_rows(all_inputs, rank, E, P)
    check_rows(res, dfmt, expected, align, per_col_scale)
    for j, rows in enumerate(expected):
        start = int(res.expert_offsets[j])
        for i, (s, t, wt, xrow) in enumerate(rows):
            got = values[start + i].numpy()
            bound = value_bound(dfmt, xrow, None if per_col_scale is None else per_col_scale[start + i].numpy())
            err = np.abs(got - xrow)
            assert (err <= bound).all(), f"row {start + i} (rank {s} token {t}): max excess {(err - bound).max()}"
    if res.x is not None:  # padding rows of decoded output are zero
        real = res.src_rank >= 0
        assert (res.x[~real] == 0).all()

    # Combine: out[t] = sum over the token's rows (any rank) of weight * output.
    want = np.zeros((tokens_of(rank), HIDDEN))
    mag = np.zeros_like(want)
    for src_rank, src_token, rows in contrib:
        for r in range(src_rank.shape[0]):
            if src_rank[r] == rank:
                want[src_token[r]] += rows[r]
                mag[src_token[r]] += np.abs(rows[r])
    tol = combine_rel_tolerance(dtype, cfmt) * mag + 1e-6
    if cfmt.startswith("fp8"):  # subnormal floor: 2^-10 of the scale, amax / 448, per owner or node partial
        tol += 2 * P * 2.0 ** -10 * mag.max(axis=1, keepdims=True) / 448
    err = np.abs(out.double().numpy() - want)
    assert (err <= tol).all(), f"combine: max excess {(err - tol).max()} at {np.unravel_index((err - tol).argmax(), err.shape)}"


def test_async_and_route_reuse_give_the_same_results(comm):
    rank, P = comm.Get_rank(), comm.Get_size()
    E = 2 * P
    buf = epcomm.Buffer(comm, num_experts=E, hidden=HIDDEN, max_tokens_per_rank=MAX_TOKENS, topk=TOPK,
                        dispatch_format="f32", combine_format="f32", dtype=torch.float32, max_inflight=3)
    x, idx, w = random_inputs(rank, tokens_of(rank), HIDDEN, E, TOPK, seed=7)
    sync = buf.dispatch(x, idx, w)
    work = buf.dispatch(x, idx, w, async_op=True)
    done_early = work.is_completed()
    res = work.wait()
    y = (res.x * 3 + 1) * (res.src_rank >= 0).unsqueeze(1)
    out_sync = buf.combine(y, res.handle)
    cw = buf.combine(y, res.handle, async_op=True)
    out_async = cw.wait()
    # Along the route of `res`: new values land in the same rows.
    x2 = x * -2 + 0.5
    again = buf.dispatch(x2, idx, w, handle=res.handle)
    unweighted = buf.combine(y, res.handle, weighted=False)
    all_inputs = gather(comm, x2, idx, w)
    buf.close()

    assert isinstance(done_early, bool)
    assert torch.equal(sync.x, res.x) and torch.equal(sync.src_token, res.src_token)
    assert torch.equal(out_sync, out_async)
    assert torch.equal(again.src_rank, res.src_rank) and torch.equal(again.src_token, res.src_token)
    assert torch.equal(again.weights, res.weights)
    for r in range(res.handle.num_rows):
        s, t = int(again.src_rank[r]), int(again.src_token[r])
        if s >= 0:
            assert np.array_equal(again.x[r].double().numpy(), all_inputs[s][0][t]), f"row {r}"
    # Unweighted: each token's rows summed with weight 1.
    want = torch.zeros_like(x, dtype=torch.float64)
    for t in range(x.shape[0]):
        for k in range(TOPK):
            if idx[t, k] >= 0:
                want[t] += x[t].double() * 3 + 1
    assert torch.allclose(unweighted.double(), want, rtol=1e-6, atol=1e-6)
