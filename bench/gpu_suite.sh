#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# On a host with CUDA GPUs (one rank per GPU): builds epcomm with CUDA, runs the GPU
# tests (ctest -L gpu and the CUDA codec tests), compute-sanitizer over a subset of
# the GPU exchange tests, and the GPU benchmarks; logs and JSON lines go to $1.
# The benchmarks use one rank per GPU of the host (EPCOMM_GPUS to use fewer), as one
# node and as 2 emulated nodes of half the ranks each (node-limited M = 1, 2).
#   bash bench/gpu_suite.sh OUT_DIR [quick]
# Warnings are errors in the CI build (Debian 12), not here: newer compilers warn anew.
# NCCL for the baseline: NCCL_ROOT, else the one pip's nvidia-nccl package installs.
set -uo pipefail
out=${1:?usage: gpu_suite.sh OUT_DIR [quick]}
mode=${2:-full}
cd "$(dirname "$0")/.." || exit 1
mkdir -p "$out"
source launch/mpi_env.sh
# Never NVLink multicast on a shared host.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
build=${EPCOMM_GPU_BUILD:-build-gpu}
# The Python tests need torch and pytest: the first python3 on PATH that has both.
python_arg=()
if python3 -c 'import torch, pytest' 2>/dev/null; then
  python_arg=(-DPython3_EXECUTABLE="$(command -v python3)")
fi
if [[ -z ${NCCL_ROOT:-} ]]; then
  NCCL_ROOT=$(python3 -c 'import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__))' 2>/dev/null || true)
fi
nccl_lib=$(find "${NCCL_ROOT:-/nonexistent}/lib" -name 'libnccl.so*' -print -quit 2>/dev/null)
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  nvidia-smi topo -m 2>/dev/null | head -5
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEPCOMM_WERROR=OFF -DEPCOMM_WITH_CUDA=ON \
    -DEPCOMM_WITH_VERBS=OFF "${python_arg[@]}" -DNCCL_ROOT="${NCCL_ROOT:-}" ${nccl_lib:+-DNCCL_LIBRARY="$nccl_lib"} &&
    cmake --build "$build" -j"$(nproc)" --target epcomm test_exchange_gpu test_low_latency_gpu test_codec_cuda \
      test_failures epcomm-bench epcomm-gpu-bench epcomm-codec-gpu-bench
} > "$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
echo "== build ok"
# The Python package (its CUDA tests are in ctest -L gpu) where the host has Python
# headers, pybind11 and DLPack; without them those tests are not defined.
if grep -q '^EPCOMM_BUILD_PYTHON:BOOL=ON' "$build/CMakeCache.txt"; then
  cmake --build "$build" -j"$(nproc)" --target _epcomm >> "$out/build.log" 2>&1
  echo "== python package: rc $?"
else
  echo "== python package not configured (see $out/build.log)"
fi
mpirun=("${EPCOMM_MPIRUN[@]}")
np=${EPCOMM_GPUS:-$(nvidia-smi -L | grep -c '^GPU')}
half=$(( np > 1 ? np / 2 : 1 ))
# Tests: one node (CUDA IPC) and 2 emulated nodes (pinned host staging + MPI).
ctest --test-dir "$build" -L gpu --output-on-failure --timeout 150 > "$out/gpu-tests.log" 2>&1
echo "== ctest -L gpu: rc $?"; grep -E "tests passed|Failed|FAILED|OK \]|Failure" "$out/gpu-tests.log" | head -60
"$build/tests/test_codec_cuda" > "$out/codec-cuda.log" 2>&1
echo "== test_codec_cuda: rc $?"; tail -3 "$out/codec-cuda.log"
bench=("$build/bench/epcomm-gpu-bench")
echo "== epcomm-gpu-bench, $np ranks, one node"
"${mpirun[@]}" -np "$np" "${bench[@]}" --tokens 128,4096 --json | tee "$out/gpu-bench.jsonl"
echo "== epcomm-bench --mode low-latency --memory device, $np ranks, one node"
# The GEMM between the halves (issue 12's receive hook) where the build has cuBLAS.
gemm=()
"$build/bench/epcomm-bench" --help 2>/dev/null | grep -q -- --gemm-between && gemm=(--gemm-between)
"${mpirun[@]}" -np "$np" "$build/bench/epcomm-bench" --mode low-latency --memory device --tokens 128 --hidden 7168 \
  --experts 256 --topk 8 --dispatch-format fp8 --combine-format bf16 --iters 200 "${gemm[@]}" --json \
  | tee "$out/low-latency-gpu.jsonl"
