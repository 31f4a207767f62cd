# Install rules: the shared library, public headers, a CMake package
# (find_package(epcomm) -> epcomm::epcomm) and a pkg-config file.
include(CMakePackageConfigHelpers)

install(TARGETS epcomm EXPORT epcommTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/runtime/include/epcomm
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.hpp")
install(FILES ${PROJECT_BINARY_DIR}/runtime/include/epcomm/version.hpp
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/epcomm)

set(EPCOMM_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/epcomm)
install(EXPORT epcommTargets NAMESPACE epcomm:: DESTINATION ${EPCOMM_CMAKE_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/epcommConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/epcommConfig.cmake
                              INSTALL_DESTINATION ${EPCOMM_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/epcommConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/epcommConfig.cmake ${PROJECT_BINARY_DIR}/epcommConfigVersion.cmake
        DESTINATION ${EPCOMM_CMAKE_DIR})

# pkg-config: Debian's Open MPI ships ompi-c.pc; callers get MPI flags through it.
configure_file(${PROJECT_SOURCE_DIR}/cmake/epcomm.pc.in ${PROJECT_BINARY_DIR}/epcomm.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/epcomm.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
