#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""What the two-micro-batch schedules could hide at best, from a bench row's own times.

Reads epcomm-overlap-bench JSON lines (with attention_us, experts_us, shared_us) and
replays the schedule of runtime/src/overlap.cpp on an idealised machine: compute
stages take their measured time (stage total / (2 * layers) per micro-batch and
layer), every dispatch and combine takes comm_us / (4 * layers) on one
communication resource that serves them in the order they were begun, and a wait
blocks compute until its operation is done. Nothing else costs time. Prints per row
the measured efficiency and the model's bound, (compute + comm - model overlapped) /
min(compute, comm): the most the schedule can hide given how compute is split
between its stages.

  python3 bench/overlap_model.py FILE.jsonl...
"""
import json
import sys


class Machine:
    def __init__(self, op_time):
        self.t = 0.0  # compute timeline
        self.link_free = 0.0
        self.op_time = op_time
        self.done = {}

    def compute(self, d):
        self.t += d

    def begin(self, name):
        start = max(self.t, self.link_free)
        self.link_free = start + self.op_time
        self.done[name] = self.link_free

    def wait(self, name):
        self.t = max(self.t, self.done.pop(name))


def prefill(m, L, A, E, S):
    for l in range(L):
        m.compute(A)                      # attention(mb1)
        m.begin(("d1", l))
        if l > 0:
            m.compute(S)                  # shared(mb0, l-1)
            m.wait(("c0", l - 1))
        m.compute(A)                      # attention(mb0)
        m.begin(("d0", l))
        m.wait(("d1", l))
        m.compute(E)                      # experts(mb1)
        m.begin(("c1", l))
        m.wait(("d0", l))
        m.compute(E)                      # experts(mb0)
        m.begin(("c0", l))
        m.compute(S)                      # shared(mb1)
        m.wait(("c1", l))
    m.compute(S)
    m.wait(("c0", L - 1))


def decode(m, L, A, E, S):
    for l in range(L):
        m.compute(A)                      # attention(mb0)
        m.begin(("d0", l))
        if l > 0:
            m.wait(("c1", l - 1))
        m.compute(A)                      # attention(mb1)
        m.begin(("d1", l))
        m.wait(("d0", l))
        m.compute(S + E)                  # shared + experts(mb0)
        m.begin(("c0", l))
        m.wait(("d1", l))
        m.compute(S + E)                  # shared + experts(mb1)
        m.begin(("c1", l))
        m.wait(("c0", l))
    m.wait(("c1", L - 1))


def bound(r):
    L = r["layers"]
    per = 2.0 * L
    A, E, S = r["attention_us"] / per, r["experts_us"] / per, r["shared_us"] / per
    compute = A * per + E * per + S * per
    comm = r["comm_us"]
    m = Machine(comm / (4.0 * L))
    (prefill if r["schedule"] == "prefill" else decode)(m, L, A, E, S)
    return (compute + comm - m.t) / min(compute, comm)


def main():
    print("schedule ffn attn compute_ms comm_ms efficiency paired model_bound")
    for path in sys.argv[1:]:
        for line in open(path):
            r = json.loads(line)
            if "attention_us" not in r:
                continue
            print(f'{r["schedule"]} {r["ffn"]} {r["attn_gemms"]} {r["compute_us"] / 1e3:.0f} {r["comm_us"] / 1e3:.0f} '
                  f'{r["overlap_efficiency"]:.2f} {r.get("paired_efficiency", float("nan")):.2f} {bound(r):.2f}')


if __name__ == "__main__":
    main()
