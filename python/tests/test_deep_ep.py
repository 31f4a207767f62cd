# SPDX-License-Identifier: MIT
"""epcomm.compat.deep_ep.Buffer: DeepEP's return tuple, token-major, against the
single-process reference."""

import numpy as np
import torch

from epcomm.compat import deep_ep
from reference import expert_fn, gather, random_inputs

HIDDEN, TOPK, MAX_TOKENS = 48, 3, 16


def test_deep_ep_shaped_dispatch_and_combine(comm):
    rank, P = comm.Get_rank(), comm.Get_size()
    E = 2 * P
    J = E // P
    buf = deep_ep.Buffer(comm, num_experts=E, hidden=HIDDEN, max_tokens_per_rank=MAX_TOKENS, topk=TOPK,
                         dtype=torch.float32, dispatch_format="f32", combine_format="f32")
    x, idx, w = random_inputs(rank, 4 + 3 * rank, HIDDEN, E, TOPK, seed=11)
    layout = buf.get_dispatch_layout(idx, E)
    num_tokens_per_rank, _, num_tokens_per_expert, is_token_in_rank, event = layout
    recv_x, recv_idx, recv_w, per_expert, handle, event2 = buf.dispatch(
        x, topk_idx=idx, topk_weights=w, num_tokens_per_rank=num_tokens_per_rank, is_token_in_rank=is_token_in_rank,
        num_tokens_per_expert=num_tokens_per_expert)
    # Expert outputs token-major, weighted here as DeepEP callers do.
    y = torch.zeros_like(recv_x, dtype=torch.float64)
    for i in range(recv_x.shape[0]):
        for c in range(TOPK):
            j = int(recv_idx[i, c])
            if j >= 0:
                y[i] += recv_w[i, c].double() * expert_fn(rank * J + j, recv_x[i:i + 1])[0]
    combined, combined_w, event3 = buf.combine(y.float(), handle, topk_weights=recv_w)
    # Cached mode: the same route, new values.
    again, none_idx, none_w, none_list, _, _ = buf.dispatch(x * 2, handle=handle)
    all_inputs = gather(comm, x, idx, w)
    buf.buffer.close()

    assert event is None and event2 is None and event3 is None
    assert none_idx is None and none_w is None and none_list is None
    # Layout helpers against topk_idx directly.
    for t in range(x.shape[0]):
        ranks = {int(e) // J for e in idx[t] if e >= 0}
        assert set(torch.nonzero(is_token_in_rank[t]).flatten().tolist()) == ranks
    assert num_tokens_per_expert.tolist() == [int((idx == e).sum()) for e in range(E)]
    # Received tokens: every token that chose one of my experts, once, ordered by
    # (source rank, token), with my local experts ascending and their weights.
    want = []
    for s, (xs, ids, ws) in enumerate(all_inputs):
        for t in range(ids.shape[0]):
            mine = sorted((int(e) - rank * J, float(np.float32(ws[t, k]))) for k, e in enumerate(ids[t])
                          if e >= 0 and int(e) // J == rank)
            if mine:
                want.append((xs[t], mine))
    assert recv_x.shape[0] == len(want)
    for i, (xrow, mine) in enumerate(want):
        assert np.array_equal(recv_x[i].double().numpy(), xrow), f"token {i}"
        assert np.array_equal(again[i].double().numpy(), 2 * xrow), f"token {i}"
        got = [(int(recv_idx[i, c]), float(recv_w[i, c])) for c in range(TOPK) if recv_idx[i, c] >= 0]
        assert got == mine, f"token {i}"
        assert (recv_idx[i, len(mine):] == -1).all()
    assert per_expert == [sum(1 for _, m in want if any(j == jj for jj, _ in m)) for j in range(J)]
    # Combine: sum over ranks = sum over the token's experts of w * expert(x).
    ref = torch.zeros((x.shape[0], HIDDEN), dtype=torch.float64)
    for t in range(x.shape[0]):
        for k in range(TOPK):
            if idx[t, k] >= 0:
                ref[t] += w[t, k].double() * expert_fn(int(idx[t, k]), x[t:t + 1])[0]
    assert torch.allclose(combined.double(), ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(combined_w, torch.where(idx >= 0, w, torch.zeros_like(w)))
