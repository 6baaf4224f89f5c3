# Debian packages with CPack: cpack -G DEB in a build configured with
# -DCMAKE_INSTALL_PREFIX=/usr (scripts/package.sh does both). One package per
# install component (cmake/MoatInstall.cmake says which file goes where).
set(CPACK_PACKAGE_NAME moat)
set(CPACK_PACKAGE_VENDOR "Moat")
set(CPACK_PACKAGE_CONTACT "Moat maintainers <moat@localhost>")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_GENERATOR DEB)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL libmoat0 libmoat-dev moatd)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "")
# Dependencies on Debian's libraries come from the binaries (dpkg-shlibdeps);
# the ones between Moat's own packages are exact versions.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS_PRIVATE_DIRS ${PROJECT_BINARY_DIR})
set(CPACK_DEBIAN_ENABLE_COMPONENT_DEPENDS ON)

set(CPACK_DEBIAN_LIBMOAT0_PACKAGE_NAME libmoat0)
set(CPACK_DEBIAN_LIBMOAT0_PACKAGE_SECTION libs)
set(CPACK_DEBIAN_LIBMOAT0_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_LIBMOAT0_DESCRIPTION
    "Moat enclave runtime: host library\nlibmoat loads enclaves (shared objects with message-only entry points)\nand calls them in process (sim), in a sandboxed child process (proc,\nwith the runner moat-enclave-host) or on a moatd target server over gRPC.")

set(CPACK_DEBIAN_LIBMOAT-DEV_PACKAGE_NAME libmoat-dev)
set(CPACK_DEBIAN_LIBMOAT-DEV_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_LIBMOAT-DEV_PACKAGE_RECOMMENDS "pkg-config")
set(CPACK_COMPONENT_LIBMOAT-DEV_DEPENDS libmoat0)
set(CPACK_DEBIAN_LIBMOAT-DEV_DESCRIPTION
    "Moat enclave runtime: development files\nHeaders, libmoat.so, the enclave runtime libmoat_enclave.a, pkg-config\nmodules moat and moat-enclave, the CMake package Moat (moat_add_enclave)\nand the published .proto files.")

set(CPACK_DEBIAN_MOATD_PACKAGE_NAME moatd)
set(CPACK_DEBIAN_MOATD_PACKAGE_SECTION net)
set(CPACK_COMPONENT_MOATD_DEPENDS libmoat0)
set(CPACK_DEBIAN_MOATD_DESCRIPTION
    "Moat target server and command-line tool\nmoatd hosts Moat enclaves for remote hosts (gRPC service moat.v1.Target),\neach in a sandboxed process; a systemd unit runs it as a service. The\nmoat command runs and measures enclave images.")

# The unit comes with the package, neither enabled nor started; the configuration file is the
# admin's (a conffile dpkg keeps across upgrades).
file(WRITE ${PROJECT_BINARY_DIR}/packaging/conffiles "${MOAT_CONF_FILE}\n")
set(CPACK_DEBIAN_MOATD_PACKAGE_CONTROL_EXTRA
    ${PROJECT_BINARY_DIR}/packaging/conffiles ${PROJECT_SOURCE_DIR}/packaging/debian/postinst
    ${PROJECT_SOURCE_DIR}/packaging/debian/prerm ${PROJECT_SOURCE_DIR}/packaging/debian/postrm)
set(CPACK_DEBIAN_MOATD_PACKAGE_CONTROL_STRICT_PERMISSION ON)

include(CPack)
