# SPDX-License-Identifier: MIT
"""Training equivalence: examples/torch_moe.py's MoE block trained 20 steps with
expert parallelism over epcomm, and the same block holding every expert computed on
one process: losses and every parameter's gradient agree to float32 tolerance."""

import numpy as np
import torch

import epcomm
from torch_moe import MoEBlock, allreduce_grads, init_routed_experts

STEPS = 20
TOKENS = 12  # per rank
HIDDEN, FFN, TOPK = 32, 48, 3
LR, GAMMA = 0.05, 1e-3
RTOL, ATOL = 1e-4, 1e-6


def make_block(buffer, num_experts, num_nodes):
    torch.manual_seed(0)  # router and shared expert: the same on every rank and in the reference
    block = MoEBlock(HIDDEN, FFN, num_experts, TOPK, buffer=buffer, num_nodes=num_nodes, max_nodes=1)
    init_routed_experts(block)
    return block


def test_expert_parallel_training_matches_single_process(comm):
    rank, P = comm.Get_rank(), comm.Get_size()
    E = 2 * P
    buf = epcomm.Buffer(comm, num_experts=E, hidden=HIDDEN, max_tokens_per_rank=TOKENS, topk=TOPK,
                        dtype=torch.float32, dispatch_format="f32", combine_format="f32")
    nodes = buf.group.num_nodes
    ep = make_block(buf, E, nodes)
    ref = make_block(None, E, nodes)
    ep_opt = torch.optim.SGD(ep.parameters(), lr=LR)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=LR)

    g = torch.Generator().manual_seed(50 + rank)
    x = torch.randn((TOKENS, HIDDEN), generator=g)
    target = torch.randn((TOKENS, HIDDEN), generator=g)
    all_x = [torch.from_numpy(a) for a in comm.allgather(x.numpy())]
    all_target = [torch.from_numpy(a) for a in comm.allgather(target.numpy())]
    total = TOKENS * P
    ref_params = dict(ref.named_parameters())
    J = buf.num_local_experts

    mismatches = []
    gate_grad_norms = []
    for step in range(STEPS):
        ep_opt.zero_grad()
        out, idx = ep(x)
        loss = ((out - target) ** 2).sum() / total
        loss.backward()
        allreduce_grads(ep.replicated_parameters(), comm)
        ep_loss = comm.allreduce(loss.item())
        epcomm.update_expert_bias(ep.expert_bias, idx, GAMMA, comm)

        # The reference sees each rank's batch separately (same shapes as the ranks,
        # so the router computes the same logits) and one loss over all of them.
        ref_opt.zero_grad()
        ref_loss = 0.0
        ref_idx = []
        for r in range(P):
            out_r, idx_r = ref(all_x[r])
            ref_loss = ref_loss + ((out_r - all_target[r]) ** 2).sum() / total
            ref_idx.append(idx_r)
        ref_loss.backward()
        epcomm.update_expert_bias(ref.expert_bias, torch.cat(ref_idx), GAMMA)

        if not np.isclose(ep_loss, ref_loss.item(), rtol=RTOL, atol=ATOL):
            mismatches.append(f"step {step}: loss {ep_loss} vs {ref_loss.item()}")
        for name, p in ep.named_parameters():
            if name.startswith("experts."):
                j, rest = name[len("experts."):].split(".", 1)
                want = ref_params[f"experts.{rank * J + int(j)}.{rest}"].grad
            else:
                want = ref_params[name].grad
            got = p.grad if p.grad is not None else torch.zeros_like(p)
            want = want if want is not None else torch.zeros_like(p)
            if not torch.allclose(got, want, rtol=RTOL, atol=ATOL):
                mismatches.append(f"step {step}: grad of {name} differs by {(got - want).abs().max().item()}")
        if not torch.equal(ep.expert_bias, ref.expert_bias):
            mismatches.append(f"step {step}: expert_bias differs")
        gate_grad_norms.append(ep.gate.weight.grad.norm().item())
        ep_opt.step()
        ref_opt.step()
    buf.close()

    assert not mismatches, "\n".join(mismatches[:20])
    # The router learns through the gating weights: its gradient is not zero.
    assert min(gate_grad_norms) > 0
