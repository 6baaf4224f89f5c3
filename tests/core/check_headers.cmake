cmake_minimum_required(VERSION 3.25)
# Compile each public header alone, and a small user of the macros, with
# strict flags: cmake -DCC=... -DCXX=... -DINCLUDE=... -DWORK=... -P check_headers.cmake
# CXX may be empty; when set, the headers are also compiled as C++.
set(flags -std=c11 -pedantic -Werror -Wall -Wextra -Wstrict-prototypes -Wmissing-prototypes -Wshadow)
set(cxxflags -std=c++11 -pedantic -Werror -Wall -Wextra -Wshadow)
set(headers moat/common.h moat/errors.h moat/msg.h moat/moat.h moat/enclave.h moat/sys/backend.h)
file(GLOB found RELATIVE ${INCLUDE} ${INCLUDE}/moat/*.h ${INCLUDE}/moat/sys/*.h)
foreach(h IN LISTS found)
  if(NOT h IN_LIST headers)
    list(APPEND headers ${h})
  endif()
endforeach()
file(MAKE_DIRECTORY ${WORK})
set(failed 0)

function(try_compile_tu name text)
  set(src ${WORK}/${name}.c)
  file(WRITE ${src} "${text}")
  execute_process(COMMAND ${CC} ${flags} -I${INCLUDE} -c ${src} -o ${WORK}/${name}.o
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message("FAIL (C): ${name}\n${out}")
    set(failed 1 PARENT_SCOPE)
  else()
    message("ok (C): ${name}")
  endif()
  if(CXX)
    set(srcxx ${WORK}/${name}.cc)
    file(WRITE ${srcxx} "${text}")
    execute_process(COMMAND ${CXX} ${cxxflags} -I${INCLUDE} -c ${srcxx} -o ${WORK}/${name}.cc.o
                    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
    if(NOT rc EQUAL 0)
      message("FAIL (C++): ${name}\n${out}")
      set(failed 1 PARENT_SCOPE)
    else()
      message("ok (C++): ${name}")
    endif()
  endif()
endfunction()

foreach(h IN LISTS headers)
  string(REPLACE "/" "_" name ${h})
  string(REPLACE ".h" "" name ${name})
  # Each header alone, then twice (include guards).
  try_compile_tu(alone_${name} "#include <${h}>\n")
  try_compile_tu(twice_${name} "#include <${h}>\n#include <${h}>\n")
endforeach()

# The macros users write: options initialiser and the enclave definition.
try_compile_tu(use_host [=[
#include <moat/moat.h>
int use_host(void);
int use_host(void)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	return (int)o.version;
}
]=])
try_compile_tu(use_enclave [=[
#include <moat/enclave.h>
static int init(const void *config, size_t len)
{
	(void)config;
	(void)len;
	return 0;
}
MOAT_ENCLAVE(init)
]=])
try_compile_tu(use_both [=[
#include <moat/enclave.h>
#include <moat/moat.h>
#include <moat/sys/backend.h>
]=])

if(failed)
  message(FATAL_ERROR "some public headers do not compile alone with strict flags")
endif()
