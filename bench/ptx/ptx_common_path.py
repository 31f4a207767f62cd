#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Counts the PTX instructions one thread executes along one path of a kernel.

  ptx_common_path.py FILE.ptx KERNEL DECISIONS

KERNEL is a substring of the entry's mangled name; DECISIONS has one letter per
conditional branch met on the way, T (taken) or F (falls through). With too few
letters it stops at the next conditional branch and prints it with the
instructions before it, so a path is found one branch at a time. mov, ld.param,
cvta and the branches themselves are not counted (ptxas folds most of them away).
"""
import re
import sys


def blocks_of(ptx, kernel):
    entries = re.split(r"\n(?=\.visible \.entry)", ptx)
    body = [e for e in entries if e.startswith(".visible") and kernel in e.split("(")[0]][0]
    blocks, cur, n = {"entry": []}, "entry", 0
    for line in body.split("\n")[1:]:
        t = line.strip().rstrip(";").strip()
        label = re.match(r"(\$L__\w+):$", t)
        if label:
            blocks[cur].append(("fall", label.group(1)))
            cur = label.group(1)
            blocks[cur] = []
            continue
        branch = re.match(r"(@!?%p\d+\s+)?bra(\.uni)?\s+(\$L__\w+)", t)
        if branch:
            n += 1
            if branch.group(1):
                blocks[cur].append(("cond", branch.group(3), f"fall{n}", t))
                cur = f"fall{n}"
            else:
                blocks[cur].append(("jump", branch.group(3)))
                cur = f"dead{n}"
            blocks[cur] = []
            continue
        if t.startswith("ret"):
            blocks[cur].append(("ret",))
            continue
        if not t or t[0] in "/.{}()" or t.endswith(":"):
            continue
        op = t.split()[1] if t.startswith("@") else t.split()[0]
        if not op.startswith(("mov", "ld.param", "cvta")):
            blocks[cur].append(("op", t))
    return blocks


def main():
    ptx_file, kernel, decisions = sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else ""
    blocks = blocks_of(open(ptx_file).read(), kernel)
    block, total, used = "entry", 0, 0
    while block is not None:
        ops, nxt = [], None
        for item in blocks[block]:
            if item[0] == "op":
                ops.append(item[1])
                continue
            if item[0] in ("fall", "jump"):
                nxt = item[1]
            elif item[0] == "cond":
                if used == len(decisions):
                    print(f"{block}: {len(ops)} ops, then {item[3]}; decision {used} needed")
                    for op in ops[-3:]:
                        print("   ", op)
                    print("counted so far", total + len(ops))
                    return
                nxt = item[1] if decisions[used] == "T" else item[2]
                used += 1
            break
        total += len(ops)
        block = nxt
    print(f"{total} instructions, {used} decisions")


main()
