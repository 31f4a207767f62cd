# SPDX-License-Identifier: MIT
"""epcomm.route against a brute-force torch reference, and the balancing helpers."""

import itertools

import numpy as np
import pytest
import torch

import epcomm

E, NODES, TOKENS = 16, 4, 24


def reference_route(logits, bias, topk, max_nodes, node_topk, score, normalize, node_score, scale):
    """Enumerates node subsets and expert subsets in float64 (no sorting shared with
    the library)."""
    lg = logits.double()
    s = torch.sigmoid(lg) if score == "sigmoid" else torch.softmax(lg, dim=-1)
    biased = s + (bias.double() if bias is not None else 0.0)
    per = E // NODES
    out_sets, out_w = [], []
    for t in range(lg.shape[0]):
        b = biased[t].view(NODES, per)
        if node_score == "max_without_bias" and bias is None:
            ns = b.max(dim=1).values
        else:
            ns = b.sort(dim=1, descending=True).values[:, :node_topk].sum(dim=1)
        best_nodes = max(itertools.combinations(range(NODES), max_nodes), key=lambda c: sum(ns[n].item() for n in c))
        pool = [n * per + i for n in best_nodes for i in range(per)]
        best = max(itertools.combinations(pool, topk), key=lambda c: sum(biased[t, e].item() for e in c))
        w = s[t, list(best)]
        if normalize:
            w = w / w.sum()
        out_sets.append(set(best))
        out_w.append(dict(zip(best, (w * scale).tolist())))
    return out_sets, out_w


@pytest.mark.parametrize("score", ["sigmoid", "softmax"])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("node_score,with_bias", [("top_sum", True), ("max_without_bias", False),
                                                  ("max_without_bias", True)])
def test_route_matches_brute_force(score, normalize, node_score, with_bias):
    g = torch.Generator().manual_seed(5)
    logits = torch.randn((TOKENS, E), generator=g) * 2
    bias = (torch.rand(E, generator=g) - 0.5) * 0.4 if with_bias else None
    topk, max_nodes, scale = 4, 2, 2.5
    idx, w = epcomm.route(logits, bias, topk=topk, num_nodes=NODES, max_nodes=max_nodes, score=score,
                          route_scale=scale, normalize_weights=normalize, node_score=node_score)
    assert idx.dtype == torch.int64 and w.dtype == torch.float32
    sets, weights = reference_route(logits, bias, topk, max_nodes, topk // max_nodes, score, normalize, node_score,
                                    scale)
    for t in range(TOKENS):
        assert set(idx[t].tolist()) == sets[t], f"token {t}"
        for k in range(topk):
            want = weights[t][int(idx[t, k])]
            assert abs(w[t, k].item() - want) <= 1e-6 * abs(want) + 1e-7, f"token {t} k {k}"


def test_route_weights_are_differentiable_and_equal():
    g = torch.Generator().manual_seed(6)
    logits = torch.randn((TOKENS, E), generator=g)
    idx_plain, w_plain = epcomm.route(logits, None, topk=3, num_nodes=NODES, max_nodes=2)
    leaf = logits.clone().requires_grad_(True)
    idx, w = epcomm.route(leaf, None, topk=3, num_nodes=NODES, max_nodes=2)
    assert torch.equal(idx, idx_plain)
    assert torch.allclose(w, w_plain, rtol=1e-6, atol=1e-7)
    (w * torch.arange(3.0)).sum().backward()
    assert leaf.grad is not None and leaf.grad.abs().sum() > 0


def test_route_rejects_bad_input():
    with pytest.raises(epcomm.Error, match="logit of token 1 for expert 2 is nan"):
        bad = torch.zeros((3, E))
        bad[1, 2] = float("nan")
        epcomm.route(bad, None, topk=2)
    with pytest.raises(epcomm.Error, match="score='tanh'"):
        epcomm.route(torch.zeros((3, E)), None, topk=2, score="tanh")
    with pytest.raises(epcomm.Error, match="logits has dtype float64"):
        epcomm.route(torch.zeros((3, E), dtype=torch.float64), None, topk=2)


def test_update_expert_bias_uses_the_global_load(comm):
    rank = comm.Get_rank()
    g = torch.Generator().manual_seed(70 + rank)
    idx = torch.randint(0, E, (10, 2), generator=g)
    idx[0, 0] = -1
    bias = torch.zeros(E)
    load = epcomm.update_expert_bias(bias, idx, 0.01, comm)
    everyone = comm.allgather(idx.numpy())
    want = np.zeros(E, dtype=np.int64)
    for a in everyone:
        for e in a.ravel():
            if e >= 0:
                want[e] += 1
    assert np.array_equal(load.numpy(), want)
    mean = want.sum() / E
    expected = np.where(want > mean, -0.01, np.where(want < mean, 0.01, 0.0)).astype(np.float32)
    assert np.array_equal(bias.numpy(), expected)


def test_module_takes_numpy_arrays_through_dlpack():
    """The module sees DLPack only: numpy arrays work as torch tensors do."""
    from epcomm import _epcomm

    logits = np.random.default_rng(3).normal(size=(5, E)).astype(np.float32)
    c = _epcomm.RouterConfig()
    c.num_experts, c.topk = E, 2
    idx = np.empty((5, 2), dtype=np.int32)
    w = np.empty((5, 2), dtype=np.float32)
    _epcomm.route(logits, None, idx, w, c)
    want_idx, want_w = epcomm.route(torch.from_numpy(logits), None, topk=2)
    assert np.array_equal(idx, want_idx.numpy()) and np.array_equal(w, want_w.numpy())
    with pytest.raises(epcomm.Error, match=r"logits has shape \[16\] where \[\*, 16\] is needed"):
        epcomm.route(torch.zeros(E), None, topk=2)
