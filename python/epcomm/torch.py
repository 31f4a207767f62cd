# SPDX-License-Identifier: MIT
"""epcomm on torch tensors: Buffer (dispatch / combine, differentiable), route and
the expert-bias helpers.

Tensors reach the C++ library through DLPack, so this works with any torch that
has ``Tensor.__dlpack__``. A buffer exchanges CPU tensors or the CUDA tensors of one
device (``device=``); CUDA work is ordered on ``torch.cuda.current_stream()``.
"""

import atexit
import weakref
from typing import Optional, Tuple

import torch

from torch.utils.dlpack import from_dlpack

from epcomm import _epcomm
from epcomm._epcomm import Error

_FP8_FORMATS = ("fp8", "fp8-ue8m0")
_DTYPE_NAMES = {torch.float32: "f32", torch.bfloat16: "bf16"}
_GROUP_PROGRESS = {None: 0, True: 1, False: 2}

# Buffers still open; closed at interpreter exit, before mpi4py finalizes MPI.
_open_buffers = weakref.WeakSet()


@atexit.register
def _close_open_buffers():
    for buf in list(_open_buffers):
        buf.close()


def _world():
    from mpi4py import MPI  # imported here: MPI initialises on first use only

    return MPI.COMM_WORLD


def _fail(rank: int, op: str, code: str, what: str):
    err = Error(f"epcomm rank {rank}: {op}: {what}")
    err.code = code
    raise err


class Handle:
    """The route of one dispatch: what combine, and a dispatch along the same route,
    need. Holds one of the buffer's ``max_inflight`` slots while alive (autograd
    keeps the handles of a graph alive until backward has run)."""

    def __init__(self, buffer, op, topk_idx, topk_weights):
        self.buffer = buffer
        self._op = op
        self.topk_idx = topk_idx          # as given to dispatch (int32 or int64)
        self.topk_weights = topk_weights  # as given to dispatch (may require grad)
        self.num_tokens = op.num_tokens
        self.num_rows = op.num_rows
        self.expert_offsets = op.expert_offsets()  # list: J + 1 segment starts
        self.expert_counts = op.expert_counts()    # list: real rows per local expert

    def row_experts(self) -> torch.Tensor:
        """Global expert id of every row (int64, [num_rows], on the buffer's device);
        -1 for padding."""
        b = self.buffer
        j0 = b.rank * b.num_local_experts
        ids = torch.full((self.num_rows,), -1, dtype=torch.int64, device=b.device)
        for j, (off, cnt) in enumerate(zip(self.expert_offsets, self.expert_counts)):
            ids[off:off + cnt] = j0 + j
        return ids


class DispatchResult:
    """What dispatch delivers to this rank, expert-major.

    Attributes:
        x: received rows ``[num_rows, hidden]`` in the buffer's dtype, grouped by local
            expert (segment j is ``expert_offsets[j] : expert_offsets[j] +
            num_tokens_per_expert[j]``; rows ordered by source rank, then source
            token). Padding rows (``expert_alignment``) are zero. ``None`` for FP8 rows
            unless ``decode=True``.
        x_codes: FP8 formats only: E4M3 codes ``[num_rows, hidden]`` as uint8.
        x_scales: FP8 formats only: one scale per 1x128 tile, ``[num_rows, tiles]``:
            float32 (``fp8``: value = code * scale) or uint8 UE8M0 exponents
            (``fp8-ue8m0``: value = code * 2**(byte - 127)).
        num_tokens_per_expert: int64 ``[num_local_experts]``, real rows per expert.
        expert_offsets: int64 ``[num_local_experts + 1]``, padded segment starts.
        weights: float32 ``[num_rows]``, the gating weight of each row (0 for padding).
        src_rank, src_token: int64 ``[num_rows]``, where each row came from (-1 for
            padding).
        handle: the :class:`Handle` for combine.
    """

    def __init__(self, x, x_codes, x_scales, num_tokens_per_expert, expert_offsets, weights, src_rank, src_token,
                 handle):
        self.x = x
        self.x_codes = x_codes
        self.x_scales = x_scales
        self.num_tokens_per_expert = num_tokens_per_expert
        self.expert_offsets = expert_offsets
        self.weights = weights
        self.src_rank = src_rank
        self.src_token = src_token
        self.handle = handle


