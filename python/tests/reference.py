# SPDX-License-Identifier: MIT
"""Independent single-process references for dispatch and combine: plain loops over
every rank's gathered inputs, no epcomm code."""

import math

import numpy as np
import torch


def random_inputs(rank, num_tokens, hidden, num_experts, topk, drop=0.15, seed=0):
    """x (values exact in bfloat16, as float32), distinct expert ids per token with
    some -1, positive weights."""
    g = torch.Generator().manual_seed(seed * 1000 + rank)
    x = (torch.randint(-256, 256, (num_tokens, hidden), generator=g).float() / 64).to(torch.bfloat16).float()
    idx = torch.stack([torch.randperm(num_experts, generator=g)[:topk] for _ in range(num_tokens)]) \
        if num_tokens else torch.empty((0, topk), dtype=torch.int64)
    idx = torch.where(torch.rand(idx.shape, generator=g) < drop, torch.full_like(idx, -1), idx)
    w = torch.rand((num_tokens, topk), generator=g) + 0.1
    return x, idx, w


def gather(comm, *tensors):
    """Every rank's tensors, as float64/int64 numpy arrays, by rank."""
    mine = tuple(t.detach().double().numpy() if t.is_floating_point() else t.numpy() for t in tensors)
    return comm.allgather(mine)


def expected_rows(all_inputs, rank, num_experts, num_ranks):
    """Per local expert: [(src_rank, src_token, weight, x row)] in (rank, token) order."""
    per_rank = num_experts // num_ranks
    segments = []
    for j in range(per_rank):
        e = rank * per_rank + j
        rows = []
        for s, (x, idx, w) in enumerate(all_inputs):
            for t in range(idx.shape[0]):
                hit = np.nonzero(idx[t] == e)[0]
                if hit.size:
                    rows.append((s, t, float(np.float32(w[t, hit[0]])), x[t]))
        segments.append(rows)
    return segments


def expert_fn(e, rows):
    """A per-expert function a wrong expert or weight cannot hide behind."""
    h = torch.arange(rows.shape[1], dtype=torch.float64)
    return rows.double() * (0.5 + 0.03 * e) + 0.01 * (e + 1) * ((h % 7) - 3)


def fp8_e4m3_values():
    """The 256 E4M3 code values (NaN for 0x7f/0xff), from the bit layout."""
    vals = []
    for c in range(256):
        sign = -1.0 if c & 0x80 else 1.0
        exp, man = (c >> 3) & 0xF, c & 0x7
        if exp == 0xF and man == 0x7:
            vals.append(math.nan)
        elif exp == 0:
            vals.append(sign * man / 8 * 2.0 ** -6)
        else:
            vals.append(sign * (1 + man / 8) * 2.0 ** (exp - 7))
    return torch.tensor(vals, dtype=torch.float64)
