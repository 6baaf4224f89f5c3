# What is installed where, and in which Debian package (CPack components, named
# as Debian splits a library):
#   libmoat0     libmoat.so.0 and the proc runner moat-enclave-host it starts
#   libmoat-dev  headers, libmoat.so, libmoat_enclave.a, pkg-config and CMake files, the .proto files
#   moatd        the target server, the moat command, the systemd unit, man pages
# Every installed program finds libmoat through an $ORIGIN-relative RUNPATH, so
# an installed tree works wherever it is (cmake --install --prefix DIR).

set_target_properties(moatd moat_cli PROPERTIES INSTALL_RPATH "$ORIGIN/${MOAT_BINDIR_TO_LIBDIR}")
set_target_properties(moat_enclave_host PROPERTIES INSTALL_RPATH "$ORIGIN/${MOAT_LIBEXECDIR_TO_LIBDIR}")
# RUNPATH (not RPATH): LD_LIBRARY_PATH still wins, as users expect.
foreach(t moatd moat_cli moat_enclave_host)
  set_property(TARGET ${t} APPEND PROPERTY LINK_OPTIONS -Wl,--enable-new-dtags)
endforeach()

install(TARGETS moat EXPORT MoatTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT libmoat0 NAMELINK_COMPONENT libmoat-dev)
install(TARGETS moat_enclave EXPORT MoatTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT libmoat-dev)
install(TARGETS moat_enclave_host RUNTIME DESTINATION ${CMAKE_INSTALL_LIBEXECDIR} COMPONENT libmoat0)
install(TARGETS moatd EXPORT MoatToolsTargets RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT moatd)
install(TARGETS moat_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT moatd)
# Typed calls: the protoc plugin goes with the headers (moat_generate() finds it next to the package).
install(TARGETS protoc-gen-moat RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT libmoat-dev)

install(DIRECTORY include/moat DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT libmoat-dev)
foreach(p moat/v1/frame.proto moat/v1/target.proto moat/v1/options.proto grpc/health/v1/health.proto)
  get_filename_component(d ${p} DIRECTORY)
  install(FILES proto/${p} DESTINATION ${CMAKE_INSTALL_DATADIR}/moat/proto/${d} COMPONENT libmoat-dev)
endforeach()

set(MOAT_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/Moat)
install(EXPORT MoatTargets NAMESPACE Moat:: DESTINATION ${MOAT_CMAKE_DIR} COMPONENT libmoat-dev)
install(EXPORT MoatToolsTargets NAMESPACE Moat:: DESTINATION ${MOAT_CMAKE_DIR} COMPONENT moatd)
configure_package_config_file(cmake/MoatConfig.cmake.in ${PROJECT_BINARY_DIR}/MoatConfig.cmake
                              INSTALL_DESTINATION ${MOAT_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/MoatConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/MoatConfig.cmake ${PROJECT_BINARY_DIR}/MoatConfigVersion.cmake
              cmake/MoatEnclave.cmake cmake/MoatGenerate.cmake
        DESTINATION ${MOAT_CMAKE_DIR} COMPONENT libmoat-dev)

foreach(pc moat moat-enclave)
  configure_file(cmake/${pc}.pc.in ${PROJECT_BINARY_DIR}/${pc}.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/${pc}.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT libmoat-dev)
endforeach()

# moatd as a service: the systemd unit and the configuration file it names. For the /usr prefix
# of the Debian packages the file is /etc/moatd/moatd.conf; elsewhere it stays inside the prefix.
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(MOAT_CONF_DIR /etc/moatd)
else()
  set(MOAT_CONF_DIR ${CMAKE_INSTALL_SYSCONFDIR}/moatd)
endif()
if(IS_ABSOLUTE ${MOAT_CONF_DIR})
  set(MOAT_CONF_FILE ${MOAT_CONF_DIR}/moatd.conf)
else()
  set(MOAT_CONF_FILE ${CMAKE_INSTALL_PREFIX}/${MOAT_CONF_DIR}/moatd.conf)
endif()
configure_file(packaging/moatd.service.in ${PROJECT_BINARY_DIR}/moatd.service @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/moatd.service DESTINATION lib/systemd/system COMPONENT moatd)
install(FILES packaging/moatd.conf DESTINATION ${MOAT_CONF_DIR} COMPONENT moatd)

# moatd(8) and moat(1), generated from the programs' --help (help2man) plus packaging/man/*.h2m.
find_program(MOAT_HELP2MAN help2man)
if(MOAT_HELP2MAN)
  set(MOAT_MAN_DIR ${PROJECT_BINARY_DIR}/man)
  set(man_pages)
  foreach(page moatd:8:moatd: moat_cli:1:moat:run\;measure)
    string(REPLACE ":" ";" parts "${page}")
    list(GET parts 0 target)
    list(GET parts 1 section)
    list(GET parts 2 name)
    list(SUBLIST parts 3 -1 subs)
    string(REPLACE ";" "\\;" subs "${subs}")
    add_custom_command(
      OUTPUT ${MOAT_MAN_DIR}/${name}.${section}.gz
      COMMAND ${CMAKE_COMMAND} -DHELP2MAN=${MOAT_HELP2MAN} -DPROGRAM=$<TARGET_FILE:${target}> -DSECTION=${section}
              -DINCLUDE=${PROJECT_SOURCE_DIR}/packaging/man/${name}.h2m -DOUT=${MOAT_MAN_DIR}/${name}.${section}.gz
              "-DSUBCOMMANDS=${subs}" -P ${PROJECT_SOURCE_DIR}/cmake/MoatMan.cmake
      DEPENDS ${target} ${PROJECT_SOURCE_DIR}/packaging/man/${name}.h2m ${PROJECT_SOURCE_DIR}/cmake/MoatMan.cmake
      COMMENT "help2man ${name}(${section})")
    list(APPEND man_pages ${MOAT_MAN_DIR}/${name}.${section}.gz)
    install(FILES ${MOAT_MAN_DIR}/${name}.${section}.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section}
            COMPONENT moatd)
  endforeach()
  add_custom_target(man ALL DEPENDS ${man_pages})
else()
  message(STATUS "help2man not found: no man pages (scripts/deps.sh installs it)")
endif()

include(cmake/MoatPackage.cmake)