class Work:
    """An operation begun with ``async_op=True``: ``wait()`` returns its result.
    Keeps the input tensors alive until then."""

    def __init__(self, op, finish, keep):
        self._op = op
        self._finish = finish
        self._keep = keep
        self._result = None
        self._waited = False

    def is_completed(self) -> bool:
        return self._waited or self._op.done()

    def wait(self):
        if not self._waited:
            self._op.wait()
            self._result = self._finish()
            self._keep = None
            self._waited = True
        return self._result


class Buffer:
    """Buffers and state for dispatch and combine among the ranks of an MPI
    communicator. Collective: every rank creates it with the same arguments.

    Args:
        comm: an ``mpi4py.MPI.Comm`` (``None``: ``MPI.COMM_WORLD``). epcomm works on
            its own duplicate; expert e lives on rank ``e // (num_experts / size)``.
            MPI must be initialised with ``MPI_THREAD_MULTIPLE`` (mpi4py's default)
            unless ``progress_thread=False``.
        num_experts: experts in the layer, a multiple of the communicator size.
        hidden: elements per token row.
        max_tokens_per_rank: the most tokens any dispatch on this rank will pass;
            buffers are sized from it once.
        topk: experts per token (columns of ``topk_idx``).
        dispatch_format: wire format of dispatched rows: ``"bf16"``, ``"f32"``,
            ``"fp8"`` (E4M3, FP32 scale per 1x128 tile), ``"fp8-ue8m0"`` (power-of-two
            scales) or ``"logfmt<n>"``, n in 3..16 (docs/formats.md).
        combine_format: wire format of the partial sums combine moves between
            ranks: an owner's sum a node peer reads, a node's sum sent back (same
            choices).
        device: where the tensors live. ``None`` or ``"cpu"``: host tensors. A CUDA
            device (``"cuda"`` is the current one): every tensor passed and returned
            is CUDA memory of that device; each call's work is ordered after what
            ``torch.cuda.current_stream()`` holds, and its results are ready for the
            work queued on that stream after it (docs/gpu.md). Needs a build with
            CUDA (else ``Error`` with code ``unsupported``). ``route`` and the bias
            helpers take CPU tensors.
        dtype: ``torch.bfloat16`` (default) or ``torch.float32``: tokens, expert
            outputs and combined outputs.
        expert_alignment: pad each expert's segment of rows to a multiple of this
            (zero rows), for grouped GEMMs.
        max_recv_rows: rows a rank may receive (0: the worst case).
        max_inflight: dispatch handles alive at once. A training step keeps each
            MoE layer's handle alive from forward to backward and backward takes one
            more: use at least (MoE layers) + 1.
        ranks_per_node: ranks per (emulated) node; 0: ``EPCOMM_RANKS_PER_NODE``, else
            the host.
        timeout_s: seconds a waiting rank gives a silent peer before raising;
            0: ``EPCOMM_TIMEOUT_S``, else 60.
        progress_thread: ``None``: ``EPCOMM_PROGRESS_THREAD`` (default on); ``True``
            / ``False``: a background thread moves exchanges, or only ``wait`` does.

    Errors raise :class:`epcomm.Error` (a ``RuntimeError``; ``.code`` names the
    kind) whose message starts with ``epcomm rank R:``. Bad arguments are caught
    on the calling rank before anything is sent, and the buffer stays usable.
    """

    def __init__(self, comm=None, num_experts: int = 0, hidden: int = 0, max_tokens_per_rank: int = 0,
                 topk: int = 0, dispatch_format: str = "bf16", combine_format: str = "bf16", device=None,
                 dtype: torch.dtype = torch.bfloat16, expert_alignment: int = 1, max_recv_rows: int = 0,
                 max_inflight: int = 2, ranks_per_node: int = 0, timeout_s: float = 0.0,
                 progress_thread: Optional[bool] = None):
        comm = _world() if comm is None else comm
        from mpi4py import MPI

        self.comm = comm
        rank = comm.Get_rank()
        self.device = torch.device("cpu") if device is None else torch.device(device)
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                _fail(rank, "Buffer", "unsupported", f"device {self.device}: torch sees no CUDA device")
            if self.device.index is None:
                self.device = torch.device("cuda", torch.cuda.current_device())
        elif self.device.type != "cpu":
            _fail(rank, "Buffer", "invalid argument", f"device {self.device} is neither cpu nor cuda")
        if dtype not in _DTYPE_NAMES:
            _fail(rank, "Buffer", "invalid argument", f"dtype {dtype} is not torch.bfloat16 or torch.float32")
        self.dtype = dtype
        self.group = _epcomm.Group(MPI._addressof(comm), ranks_per_node, timeout_s, _GROUP_PROGRESS[progress_thread])
        self._ex = _epcomm.Exchange(self.group, num_experts, topk, hidden, max_tokens_per_rank, _DTYPE_NAMES[dtype],
                                    dispatch_format, combine_format, expert_alignment, max_recv_rows, max_inflight,
                                    self.device.index if self.device.type == "cuda" else -1)
        self.num_experts = num_experts
        self.hidden = hidden
        self.topk = topk
        self.max_tokens_per_rank = max_tokens_per_rank
        self.dispatch_format = dispatch_format
        self.combine_format = combine_format
        self.rank = self.group.rank
        self.num_ranks = self.group.size
        self.num_local_experts = num_experts // self.num_ranks
        _open_buffers.add(self)

    def close(self):
        """Releases the exchange (also done at interpreter exit, before MPI ends)."""
        if self._ex is not None:
            self._ex.close()
            self._ex = None

    def _stream(self) -> int:
        """The cudaStream_t that orders this call (0 on CPU buffers)."""
        if self.device.type != "cuda":
            return 0
        return torch.cuda.current_stream(self.device).cuda_stream

    def _sync_stream(self):
        """Waits for the current stream: before the exchange writes, on its own
        stream, into memory torch just allocated or filled on the current one."""
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()

    # -- checks the C++ side cannot make (torch-level properties) --
    def _check_device(self, op: str, **tensors):
        for name, t in tensors.items():
            if not isinstance(t, torch.Tensor):
                _fail(self.rank, op, "invalid argument", f"{name} is a {type(t).__name__}, not a torch.Tensor")
            if t.device != self.device:
                _fail(self.rank, op, "invalid argument",
                      f"{name} is on device {t.device} but the buffer exchanges tensors on {self.device}")

    # -- dispatch --
    def dispatch(self, x: torch.Tensor, topk_idx: torch.Tensor, topk_weights: torch.Tensor,
                 handle: Optional[Handle] = None, async_op: bool = False, decode: Optional[bool] = None):
        """Sends each token to the ranks that own its chosen experts.

        Args:
            x: ``[num_tokens, hidden]`` tokens of the buffer's dtype, contiguous,
                ``num_tokens <= max_tokens_per_rank``.
            topk_idx: ``[num_tokens, topk]`` int32 or int64 expert ids; -1 = no expert.
            topk_weights: ``[num_tokens, topk]`` float32 gating weights (combine
                multiplies by them; under autograd combine also gives their gradient).
            handle: dispatch along the route of this earlier :class:`Handle` (still
                alive): ``topk_idx`` and ``topk_weights`` must be the values given to
                it; routing and validation are skipped and rows land where they did.
            async_op: return a :class:`Work` at once; ``wait()`` gives the result.
                Not with autograd.
            decode: give ``x`` decoded into the buffer's dtype. Default: yes for all
                formats but FP8, whose rows come as ``x_codes`` and ``x_scales``.

        Returns:
            :class:`DispatchResult` (or a :class:`Work` with ``async_op``). Under
            autograd (grad enabled and ``x`` or ``topk_weights`` requiring grad),
            ``result.x`` is differentiable in ``x``: its backward sums the row
            gradients of each token (an unweighted combine).
        """
        self._check_device("dispatch", x=x, topk_idx=topk_idx, topk_weights=topk_weights)
        if torch.is_grad_enabled() and (x.requires_grad or topk_weights.requires_grad):
            if async_op:
                _fail(self.rank, "dispatch", "unsupported", "async_op=True cannot be combined with autograd")
            result = self._dispatch_now(x.detach(), topk_idx, topk_weights.detach(), handle, True)
            result.handle.topk_weights = topk_weights
            result.x = _DispatchFunction.apply(x, result)
            return result
        work = self._dispatch_begin(x, topk_idx, topk_weights, handle, decode)
        return work if async_op else work.wait()

    def _dispatch_now(self, x, topk_idx, topk_weights, handle, decode):
        return self._dispatch_begin(x, topk_idx, topk_weights, handle, decode).wait()

    def _dispatch_begin(self, x, topk_idx, topk_weights, handle, decode):
        ex = self._exchange("dispatch")
        if handle is not None and not isinstance(handle, Handle):
            _fail(self.rank, "dispatch", "invalid argument", f"handle is a {type(handle).__name__}, not an epcomm Handle")
        ids = topk_idx
        if self.device.type == "cuda" and topk_idx.dtype != torch.int32:
            # Narrowed on the GPU (the binding runs no kernels); ids beyond int32
            # become its limits, which the exchange reports as out of range.
            ids = topk_idx.clamp(-2**31, 2**31 - 1).to(torch.int32)
        op = ex.dispatch_begin(x, ids, topk_weights, handle._op if handle is not None else None, self._stream())
        if decode is None:
            decode = self.dispatch_format not in _FP8_FORMATS
        return Work(op, lambda: self._dispatch_result(op, topk_idx, topk_weights, decode),
                    (x, ids, topk_weights))

    def _dispatch_result(self, op, topk_idx, topk_weights, decode) -> DispatchResult:
        handle = Handle(self, op, topk_idx, topk_weights)
        R = handle.num_rows
        x = codes = scales = None
        if decode:
            x = torch.zeros((R, self.hidden), dtype=self.dtype, device=self.device)
            self._sync_stream()  # the zeros are written before the decode
            op.copy_rows(x)
        # The rest are copies of views of the handle's buffers, made on the current
        # stream (which the dispatch already ordered after itself).
        if self.dispatch_format in _FP8_FORMATS:
            L = _epcomm.row_layout(self.dispatch_format, self.hidden)
            rows = from_dlpack(op.view("rows"))
            codes = rows[:, L["payload_offset"]:L["payload_offset"] + self.hidden].clone()
            scales = rows[:, L["meta_offset"]:L["meta_offset"] + L["meta_bytes"]].clone()
            if self.dispatch_format == "fp8":
                scales = scales.view(torch.float32)
            del rows
        weights = from_dlpack(op.view("weights")).clone()
        src_rank = from_dlpack(op.view("src_rank")).to(torch.int64)
        src_token = from_dlpack(op.view("src_token")).to(torch.int64)
        return DispatchResult(x, codes, scales, torch.tensor(handle.expert_counts, dtype=torch.int64),
                              torch.tensor(handle.expert_offsets, dtype=torch.int64), weights, src_rank, src_token,
                              handle)

    # -- combine --
    def combine(self, expert_out: torch.Tensor, handle: Handle, out: Optional[torch.Tensor] = None,
                async_op: bool = False, weighted: bool = True):
        """Sends expert outputs back and reduces them per token.

        Args:
            expert_out: ``[handle.num_rows, hidden]`` of the buffer's dtype, in the
                row layout of the dispatch (padding rows are ignored).
            handle: the :class:`Handle` of that dispatch.
            out: ``[num_tokens, hidden]`` of the buffer's dtype to write into; a new
                tensor if ``None``.
            async_op: return a :class:`Work` at once; ``wait()`` gives ``out``. Not
                with autograd.
            weighted: ``True``: ``out[t] = sum_k topk_weights[t, k] *
                expert_out[row(t, k)]``; ``False``: every weight is 1.

        Returns:
            ``out`` (or a :class:`Work`). Under autograd (grad enabled and
            ``expert_out`` or the dispatch's ``topk_weights`` requiring grad) it is
            differentiable in both: the backward dispatches the output gradient along
            the same route and gives ``grad topk_weights[t, k] = <grad out[t],
            expert_out[row(t, k)]>`` (carried back through ``combine_format``).
        """
        if not isinstance(handle, Handle):
            _fail(self.rank, "combine", "invalid argument", f"handle is a {type(handle).__name__}, not an epcomm Handle")
        self._check_device("combine", expert_out=expert_out)
        w = handle.topk_weights
        needs_grad = expert_out.requires_grad or (weighted and isinstance(w, torch.Tensor) and w.requires_grad)
        if torch.is_grad_enabled() and needs_grad:
            if async_op:
                _fail(self.rank, "combine", "unsupported", "async_op=True cannot be combined with autograd")
            if not weighted:
                return _UnweightedCombineFunction.apply(expert_out, handle)
            return _CombineFunction.apply(expert_out, w, handle)
        work = self._combine_begin(expert_out, handle, out, weighted)
        return work if async_op else work.wait()

    def _combine_begin(self, expert_out, handle, out, weighted):
        ex = self._exchange("combine")
        if out is None:
            out = torch.empty((handle.num_tokens, self.hidden), dtype=self.dtype, device=self.device)
        else:
            self._check_device("combine", out=out)
        op = ex.combine_begin(handle._op, expert_out, out, weighted, self._stream())
        return Work(op, lambda: out, (expert_out, out))

    def _combine_now(self, expert_out, handle, weighted):
        return self._combine_begin(expert_out.contiguous(), handle, None, weighted).wait()

    def _exchange(self, op):
        if self._ex is None:
            _fail(self.rank, op, "invalid argument", "the buffer was closed")
        return self._ex


