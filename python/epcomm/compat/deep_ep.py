# SPDX-License-Identifier: MIT
"""DeepEP's normal-mode ``Buffer`` on epcomm: code written for DeepEP runs by
changing ``import deep_ep`` to ``from epcomm.compat import deep_ep``.

Token-major like DeepEP: ``recv_x`` holds each token that reaches this rank once,
ordered by source rank then source token. What it does not do (docs/python.md):
low-latency mode, FP8 ``(x, scales)`` tuples as input (``recv_x`` is always decoded
into the buffer's dtype), torch.distributed groups (pass an mpi4py communicator),
events and streams (every call is synchronous: ``event`` is ``None``, and
``previous_event``, ``async_finish``, ``allocate_on_comm_stream`` and ``config`` are
accepted and ignored), and positional ``recv_topk_idx``: a token's local experts are
listed in ascending order, not in the columns its ``topk_idx`` had them.
"""

from typing import Optional

import torch

import epcomm.torch as ept


class EventOverlap:
    """Stands in for DeepEP's event: everything has completed already."""

    def current_stream_wait(self):
        pass


class Handle:
    """The route of one dispatch and the token-major view of its rows."""

    def __init__(self, route: ept.Handle, row_token: torch.Tensor, first_row: torch.Tensor):
        self.route = route            # epcomm route (expert-major rows)
        self.row_token = row_token    # int64 [num_rows]: token-major index of each row, -1 padding
        self.first_row = first_row    # int64 [num_recv_tokens]: one row of each token


