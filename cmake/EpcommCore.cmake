# SPDX-License-Identifier: MIT
# epcomm_core: the vocabulary every part of epcomm speaks, with no MPI, no threads
# and no codec kernels behind it: the public headers (runtime/include/epcomm:
# types, formats, error), the byte layout of encoded rows (kernels/row_layout.cpp),
# the sizes and names of element types and memory spaces (runtime/src/types.cpp)
# and the names of error codes (runtime/src/error.cpp). The codecs
# (epcomm_kernels, epcomm_cuda_kernels) and the runtime both link it, so the codecs
# need nothing of the runtime to build.
#
# The parsers of types.hpp (parse_dtype, parse_format, logfmt_format) stay in the
# runtime (runtime/src/parse_types.cpp): their errors name the rank, which only the
# runtime's log knows.
add_library(epcomm_core STATIC
  ${PROJECT_SOURCE_DIR}/kernels/row_layout.cpp
  ${PROJECT_SOURCE_DIR}/runtime/src/types.cpp
  ${PROJECT_SOURCE_DIR}/runtime/src/error.cpp)
target_include_directories(epcomm_core
  PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/runtime/include>
         $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>
  PRIVATE ${PROJECT_SOURCE_DIR}/kernels)
# BUILD_INTERFACE: installed with the CUDA codecs (cmake/EpcommInstall.cmake).
target_link_libraries(epcomm_core PRIVATE $<BUILD_INTERFACE:epcomm_warnings>)
target_compile_features(epcomm_core INTERFACE cxx_std_17)