# -- autograd --

# Each backward drops its handle (the graph would otherwise hold the route's slot
# until the next step replaced it): backward runs once, as without retain_graph.

class _DispatchFunction(torch.autograd.Function):
    """rows = dispatch(x); d x = unweighted combine of d rows."""

    @staticmethod
    def forward(ctx, x, result):
        ctx.handle = result.handle
        return result.x

    @staticmethod
    def backward(ctx, grad_rows):
        h = ctx.handle
        ctx.handle = None  # frees the route's slot once the graph is done with it
        grad_x = h.buffer._combine_now(grad_rows.to(h.buffer.dtype), h, weighted=False)
        return grad_x, None


def _weight_grad(handle: Handle, grad_rows: torch.Tensor, expert_out: torch.Tensor) -> torch.Tensor:
    """d topk_weights[t, k] = <grad out[t], expert_out[row(t, k)]>: each row's dot
    product is put in the column of its expert in an otherwise zero row and brought
    back by unweighted combines, ``hidden`` experts per round."""
    b = handle.buffer
    dots = (grad_rows.float() * expert_out.float()).sum(dim=1)
    experts = handle.row_experts()
    idx = handle.topk_idx.to(torch.int64)
    grad_w = torch.zeros(idx.shape, dtype=torch.float32, device=b.device)
    rows = torch.arange(handle.num_rows, device=b.device)
    for base in range(0, b.num_experts, b.hidden):
        in_round = (experts >= base) & (experts < base + b.hidden)
        carrier = torch.zeros((handle.num_rows, b.hidden), dtype=b.dtype, device=b.device)
        carrier[rows[in_round], experts[in_round] - base] = dots[in_round].to(b.dtype)
        back = b._combine_now(carrier, handle, weighted=False).float()
        mine = (idx >= base) & (idx < base + b.hidden)
        cols = torch.where(mine, idx - base, torch.zeros_like(idx))
        grad_w += torch.where(mine, back.gather(1, cols), torch.zeros_like(grad_w))
    return grad_w


