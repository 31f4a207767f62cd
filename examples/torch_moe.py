# SPDX-License-Identifier: MIT
"""A DeepSeek-style MoE block trained with expert parallelism over epcomm, on CPU.

Router (sigmoid scores, node-limited top-k, a balancing bias updated without an
auxiliary loss), one shared expert, routed experts as nn.Linear SwiGLU MLPs spread
over the ranks. Tokens are data-parallel: each rank trains on its own batch, the
replicated parameters (router, shared expert) average their gradients over the
ranks, and each routed expert lives on one rank and sees every token routed to it.

    mpirun -np 4 python3 examples/torch_moe.py --steps 10

(with Open MPI as root: --allow-run-as-root --oversubscribe; PYTHONPATH=<build>/python
when epcomm is not installed.) The same block with ``buffer=None`` holds every expert
and computes locally: python/tests/test_training.py trains both and compares.
"""

import argparse

import torch
from torch import nn

import epcomm


class Expert(nn.Module):
    """SwiGLU MLP: w2(silu(w1 x) * w3 x)."""

    def __init__(self, hidden: int, ffn: int):
        super().__init__()
        self.w1 = nn.Linear(hidden, ffn, bias=False)
        self.w3 = nn.Linear(hidden, ffn, bias=False)
        self.w2 = nn.Linear(ffn, hidden, bias=False)

    def forward(self, x):
        return self.w2(nn.functional.silu(self.w1(x)) * self.w3(x))


class MoEBlock(nn.Module):
    """out = shared(x) + sum_k w_k expert_{idx_k}(x).

    Args:
        hidden, ffn: model and expert widths.
        num_experts, topk: routed experts and experts per token.
        buffer: an ``epcomm.Buffer`` (expert parallel: this rank holds experts
            ``rank * J .. (rank + 1) * J - 1``, J = num_experts / ranks), or ``None``
            (every expert here, computed locally).
        num_nodes, max_nodes: the router's node limit (``buffer.group.num_nodes``).
    """

    def __init__(self, hidden: int, ffn: int, num_experts: int, topk: int, buffer=None, num_nodes: int = 1,
                 max_nodes: int = 0, route_scale: float = 1.0):
        super().__init__()
        self.buffer = buffer
        self.num_experts, self.topk = num_experts, topk
        self.route_kwargs = dict(topk=topk, num_nodes=num_nodes, max_nodes=max_nodes, route_scale=route_scale)
        self.gate = nn.Linear(hidden, num_experts, bias=False)
        self.register_buffer("expert_bias", torch.zeros(num_experts))
        self.shared = Expert(hidden, ffn)
        if buffer is None:
            self.first_expert, local = 0, num_experts
        else:
            local = buffer.num_local_experts
            self.first_expert = buffer.rank * local
        self.experts = nn.ModuleList(Expert(hidden, ffn) for _ in range(local))

    def forward(self, x):
        idx, w = epcomm.route(self.gate(x), self.expert_bias, **self.route_kwargs)
        routed = self._local(x, idx, w) if self.buffer is None else self._expert_parallel(x, idx, w)
        return self.shared(x) + routed, idx

    def _local(self, x, idx, w):
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            tokens, k = (idx == e).nonzero(as_tuple=True)
            if tokens.numel():
                out = out.index_add(0, tokens, w[tokens, k].unsqueeze(1) * expert(x[tokens]))
        return out

    def _expert_parallel(self, x, idx, w):
        res = self.buffer.dispatch(x, idx, w)
        pieces = []
        for j, expert in enumerate(self.experts):
            start, count = int(res.expert_offsets[j]), int(res.num_tokens_per_expert[j])
            end = int(res.expert_offsets[j + 1])
            pieces.append(expert(res.x[start:start + count]))
            pieces.append(x.new_zeros((end - start - count, x.shape[1])))  # alignment padding
        return self.buffer.combine(torch.cat(pieces), res.handle)

    def replicated_parameters(self):
        """Parameters every rank holds (their gradients are summed over ranks)."""
        return list(self.gate.parameters()) + list(self.shared.parameters())


def init_routed_experts(block: MoEBlock):
    """Each routed expert's weights from a seed of its global id, so the expert-parallel
    block and a block holding every expert start equal."""
    for j, expert in enumerate(block.experts):
        torch.manual_seed(1000 + block.first_expert + j)
        for p in expert.parameters():
            nn.init.normal_(p, std=p.shape[1] ** -0.5)


def allreduce_grads(params, comm):
    """Sums the gradients of replicated parameters over comm."""
    from mpi4py import MPI

    for p in params:
        if p.grad is not None:
            g = p.grad.numpy()
            comm.Allreduce(MPI.IN_PLACE, g, op=MPI.SUM)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=32, help="tokens per rank")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--ffn", type=int, default=128)
    parser.add_argument("--experts-per-rank", type=int, default=2)
    parser.add_argument("--topk", type=int, default=4)
    parser.add_argument("--max-nodes", type=int, default=0)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--bias-gamma", type=float, default=1e-3)
    args = parser.parse_args()

    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    num_experts = args.experts_per_rank * comm.Get_size()
    buf = epcomm.Buffer(comm, num_experts=num_experts, hidden=args.hidden, max_tokens_per_rank=args.tokens,
                        topk=args.topk, dtype=torch.float32, dispatch_format="bf16", combine_format="bf16")
    # Same replicated weights everywhere; each rank's experts from their own seed.
    torch.manual_seed(0)
    block = MoEBlock(args.hidden, args.ffn, num_experts, args.topk, buffer=buf, num_nodes=buf.group.num_nodes,
                     max_nodes=args.max_nodes)
    init_routed_experts(block)
    opt = torch.optim.SGD(block.parameters(), lr=args.lr)
    torch.manual_seed(100 + buf.rank)
    x = torch.randn(args.tokens, args.hidden)
    target = torch.randn(args.tokens, args.hidden)
    total_tokens = args.tokens * comm.Get_size()
    for step in range(args.steps):
        opt.zero_grad()
        out, idx = block(x)
        loss = ((out - target) ** 2).sum() / total_tokens
        loss.backward()
        allreduce_grads(block.replicated_parameters(), comm)
        opt.step()
        load = epcomm.update_expert_bias(block.expert_bias, idx, args.bias_gamma, comm)
        global_loss = comm.allreduce(loss.item())
        if buf.rank == 0:
            print(f"step {step}: loss {global_loss:.5f}, expert load {load.tolist()}")
    buf.close()


if __name__ == "__main__":
    main()
