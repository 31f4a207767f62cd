#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Sweeps max nodes M and wire formats on an emulated cluster with throttled links
# (launch/emulate-cluster) and writes one JSON line per (M, format) that joins
#   - epcomm-bench's line (times, epcomm and baseline inter-node bytes, speedup),
#   - the bytes every emulated host's link carried during that job ("link_*"),
#   - an epcomm-only run of epcomm-cluster-driver with the same shape, whose link
#     bytes are read inside the hosts around its timed loop ("probe_*"; BF16 only,
#     one per M), so epcomm's byte counters can be checked against the kernel's.
# Then bench/plot_cluster.py turns the lines into a table and a plot.
#
#   bench/cluster_sweep.sh [OUT.jsonl]        (default docs/results/cluster.jsonl)
# Environment (defaults in brackets): BUILD [build] HOSTS [4] RPH [1] RATE [500mbit]
# TOKENS [128] HIDDEN [7168] EXPERTS [32] TOPK [8] MAX_NODES ["1 2 3 4"]
# FORMATS ["bf16 fp8 fp8-ue8m0 logfmt8 logfmt10"] ITERS [3] WARMUP [1]
# Needs root (network namespaces) and a build with -DEPCOMM_BUILD_TESTS=ON
# -DEPCOMM_BUILD_BENCH=ON.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-docs/results/cluster.jsonl}
build=${BUILD:-build}
hosts=${HOSTS:-4} rph=${RPH:-1} rate=${RATE:-500mbit}
tokens=${TOKENS:-128} hidden=${HIDDEN:-7168} experts=${EXPERTS:-32} topk=${TOPK:-8}
read -r -a max_nodes <<<"${MAX_NODES:-1 2 3 4}"
read -r -a formats <<<"${FORMATS:-bf16 fp8 fp8-ue8m0 logfmt8 logfmt10}"
iters=${ITERS:-3} warmup=${WARMUP:-1}
bench=$build/bench/epcomm-bench
driver=$build/tests/epcomm-cluster-driver
py=/usr/bin/python3   # Debian's, with numpy/matplotlib (launch/setup.sh)
for f in "$bench" "$driver"; do
  [[ -x $f ]] || { echo "cluster_sweep: $f is missing: build with -DEPCOMM_BUILD_TESTS=ON -DEPCOMM_BUILD_BENCH=ON" >&2; exit 1; }
done
format_flags=1
"$bench" --help | grep -q -- --dispatch-format || format_flags=0
if ((!format_flags)); then
  echo "cluster_sweep: this epcomm-bench has no --dispatch-format: BF16 only" >&2
  formats=(bf16)
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$(dirname "$out")"
: >"$out"
shape=(--tokens "$tokens" --hidden "$hidden" --experts "$experts" --topk "$topk")
cluster=(launch/emulate-cluster --hosts "$hosts" --ranks-per-host "$rph" --rate "$rate")
start=$SECONDS

for m in "${max_nodes[@]}"; do
  # epcomm alone, BF16: its inter-node byte counters against the links' counters.
  "${cluster[@]}" -- "$driver" "${shape[@]}" --max-nodes "$m" --iters "$iters" | tee "$tmp/probe.log"
  grep '^{' "$tmp/probe.log" | tail -1 >"$tmp/probe.json"
  for f in "${formats[@]}"; do
    fmt=()
    ((format_flags)) && fmt=(--dispatch-format "$f" --combine-format "$f")
    rm -f "$tmp/bench.jsonl"
    "${cluster[@]}" --counters "$tmp/link.json" -- "$bench" "${shape[@]}" --max-nodes "$m" "${fmt[@]}" \
      --iters "$iters" --warmup "$warmup" --json-out "$tmp/bench.jsonl"
    # One object per job: the bench's line, then the links' and the probe's fields.
    "$py" - "$tmp/bench.jsonl" "$tmp/link.json" "$tmp/probe.json" "$f" >>"$out" <<'EOF'
import json, sys
bench = json.loads(open(sys.argv[1]).read().splitlines()[-1])
link = json.load(open(sys.argv[2]))
probe = json.load(open(sys.argv[3]))
bench["format"] = sys.argv[4]
bench.update({"link_" + k: v for k, v in link.items() if k in ("rate", "rate_bps", "qdisc", "sent_bytes", "per_host")})
bench.update({"probe_" + k: v for k, v in probe.items()
              if k in ("dispatch_us", "combine_us", "epcomm_dispatch_internode_bytes",
                       "epcomm_combine_internode_bytes", "iface_tx_bytes_per_iter", "iters")})
print(json.dumps(bench))
EOF
    echo "== cluster_sweep: M=$m format=$f done [$((SECONDS - start))s]"
  done
done
echo "== cluster_sweep: $(wc -l <"$out") lines in $out after $((SECONDS - start))s"
"$py" bench/plot_cluster.py "$out"