class _CombineFunction(torch.autograd.Function):
    """out = weighted combine(expert_out); d expert_out = weight * dispatch(d out)
    along the same route; d topk_weights from _weight_grad."""

    @staticmethod
    def forward(ctx, expert_out, topk_weights, handle):
        ctx.handle = handle
        ctx.save_for_backward(expert_out)
        return handle.buffer._combine_now(expert_out.detach(), handle, weighted=True)

    @staticmethod
    def backward(ctx, grad_out):
        (expert_out,) = ctx.saved_tensors
        h = ctx.handle
        ctx.handle = None
        b = h.buffer
        g = b._dispatch_now(grad_out.to(b.dtype).contiguous(), h.topk_idx, h.topk_weights.detach(), h, True)
        grad_expert_out = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_expert_out = (g.x.float() * g.weights.unsqueeze(1)).to(expert_out.dtype)
        if ctx.needs_input_grad[1]:
            grad_w = _weight_grad(h, g.x, expert_out).to(h.topk_weights.dtype)
        return grad_expert_out, grad_w, None


class _UnweightedCombineFunction(torch.autograd.Function):
    """out = unweighted combine(expert_out); d expert_out = dispatch(d out)."""

    @staticmethod
    def forward(ctx, expert_out, handle):
        ctx.handle = handle
        return handle.buffer._combine_now(expert_out.detach(), handle, weighted=False)

    @staticmethod
    def backward(ctx, grad_out):
        h = ctx.handle
        ctx.handle = None
        b = h.buffer
        w = h.topk_weights.detach() if isinstance(h.topk_weights, torch.Tensor) else h.topk_weights
        g = b._dispatch_now(grad_out.to(b.dtype).contiguous(), h.topk_idx, w, h, True)
        return g.x, None


