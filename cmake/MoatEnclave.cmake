# moat_add_enclave(NAME SOURCES...): build the enclave image NAME.so from C or
# C++ sources. The image is a MODULE library with no "lib" prefix, linked with
# the enclave runtime (whose usage requirements keep the runtime's symbols
# private to the image and refuse undefined symbols). The image is a normal
# CMake target: add sources, definitions and libraries to it as to any other.
#
# MOAT_ENCLAVE_LIBRARY names the runtime target (Moat::moat_enclave when this
# file comes from the installed package); MOAT_ENCLAVE_OUTPUT_DIRECTORY, when
# set, is where the images are written.
if(NOT DEFINED MOAT_ENCLAVE_LIBRARY)
  set(MOAT_ENCLAVE_LIBRARY Moat::moat_enclave)
endif()

function(moat_add_enclave name)
  add_library(${name} MODULE ${ARGN})
  target_link_libraries(${name} PRIVATE ${MOAT_ENCLAVE_LIBRARY})
  set_target_properties(${name} PROPERTIES PREFIX "")
  if(MOAT_ENCLAVE_OUTPUT_DIRECTORY)
    set_target_properties(${name} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${MOAT_ENCLAVE_OUTPUT_DIRECTORY})
  endif()
endfunction()
