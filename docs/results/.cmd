export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
export EPCOMM_VM_OUT=/run/vm-out
export OMPI_ALLOW_RUN_AS_ROOT=1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_pml=ob1
export OMPI_MCA_btl=self,vader,tcp
export OMPI_MCA_osc=pt2pt
export OMPI_MCA_rmaps_base_oversubscribe=1
cd /work/verbs-wt || exit 126
env BUILD=/work/verbs-wt/build bash -c $'set -e\nrun=(mpirun --oversubscribe --bind-to none --mca pml ob1 --mca btl self,tcp -n 2)\n{\n  echo "## ibv_rc_pingpong (send/receive ping-pong over rxe0 loopback)"\n  for s in 65536 1048576; do\n    ibv_rc_pingpong -d rxe0 -g 1 -s $s -n 200 > /dev/null & sleep 1\n    ibv_rc_pingpong -d rxe0 -g 1 -s $s -n 200 localhost | tail -1; wait\n  done\n  echo "## verbs_write_bw (one-way RDMA writes with immediate, 64 in flight)"\n  "${run[@]}" "$BUILD/tests/verbs_write_bw" 65536 1048576 8388608\n} > "$EPCOMM_VM_OUT/verbs-vm-ceiling.txt" 2>&1\ncat "$EPCOMM_VM_OUT/verbs-vm-ceiling.txt"\nEPCOMM_RANKS_PER_NODE=1 "${run[@]}" "$BUILD/bench/epcomm-bench" --transport mpi,verbs \\\n  --tokens 128,512 --hidden 7168 --experts 16 --topk 8 --dispatch-format bf16,fp8 \\\n  --warmup 2 --iters 10 --json-out "$EPCOMM_VM_OUT/verbs-vm-bench.jsonl"' 
