# Sourced by launch scripts: what Open MPI needs to start ranks on this machine.
# As root it refuses to run unless told; with more ranks than cores it refuses
# unless oversubscription is allowed.
if [[ $(id -u) -eq 0 ]]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
EPCOMM_MPIRUN=(mpirun --oversubscribe --bind-to none)