# -- routing --

_SCORES = ("sigmoid", "softmax")
_NODE_SCORES = ("top_sum", "max_without_bias")


def route(logits: torch.Tensor, bias: Optional[torch.Tensor] = None, *, topk: int, num_nodes: int = 1,
          max_nodes: int = 0, node_topk: int = 0, score: str = "sigmoid", route_scale: float = 1.0,
          normalize_weights: bool = True, node_score: str = "top_sum") -> Tuple[torch.Tensor, torch.Tensor]:
    """Node-limited top-k routing (epcomm::NodeLimitedRouter), DeepSeek-V3 style.

    Experts are in ``num_nodes`` contiguous blocks (as a :class:`Buffer` lays them
    out: pass ``buffer.group.num_nodes``).

    Args:
        logits: ``[num_tokens, num_experts]`` float32 router logits.
        bias: ``[num_experts]`` float32 balancing bias (steers the choice only), or
            ``None``.
        topk: experts per token.
        num_nodes: nodes the experts are spread over.
        max_nodes: each token's experts lie on at most this many nodes (0: no limit).
        node_topk: experts summed in a node's score (0: ``max(1, topk // max_nodes)``).
        score: ``"sigmoid"`` or ``"softmax"`` (over all experts).
        route_scale: the weights are multiplied by it.
        normalize_weights: divide each token's weights by their sum (``False``:
            DeepSeek-V2-style softmax gating, weights are the raw scores).
        node_score: ``"top_sum"`` (sum of the top ``node_topk``) or
            ``"max_without_bias"`` (the node's max when ``bias`` is ``None``, the
            top-sum otherwise: DeepSeek's gate code).

    Returns:
        ``(topk_idx, topk_weights)``: int64 ``[num_tokens, topk]`` ids (descending
        biased score) and float32 weights. When grad is enabled and ``logits``
        requires grad, the weights are recomputed in torch from the chosen ids so
        that they are differentiable in ``logits`` (same formula; the selection
        itself has no gradient).
    """
    if score not in _SCORES:
        raise Error(f"epcomm: route: score={score!r} is not one of {_SCORES}")
    if node_score not in _NODE_SCORES:
        raise Error(f"epcomm: route: node_score={node_score!r} is not one of {_NODE_SCORES}")
    c = _epcomm.RouterConfig()
    c.num_experts = logits.shape[-1]  # a logits tensor of another rank is refused by name below
    c.topk = topk
    c.num_nodes = num_nodes
    c.max_nodes = max_nodes
    c.node_topk = node_topk
    c.route_scale = route_scale
    c.normalize_weights = normalize_weights
    c.softmax = score == "softmax"
    c.node_score_max_without_bias = node_score == "max_without_bias"
    T = logits.shape[0] if logits.dim() == 2 else 0
    idx32 = torch.empty((T, topk), dtype=torch.int32)
    weights = torch.empty((T, topk), dtype=torch.float32)
    _epcomm.route(logits.detach(), None if bias is None else bias.detach(), idx32, weights, c)
    idx = idx32.to(torch.int64)
    if torch.is_grad_enabled() and logits.requires_grad:
        scores = torch.sigmoid(logits) if score == "sigmoid" else torch.softmax(logits, dim=-1)
        weights = scores.gather(1, idx)
        if normalize_weights:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        weights = weights * route_scale
    return idx, weights


