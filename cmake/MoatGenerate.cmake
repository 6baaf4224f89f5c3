# moat_generate(): typed Moat calls from a .proto (docs/TYPED-CALLS.md).
#
#   moat_generate(<target> [HOST|ENCLAVE] [IMPORT_DIRS dir...] [OUT_DIR dir] iface.proto...)
#
# Runs protoc with protobuf-c's generator (messages: iface.pb-c.c/.h) and
# protoc-gen-moat (calls: iface.moat.h, iface.moat.c for the host,
# iface.moat-enclave.c for the enclave), adds the side's sources to <target>,
# the output directory to its include path and libprotobuf-c to its links.
# The side is ENCLAVE for a MODULE library (an enclave image) and HOST
# otherwise, unless given. A .proto is named relative to the first of
# IMPORT_DIRS that holds it (default: its own directory); moat/v1/options.proto
# and google/protobuf/descriptor.proto are always importable.
#
# Self-contained: it works from Moat's own tree (the protoc-gen-moat target)
# and from an installed package (protoc-gen-moat next to the package's bin/,
# options.proto under share/moat/proto), so the package config can include it.
include_guard(GLOBAL)

set(_moat_generate_dir ${CMAKE_CURRENT_LIST_DIR})
find_program(MOAT_PROTOC protoc REQUIRED)
find_program(MOAT_PROTOC_GEN_C protoc-gen-c REQUIRED)
find_path(MOAT_GOOGLE_PROTO_DIR google/protobuf/descriptor.proto PATHS /usr/include /usr/local/include REQUIRED)
find_path(MOAT_OPTIONS_PROTO_DIR moat/v1/options.proto
          PATHS ${_moat_generate_dir}/../proto ${_moat_generate_dir}/../../../share/moat/proto
                ${_moat_generate_dir}/../../../../share/moat/proto
          NO_DEFAULT_PATH REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(MOAT_GEN_PROTOBUF_C REQUIRED IMPORTED_TARGET GLOBAL libprotobuf-c)

function(_moat_generate_plugin out_var dep_var)
  if(TARGET protoc-gen-moat)
    set(${out_var} $<TARGET_FILE:protoc-gen-moat> PARENT_SCOPE)
    set(${dep_var} protoc-gen-moat PARENT_SCOPE)
  else()
    # Installed: <prefix>/lib/cmake/Moat or <prefix>/lib/<multiarch>/cmake/Moat, next to <prefix>/bin.
    find_program(MOAT_PROTOC_GEN_MOAT protoc-gen-moat
                 HINTS ${_moat_generate_dir}/../../../bin ${_moat_generate_dir}/../../../../bin REQUIRED)
    set(${out_var} ${MOAT_PROTOC_GEN_MOAT} PARENT_SCOPE)
    set(${dep_var} ${MOAT_PROTOC_GEN_MOAT} PARENT_SCOPE)
  endif()
endfunction()

# The name of proto relative to the first import directory that holds it (into rel), and that directory.
function(_moat_generate_name proto dirs rel_var dir_var)
  foreach(d IN LISTS dirs)
    get_filename_component(d ${d} ABSOLUTE)
    file(RELATIVE_PATH rel ${d} ${proto})
    if(NOT rel MATCHES "^\\.\\./")
      set(${rel_var} ${rel} PARENT_SCOPE)
      set(${dir_var} ${d} PARENT_SCOPE)
      return()
    endif()
  endforeach()
  message(FATAL_ERROR "moat_generate: ${proto} is in none of the IMPORT_DIRS (${dirs})")
endfunction()

function(moat_generate target)
  cmake_parse_arguments(G "HOST;ENCLAVE" "OUT_DIR" "IMPORT_DIRS" ${ARGN})
  if(NOT G_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "moat_generate(${target}): no .proto given")
  endif()
  get_target_property(type ${target} TYPE)
  set(enclave ${G_ENCLAVE})
  if(NOT G_HOST AND NOT G_ENCLAVE AND type STREQUAL "MODULE_LIBRARY")
    set(enclave ON)
  endif()
  set(out ${G_OUT_DIR})
  if(NOT out)
    set(out ${CMAKE_CURRENT_BINARY_DIR}/${target}.moat)
  endif()
  file(MAKE_DIRECTORY ${out})
  _moat_generate_plugin(plugin plugin_dep)
  set(protoc ${MOAT_PROTOC} --plugin=protoc-gen-c=${MOAT_PROTOC_GEN_C} --plugin=protoc-gen-moat=${plugin})

  # The generated headers include those of the imports: options.proto's and descriptor.proto's.
  set(common ${out}/moat/v1/options.pb-c.h ${out}/google/protobuf/descriptor.pb-c.h)
  add_custom_command(
    OUTPUT ${common}
    COMMAND ${MOAT_PROTOC} --plugin=protoc-gen-c=${MOAT_PROTOC_GEN_C} --c_out=${out}
            -I${MOAT_OPTIONS_PROTO_DIR} -I${MOAT_GOOGLE_PROTO_DIR}
            moat/v1/options.proto google/protobuf/descriptor.proto
    DEPENDS ${MOAT_OPTIONS_PROTO_DIR}/moat/v1/options.proto
    COMMENT "protoc: moat/v1/options.proto for ${target}")
  set(sources)
  foreach(p IN LISTS G_UNPARSED_ARGUMENTS)
    get_filename_component(abs ${p} ABSOLUTE)
    get_filename_component(own ${abs} DIRECTORY)
    set(dirs ${G_IMPORT_DIRS})
    if(NOT dirs)
      set(dirs ${own})
    endif()
    _moat_generate_name(${abs} "${dirs}" rel dir)
    string(REGEX REPLACE "\\.proto$" "" stem ${rel})
    set(includes)
    foreach(d IN LISTS dirs)
      get_filename_component(d ${d} ABSOLUTE)
      list(APPEND includes -I${d})
    endforeach()
    set(outputs ${out}/${stem}.pb-c.c ${out}/${stem}.pb-c.h ${out}/${stem}.moat.h ${out}/${stem}.moat.c
                ${out}/${stem}.moat-enclave.c)
    add_custom_command(
      OUTPUT ${outputs}
      COMMAND ${protoc} --c_out=${out} --moat_out=${out} ${includes} -I${MOAT_OPTIONS_PROTO_DIR}
              -I${MOAT_GOOGLE_PROTO_DIR} ${rel}
      DEPENDS ${abs} ${plugin_dep} ${common}
      WORKING_DIRECTORY ${dir}
      COMMENT "protoc-gen-moat: ${rel} for ${target}")
    # protobuf-c's code is not ours to keep free of warnings.
    set_source_files_properties(${out}/${stem}.pb-c.c TARGET_DIRECTORY ${target} PROPERTIES COMPILE_OPTIONS -w)
    if(enclave)
      list(APPEND sources ${out}/${stem}.pb-c.c ${out}/${stem}.moat-enclave.c)
    else()
      list(APPEND sources ${out}/${stem}.pb-c.c ${out}/${stem}.moat.c)
    endif()
  endforeach()
  target_sources(${target} PRIVATE ${sources})
  target_include_directories(${target} PRIVATE ${out})
  target_link_libraries(${target} PRIVATE PkgConfig::MOAT_GEN_PROTOBUF_C)
endfunction()
