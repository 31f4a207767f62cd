#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Table and plot of an emulated-cluster sweep (bench/cluster_sweep.sh).

    /usr/bin/python3 bench/plot_cluster.py docs/results/cluster.jsonl [--png docs/cluster.png]

Prints a Markdown table (one row per JSON line) and draws time and inter-node bytes
against max nodes M, one line per wire format. Alongside what was measured, a
model predicts epcomm's inter-node bytes without looking at epcomm's counters:

    bytes = ranks * tokens * E[remote nodes per token] * (dispatch row + metadata + combine row)

where E[remote nodes per token] comes from simulating the node-limited router
(sigmoid scores of normal logits, M nodes by the sum of their top-(K/M) scores, then
the top K experts of those nodes) and counting the distinct nodes other than the
token's own, and the row sizes follow the layouts in runtime/include/epcomm/formats.hpp.
"""
import argparse
import json
import math

import numpy as np


def row_bytes(fmt, hidden):
    """Encoded bytes of one row (runtime/include/epcomm/formats.hpp)."""
    tiles = math.ceil(hidden / 128)
    if fmt == "bf16":
        return 2 * hidden
    if fmt == "f32":
        return 4 * hidden
    if fmt == "fp8":  # E4M3 codes, padded to 4, one FP32 scale per tile
        return (hidden + 3) // 4 * 4 + 4 * tiles
    if fmt == "fp8-ue8m0":  # E4M3 codes, one UE8M0 byte per tile
        return hidden + tiles
    if fmt.startswith("logfmt"):  # (int16 min, int16 max) per tile, n-bit codes per tile
        bits = int(fmt[len("logfmt"):])
        lens = [min(128, hidden - 128 * t) for t in range(tiles)]
        return 4 * tiles + sum(math.ceil(bits * n / 8) for n in lens)
    raise ValueError(f"unknown format {fmt}")


def remote_nodes_per_token(nodes, experts, topk, max_nodes, samples=200_000, seed=0):
    """Mean number of nodes other than the source's that a token reaches."""
    rng = np.random.default_rng(seed)
    per_node = experts // nodes
    m = max_nodes if 0 < max_nodes < nodes else nodes
    node_topk = max(1, topk // m)
    scores = 1 / (1 + np.exp(-rng.standard_normal((samples, nodes, per_node))))
    node_score = np.sort(scores, axis=2)[:, :, -node_topk:].sum(axis=2)
    chosen = np.argsort(-node_score, axis=1)[:, :m]
    masked = np.full_like(scores, -np.inf)
    rows = np.arange(samples)[:, None]
    masked[rows, chosen] = scores[rows, chosen]
    flat = masked.reshape(samples, -1)
    top = np.argpartition(-flat, topk - 1, axis=1)[:, :topk] // per_node
    reached = np.zeros((samples, nodes), bool)
    reached[rows, top] = True
    # By symmetry the source node is any node with equal probability.
    return reached.sum(axis=1).mean() * (nodes - 1) / nodes


def model_bytes(r):
    ranks, nodes = r["ranks"], r["nodes"]
    remote = remote_nodes_per_token(nodes, r["experts"], r["topk"], r["max_nodes"])
    meta = 4 * (1 + 2 * r["topk"])  # source token index, expert ids, weights
    fmt = r.get("format", r["dtype"])
    per_pair = row_bytes(fmt, r["hidden"]) + meta + row_bytes(fmt, r["hidden"])
    return ranks * r["tokens"] * remote * per_pair


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("jsonl")
    ap.add_argument("--png", default="docs/cluster.png")
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(args.jsonl) if line.strip()]

    print("| M | format | epcomm inter-node MB | model MB | link MB / expected | epcomm-only: counters MB / link MB"
          " | dispatch ms | combine ms | link use, epcomm | baseline ms | link use, baseline | speedup | check |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        execs = 1 + r["warmup"] + r["iters"]  # check pass + warmup + timed, each path
        expected = execs * (r["internode_bytes"] + r["baseline_internode_bytes"] + r["layout_bytes"])
        probe_epcomm = r["probe_epcomm_dispatch_internode_bytes"] + r["probe_epcomm_combine_internode_bytes"]
        rate = r["link_rate_bps"] / 8  # bytes per second per host and direction
        hosts = r["nodes"]
        use = r["internode_bytes"] / hosts / rate / (r["total_us"] * 1e-6)
        base_use = r["baseline_internode_bytes"] / hosts / rate / (r["baseline_us"] * 1e-6)
        r["model_bytes"] = model_bytes(r)
        print(f"| {r['effective_max_nodes']} | {r['format']} | {r['internode_bytes'] / 1e6:.2f} | {r['model_bytes'] / 1e6:.2f}"
              f" | {r['link_sent_bytes'] / 1e6:.1f} / {expected / 1e6:.1f} = {r['link_sent_bytes'] / expected:.3f}"
              f" | {probe_epcomm / 1e6:.2f} / {r['probe_iface_tx_bytes_per_iter'] / 1e6:.2f}"
              f" = {r['probe_iface_tx_bytes_per_iter'] / probe_epcomm:.3f}"
              f" | {r['dispatch_us'] / 1e3:.1f} | {r['combine_us'] / 1e3:.1f} | {use:.0%}"
              f" | {r['baseline_us'] / 1e3:.1f} | {base_use:.0%} | {r['speedup_vs_baseline']:.2f} | {r['check']} |")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for fmt in dict.fromkeys(r["format"] for r in rows):
        sel = sorted((r for r in rows if r["format"] == fmt), key=lambda r: r["effective_max_nodes"])
        ms = [r["effective_max_nodes"] for r in sel]
        line, = ax_t.plot(ms, [r["total_us"] / 1e3 for r in sel], "o-", label=f"epcomm {fmt}")
        ax_b.plot(ms, [r["internode_bytes"] / 1e6 for r in sel], "o-", color=line.get_color(), label=f"epcomm {fmt}")
        ax_b.plot(ms, [r["model_bytes"] / 1e6 for r in sel], "x:", color=line.get_color())
    base = sorted((r for r in rows if r["format"] == rows[0]["format"]), key=lambda r: r["effective_max_nodes"])
    ax_t.plot([r["effective_max_nodes"] for r in base], [r["baseline_us"] / 1e3 for r in base], "s--k",
              label="baseline (BF16 Alltoallv)")
    ax_b.plot([r["effective_max_nodes"] for r in base], [r["baseline_internode_bytes"] / 1e6 for r in base], "s--k",
              label="baseline (BF16 Alltoallv)")
    r0 = rows[0]
    title = (f"{r0['nodes']} hosts x {r0['ranks_per_node']} ranks, links {r0['link_rate']}, "
             f"{r0['tokens']} tokens/rank, hidden {r0['hidden']}, {r0['experts']} experts, top-{r0['topk']}")
    ax_t.set(xlabel="max nodes M", ylabel="dispatch + combine, ms (median)", title="time")
    ax_b.set(xlabel="max nodes M", ylabel="inter-node MB per dispatch + combine",
             title="bytes (x: model)")
    for ax in (ax_t, ax_b):
        ax.set_xticks(sorted({r["effective_max_nodes"] for r in rows}))
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    ax_t.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(args.png, dpi=110)
    print(f"\nplot: {args.png}")


if __name__ == "__main__":
    main()
