# SPDX-License-Identifier: MIT
# The raw verbs transport (runtime/src/transport/verbs): built into libepcomm when
# libibverbs and hwloc (which adapter is near the rank's cores) are found (Debian:
# libibverbs-dev, libhwloc-dev). -DEPCOMM_WITH_VERBS=OFF leaves it out; ON without
# them is a configure error rather than a silent omission.
find_path(EPCOMM_IBVERBS_INCLUDE_DIR infiniband/verbs.h)
find_library(EPCOMM_IBVERBS_LIBRARY ibverbs)
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(HWLOC QUIET IMPORTED_TARGET GLOBAL hwloc)
endif()
if(EPCOMM_IBVERBS_INCLUDE_DIR AND EPCOMM_IBVERBS_LIBRARY AND HWLOC_FOUND)
  set(epcomm_verbs_found ON)
else()
  set(epcomm_verbs_found OFF)
endif()
option(EPCOMM_WITH_VERBS "Build the RDMA verbs transport (needs libibverbs and hwloc)" ${epcomm_verbs_found})
if(EPCOMM_WITH_VERBS AND NOT epcomm_verbs_found)
  message(FATAL_ERROR "EPCOMM_WITH_VERBS=ON but libibverbs or hwloc was not found: install libibverbs-dev libhwloc-dev "
                      "or configure with -DEPCOMM_WITH_VERBS=OFF")
endif()

if(EPCOMM_WITH_VERBS)
  target_sources(epcomm_objects PRIVATE
    src/transport/verbs/gid_choice.cpp
    src/transport/verbs/immediate.cpp
    src/transport/verbs/write_plan.cpp
    src/transport/verbs/verbs_device.cpp
    src/transport/verbs/device_locality.cpp
    src/transport/verbs/memory_region.cpp
    src/transport/verbs/rc_queue_pair.cpp
    src/transport/verbs/verbs_transport.cpp
    src/exchange/verbs_internode.cpp)
  target_include_directories(epcomm_objects PRIVATE ${EPCOMM_IBVERBS_INCLUDE_DIR})
  target_link_libraries(epcomm_objects PRIVATE ${EPCOMM_IBVERBS_LIBRARY} PkgConfig::HWLOC)
  target_compile_definitions(epcomm_objects PRIVATE EPCOMM_WITH_VERBS=1)
  # GPUDirect RDMA registers GPU memory as a dma-buf (rdma-core 34 and later);
  # without it the verbs tier stages GPU memory through pinned host memory.
  include(CheckSymbolExists)
  set(CMAKE_REQUIRED_INCLUDES ${EPCOMM_IBVERBS_INCLUDE_DIR})
  set(CMAKE_REQUIRED_LIBRARIES ${EPCOMM_IBVERBS_LIBRARY})
  check_symbol_exists(ibv_reg_dmabuf_mr infiniband/verbs.h EPCOMM_HAVE_IBV_REG_DMABUF_MR)
  unset(CMAKE_REQUIRED_INCLUDES)
  unset(CMAKE_REQUIRED_LIBRARIES)
  if(EPCOMM_HAVE_IBV_REG_DMABUF_MR)
    set_property(SOURCE src/transport/verbs/memory_region.cpp src/exchange/rail_memory.cpp
                 APPEND PROPERTY COMPILE_DEFINITIONS EPCOMM_HAVE_IBV_REG_DMABUF_MR=1)
  endif()
endif()
message(STATUS "epcomm: verbs transport ${EPCOMM_WITH_VERBS}")