def count_expert_load(topk_idx: torch.Tensor, num_experts: int) -> torch.Tensor:
    """int64 ``[num_experts]``: how many (token, k) choices hit each expert (-1
    ignored)."""
    load = torch.empty(num_experts, dtype=torch.int64)
    _epcomm.count_expert_load(topk_idx.detach().to(torch.int32).contiguous(), num_experts, load)
    return load


def update_expert_bias(bias: torch.Tensor, topk_idx: torch.Tensor, gamma: float, comm=None) -> torch.Tensor:
    """Auxiliary-loss-free balancing step, in place on ``bias`` (float32, CPU,
    contiguous): ``bias[e] -= gamma`` where the load of e is above the mean, ``+=``
    where below. The load is counted from ``topk_idx`` and summed over ``comm`` (an
    mpi4py communicator, e.g. the data-parallel group) when given. Returns the load
    used."""
    load = count_expert_load(topk_idx, bias.shape[0])
    if comm is not None:
        from mpi4py import MPI

        total = load.numpy().copy()
        comm.Allreduce(MPI.IN_PLACE, total, op=MPI.SUM)
        load = torch.from_numpy(total)
    with torch.no_grad():
        _epcomm.update_expert_bias(bias, load, gamma)
    return load


__all__ = ["Buffer", "DispatchResult", "Handle", "Work", "count_expert_load", "route", "update_expert_bias"]