echo "== epcomm-bench --mode low-latency --memory device, $np ranks as 2 emulated nodes (the proxy)"
"${mpirun[@]}" -np "$np" -x EPCOMM_RANKS_PER_NODE="$half" "$build/bench/epcomm-bench" --mode low-latency \
  --memory device --tokens 128 --hidden 7168 --experts 256 --topk 8 --dispatch-format fp8 --combine-format bf16 \
  --iters 200 --json | tee -a "$out/low-latency-gpu.jsonl"
echo "== epcomm-gpu-bench, $np ranks as 2 emulated nodes"
"${mpirun[@]}" -np "$np" -x EPCOMM_RANKS_PER_NODE="$half" "${bench[@]}" --tokens 128,4096 --max-nodes 1,2 --json |
  tee -a "$out/gpu-bench.jsonl"
if [[ $mode == full ]]; then
  if "${bench[@]}" --help 2>/dev/null | grep -q -- --timeline; then
    echo "== epcomm-gpu-bench --timeline (CUPTI), one node"
    "${mpirun[@]}" -np "$np" "${bench[@]}" --tokens 128,4096 --iters 10 --timeline > "$out/gpu-timeline.log" 2>&1
  fi
  echo "== epcomm-gpu-bench, BF16 dispatch"
  "${mpirun[@]}" -np "$np" "${bench[@]}" --tokens 4096 --dispatch-format bf16 --json | tee -a "$out/gpu-bench.jsonl"
  echo "== compute-sanitizer memcheck / racecheck (subset)"
  for tool in memcheck racecheck; do
    # The sanitizer serialises GPU work: a held stream would wait for work queued
    # behind it, so streams are not held and the tests wait on the host.
    timeout 150 "${mpirun[@]}" -np 2 -x EPCOMM_HOLD_STREAMS=0 compute-sanitizer --tool "$tool" --error-exitcode 9 \
      "$build/tests/test_exchange_gpu" --gtest_filter='Cases/GpuExchange.BitIdenticalToTheHostExchange/fp8_h129:*TwoMicro*' \
      > "$out/sanitizer-$tool.log" 2>&1
    echo "$tool: rc $?"; grep -E "ERROR SUMMARY|PASSED|FAILED" "$out/sanitizer-$tool.log" | head -6
    # The low-latency kernels (rows written into the peer GPU through CUDA IPC).
    timeout 150 "${mpirun[@]}" -np 2 compute-sanitizer --tool "$tool" --error-exitcode 9 \
      "$build/tests/test_low_latency_gpu" \
      --gtest_filter='Cases/LowLatencyGpu.BitIdenticalToTheHostExchange/fp8_bf16_h300:*/combine_logfmt10' \
      > "$out/sanitizer-low-latency-$tool.log" 2>&1
    echo "low-latency $tool: rc $?"; grep -E "ERROR SUMMARY|PASSED|FAILED" "$out/sanitizer-low-latency-$tool.log" | head -6
  done
  echo "== epcomm-codec-gpu-bench"
  "$build/bench/epcomm-codec-gpu-bench" --tokens 4096 > "$out/codec-gpu-bench.log" 2>&1; tail -12 "$out/codec-gpu-bench.log"
fi