class Buffer:
    """DeepEP ``Buffer`` on an epcomm :class:`epcomm.torch.Buffer`.

    Args:
        group: an mpi4py communicator (``None``: ``MPI.COMM_WORLD``).
        num_nvl_bytes, num_rdma_bytes, low_latency_mode, num_qps_per_rank: DeepEP's
            sizing arguments, accepted for compatibility; epcomm sizes its buffers from
            the keywords below. ``low_latency_mode=True`` is refused.
        num_experts, hidden, max_tokens_per_rank, topk: the layer's shape (epcomm
            allocates once, from these).
        **kwargs: further :class:`epcomm.torch.Buffer` arguments (``dtype``,
            ``dispatch_format``, ``combine_format``, ``max_inflight``, ...).
    """

    def __init__(self, group=None, num_nvl_bytes: int = 0, num_rdma_bytes: int = 0, low_latency_mode: bool = False,
                 num_qps_per_rank: int = 1, *, num_experts: int, hidden: int, max_tokens_per_rank: int, topk: int,
                 **kwargs):
        if low_latency_mode:
            raise ept.Error("epcomm: deep_ep.Buffer: low_latency_mode is not supported")
        self.buffer = ept.Buffer(group, num_experts=num_experts, hidden=hidden,
                                 max_tokens_per_rank=max_tokens_per_rank, topk=topk, **kwargs)
        self.group = group
        self.rank = self.buffer.rank
        self.group_size = self.buffer.num_ranks
        self.num_experts = num_experts

    # DeepEP's static tuning knobs: nothing to tune here.
    @staticmethod
    def set_num_sms(new_num_sms: int) -> None:
        pass

    @staticmethod
    def get_dispatch_config(num_ranks: int):
        return None

    @staticmethod
    def get_combine_config(num_ranks: int):
        return None

    def get_dispatch_layout(self, topk_idx: torch.Tensor, num_experts: int, previous_event=None,
                            async_finish: bool = False, allocate_on_comm_stream: bool = False):
        """``(num_tokens_per_rank, num_tokens_per_rdma_rank, num_tokens_per_expert,
        is_token_in_rank, event)`` computed from ``topk_idx``; the per-node counts are
        ``None`` on a single node, as in DeepEP's intranode mode."""
        ranks = self.group_size
        per_rank = num_experts // ranks
        idx = topk_idx.to(torch.int64)
        valid = idx >= 0
        is_token_in_rank = torch.zeros((idx.shape[0], ranks), dtype=torch.bool, device=idx.device)
        rows = torch.arange(idx.shape[0], device=idx.device).unsqueeze(1).expand_as(idx)
        is_token_in_rank[rows[valid], idx[valid] // per_rank] = True
        num_tokens_per_rank = is_token_in_rank.sum(dim=0).to(torch.int32)
        num_tokens_per_expert = torch.bincount(idx[valid], minlength=num_experts).to(torch.int32)
        rpn = self.buffer.group.ranks_per_node
        num_tokens_per_rdma_rank = None
        if self.buffer.group.num_nodes > 1:
            in_node = is_token_in_rank.view(idx.shape[0], -1, rpn).any(dim=2)
            num_tokens_per_rdma_rank = in_node.sum(dim=0).to(torch.int32)
        return num_tokens_per_rank, num_tokens_per_rdma_rank, num_tokens_per_expert, is_token_in_rank, None

    def dispatch(self, x: torch.Tensor, handle: Optional[Handle] = None, num_tokens_per_rank=None,
                 num_tokens_per_rdma_rank=None, is_token_in_rank=None, num_tokens_per_expert=None,
                 topk_idx: Optional[torch.Tensor] = None, topk_weights: Optional[torch.Tensor] = None,
                 expert_alignment: int = 1, config=None, previous_event=None, async_finish: bool = False,
                 allocate_on_comm_stream: bool = False):
        """Returns ``(recv_x, recv_topk_idx, recv_topk_weights,
        num_recv_tokens_per_expert_list, handle, event)``.

        ``recv_x``: ``[num_recv_tokens, hidden]``; ``recv_topk_idx``: int64 local expert
        ids of each received token (-1 padded); ``recv_topk_weights``: float32, aligned
        with it. With ``handle`` (cached mode: the route of an earlier dispatch) only
        ``recv_x`` is given, the rest is ``None``, as in DeepEP. The layout arguments
        are ignored (epcomm computes its own); ``expert_alignment`` must equal the
        buffer's.
        """
        if isinstance(x, tuple):
            raise ept.Error("epcomm: deep_ep.Buffer.dispatch: FP8 (x, scales) input is not supported; "
                            "pass x and choose dispatch_format='fp8'")
        b = self.buffer
        if handle is not None:
            r = handle.route
            res = b.dispatch(x, r.topk_idx, r.topk_weights.detach(), handle=r, decode=True)
            return self._token_major_x(res.x, handle), None, None, None, handle, None
        if topk_idx is None or topk_weights is None:
            raise ept.Error("epcomm: deep_ep.Buffer.dispatch: topk_idx and topk_weights are required "
                            "(dispatch by is_token_in_rank alone is not supported)")
        res = b.dispatch(x, topk_idx, topk_weights, decode=True)
        num_rows = res.handle.num_rows
        real = res.src_rank >= 0
        key = torch.where(real, res.src_rank * (b.max_tokens_per_rank + 1) + res.src_token,
                          torch.full_like(res.src_rank, -1))
        tokens, inverse = torch.unique(key[real], sorted=True, return_inverse=True)
        dev = b.device
        row_token = torch.full((num_rows,), -1, dtype=torch.int64, device=dev)
        row_token[real] = inverse
        n = tokens.numel()
        recv_topk_idx = torch.full((n, b.topk), -1, dtype=torch.int64, device=dev)
        recv_topk_weights = torch.zeros((n, b.topk), dtype=torch.float32, device=dev)
        first_row = torch.empty(n, dtype=torch.int64, device=dev)
        used = torch.zeros(n, dtype=torch.int64, device=dev)
        counts = res.handle.expert_counts
        for j in reversed(range(b.num_local_experts)):
            seg = torch.arange(res.handle.expert_offsets[j], res.handle.expert_offsets[j] + counts[j], device=dev)
            toks = row_token[seg]
            first_row[toks] = seg
        for j in range(b.num_local_experts):
            seg = torch.arange(res.handle.expert_offsets[j], res.handle.expert_offsets[j] + counts[j], device=dev)
            toks = row_token[seg]
            recv_topk_idx[toks, used[toks]] = j
            recv_topk_weights[toks, used[toks]] = res.weights[seg]
            used[toks] += 1
        h = Handle(res.handle, row_token, first_row)
        recv_x = res.x[first_row]
        return recv_x, recv_topk_idx, recv_topk_weights, list(counts), h, None

    @staticmethod
    def _token_major_x(rows: torch.Tensor, handle: Handle) -> torch.Tensor:
        return rows[handle.first_row]

    def combine(self, x: torch.Tensor, handle: Handle, topk_weights: Optional[torch.Tensor] = None, config=None,
                previous_event=None, async_finish: bool = False, allocate_on_comm_stream: bool = False):
        """Sums each token's rows from every rank: ``(combined_x,
        combined_topk_weights, event)``. ``x``: ``[num_recv_tokens, hidden]``, the
        token-major outputs (weighted by the caller, as with DeepEP). With
        ``topk_weights``, ``combined_topk_weights`` is the source's own
        ``topk_weights`` of that dispatch (what DeepEP's reduction reconstructs)."""
        b = self.buffer
        route = handle.route
        rows = torch.zeros((route.num_rows, b.hidden), dtype=x.dtype, device=b.device)
        # One row per (token, rank) carries the token's output, the others zero: the
        # unweighted sum over rows is then DeepEP's sum over ranks.
        rows[handle.first_row] = x
        out = b.combine(rows, route, weighted=False)
        combined_w = None
        if topk_weights is not None:
            w = route.topk_weights.detach()
            combined_w = torch.where(route.topk_idx >= 0, w, torch.zeros_like(w))
        return out, combined_w, None
