# SPDX-License-Identifier: MIT
# Install rules: the shared library (with its SONAME links), the public headers,
# a CMake package (find_package(epcomm) -> epcomm::epcomm, MPI found for the caller)
# and a pkg-config file (epcomm.pc).
#
#   cmake --install build --prefix /opt/epcomm
#   cmake -S app -B app/build -DCMAKE_PREFIX_PATH=/opt/epcomm    # find_package(epcomm)
#   PKG_CONFIG_PATH=/opt/epcomm/lib/pkgconfig pkg-config --cflags --libs epcomm
#
# epcomm is a SHARED library: its PRIVATE links (the static epcomm_kernels and
# epcomm_core, the epcomm_warnings flags, Threads, rt) are linked into libepcomm.so and do not appear
# in the exported interface, so they need no export set. Only MPI::MPI_CXX (PUBLIC)
# does, and epcommConfig.cmake finds MPI before it loads the targets.
include(CMakePackageConfigHelpers)

set(EPCOMM_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/epcomm)

# Library: libepcomm.so.0.1.0, the libepcomm.so.0 SONAME link and the libepcomm.so
# development link.
install(TARGETS epcomm EXPORT epcommTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

# Headers: every runtime/include/epcomm/*.hpp (not version.hpp.in) and the
# generated version.hpp, all into include/epcomm/.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/runtime/include/epcomm/
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/epcomm
        FILES_MATCHING PATTERN "*.hpp")
install(FILES ${PROJECT_BINARY_DIR}/runtime/include/epcomm/version.hpp
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/epcomm)

# The CUDA codecs (kernels/cuda), when built: libepcomm_cuda_kernels.a and the CPU
# codec archive it calls (libepcomm_kernels.a, with libepcomm_core.a under it:
# formats, types, error names), as epcomm::cuda_kernels, with
# epcomm_kernels/cuda_codec.hpp. Static, like in the build tree; the caller links
# CUDA::cudart (epcommConfig.cmake finds the CUDA toolkit) and Highway (-lhwy).
if(TARGET epcomm_cuda_kernels)
  set_target_properties(epcomm_kernels PROPERTIES EXPORT_NAME kernels)
  set_target_properties(epcomm_cuda_kernels PROPERTIES EXPORT_NAME cuda_kernels)
  set_target_properties(epcomm_core PROPERTIES EXPORT_NAME core)
  # An export set of its own, installed only: the build tree's package (export()
  # below) cannot name the archives' build-only links (epcomm_warnings).
  install(TARGETS epcomm_cuda_kernels epcomm_kernels epcomm_core EXPORT epcommCudaTargets
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
          INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
  install(FILES ${PROJECT_SOURCE_DIR}/kernels/include/epcomm_kernels/cuda_codec.hpp
          DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/epcomm_kernels)
  install(EXPORT epcommCudaTargets NAMESPACE epcomm:: DESTINATION ${EPCOMM_CMAKE_DIR})
endif()

# CMake package.
install(EXPORT epcommTargets NAMESPACE epcomm:: DESTINATION ${EPCOMM_CMAKE_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/epcommConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/epcommConfig.cmake
                              INSTALL_DESTINATION ${EPCOMM_CMAKE_DIR})
# While at 0.x every minor release may break the API: 0.1 accepts 0.1.z only.
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(epcomm_compatibility SameMinorVersion)
else()
  set(epcomm_compatibility SameMajorVersion)
endif()
write_basic_package_version_file(${PROJECT_BINARY_DIR}/epcommConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY ${epcomm_compatibility})
install(FILES ${PROJECT_BINARY_DIR}/epcommConfig.cmake
              ${PROJECT_BINARY_DIR}/epcommConfigVersion.cmake
        DESTINATION ${EPCOMM_CMAKE_DIR})
# The same package straight from the build tree (-Depcomm_DIR=<build>), no install.
export(EXPORT epcommTargets NAMESPACE epcomm:: FILE ${PROJECT_BINARY_DIR}/epcommTargets.cmake)

# pkg-config. Requires: the MPI module of the MPI that CMake found (Debian's Open MPI
# ships ompi-c.pc, MPICH mpich.pc); override with -DEPCOMM_PKGCONFIG_MPI=<module>.
if(NOT DEFINED CACHE{EPCOMM_PKGCONFIG_MPI})
  set(_epcomm_pc_mpi ompi-c)
  find_program(EPCOMM_PKG_CONFIG_EXECUTABLE NAMES pkg-config pkgconf)
  mark_as_advanced(EPCOMM_PKG_CONFIG_EXECUTABLE)
  if(EPCOMM_PKG_CONFIG_EXECUTABLE)
    foreach(_m ompi-c mpich mpi-c mpi)
      execute_process(COMMAND ${EPCOMM_PKG_CONFIG_EXECUTABLE} --exists ${_m}
                      RESULT_VARIABLE _rc OUTPUT_QUIET ERROR_QUIET)
      if(_rc EQUAL 0)
        set(_epcomm_pc_mpi ${_m})
        break()
      endif()
    endforeach()
  endif()
  set(EPCOMM_PKGCONFIG_MPI ${_epcomm_pc_mpi} CACHE STRING "pkg-config module epcomm.pc requires for MPI")
endif()
# prefix is computed from the .pc file's own location, so `cmake --install --prefix`
# to any directory gives a working file; the ../ count follows CMAKE_INSTALL_LIBDIR
# (lib/ or lib/x86_64-linux-gnu/).
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(EPCOMM_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  file(RELATIVE_PATH _epcomm_pc_up "/_p/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/_p")
  string(REGEX REPLACE "/$" "" _epcomm_pc_up "${_epcomm_pc_up}")
  set(EPCOMM_PC_PREFIX "\${pcfiledir}/${_epcomm_pc_up}")
endif()
foreach(_d LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${_d}}")
    set(EPCOMM_PC_${_d} "${CMAKE_INSTALL_${_d}}")
  else()
    set(EPCOMM_PC_${_d} "\${prefix}/${CMAKE_INSTALL_${_d}}")
  endif()
endforeach()
configure_file(${PROJECT_SOURCE_DIR}/cmake/epcomm.pc.in ${PROJECT_BINARY_DIR}/epcomm.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/epcomm.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
