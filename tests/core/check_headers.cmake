cmake_minimum_required(VERSION 3.25)
# Compile each public header alone, and a small user of the macros, with
# strict flags: cmake -DCC=... -DCXX=... -DINCLUDE=... -DWORK=... -P check_headers.cmake
# CXX may be empty; when set, the headers are also compiled as C++ (-Wold-style-cast
# -Wconversion too: the macros must be clean in C++ users' builds), and so is the
# C++-only header moat/moat.hpp, with a user of every type in it.
set(flags -std=c11 -pedantic -Werror -Wall -Wextra -Wstrict-prototypes -Wmissing-prototypes -Wshadow)
set(cxxflags -std=c++11 -pedantic -Werror -Wall -Wextra -Wshadow -Wold-style-cast -Wconversion -Wsign-conversion)
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
	return o.version > 0 ? 0 : 1;
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

# The selectors in C++ arithmetic, as users write them.
try_compile_tu(use_selectors [=[
#include <moat/common.h>
uint64_t next_selector(uint64_t i);
uint64_t next_selector(uint64_t i)
{
	return MOAT_SELECTOR_USER + i + MOAT_SELECTOR_RUN - MOAT_SELECTOR_LOG;
}
]=])

function(try_compile_cxx name text)
  if(NOT CXX)
    return()
  endif()
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
endfunction()

try_compile_cxx(alone_moat_hpp "#include <moat/moat.hpp>\n")
try_compile_cxx(twice_moat_hpp "#include <moat/moat.hpp>\n#include <moat/moat.hpp>\n")
try_compile_cxx(use_moat_hpp [=[
#include <moat/moat.hpp>
#include <string>
#include <utility>
std::string use_cxx(const char *path);
std::string use_cxx(const char *path)
{
	try {
		moat::enclave e(path, "sim");
		moat::enclave moved(std::move(e));
		moat::message in, out;
		in.push("x").push(std::string("y")).push_u64(7).push("z", 1);
		moved.on_exit(MOAT_SELECTOR_USER + 1, [](const moat_msg *i, moat_msg *o) { return moat_msg_push(o, nullptr, moat_msg_count(i)); });
		moved.call(MOAT_SELECTOR_RUN, in, out);
		moat::message reply = moved.call(MOAT_SELECTOR_RUN, in);
		moat::item it = reply.item(0);
		moat_identity id = moved.identity();
		return out.str(0) + std::to_string(reply.size() + it.size + out.u64(1) + id.isolation);
	} catch (const moat::error &err) {
		return std::string(err.what()) + moat_origin_name(err.origin()) + std::to_string(err.code() + err.enclave_code());
	}
}
]=])

if(failed)
  message(FATAL_ERROR "some public headers do not compile alone with strict flags")
endif()
