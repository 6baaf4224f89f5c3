# Generate a man page from a program's --help with help2man (cmake -P):
#   -DHELP2MAN=... -DPROGRAM=... -DSECTION=1|8 -DINCLUDE=FILE.h2m -DOUT=FILE.gz [-DSUBCOMMANDS=a;b]
# Each subcommand's "PROGRAM SUB --help" text becomes a section of its own, verbatim.
cmake_minimum_required(VERSION 3.25)
get_filename_component(name ${PROGRAM} NAME)
set(work ${OUT}.d)
file(MAKE_DIRECTORY ${work})
set(include ${work}/${name}.h2m)
file(READ ${INCLUDE} text)
foreach(sub IN LISTS SUBCOMMANDS)
  execute_process(COMMAND ${PROGRAM} ${sub} --help OUTPUT_VARIABLE help RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${PROGRAM} ${sub} --help failed")
  endif()
  string(REPLACE "\\" "\\e" help "${help}")
  string(REGEX REPLACE "(^|\n)([.'])" "\\1\\\\&\\2" help "${help}")
  string(TOUPPER "${name} ${sub}" title)
  string(APPEND text "\n[${title}]\n.nf\n${help}.fi\n")
endforeach()
file(WRITE ${include} "${text}")
# The sanitizer builds' leak check must not fail --help.
set(ENV{ASAN_OPTIONS} detect_leaks=0)
execute_process(COMMAND ${HELP2MAN} --no-info --no-discard-stderr --section=${SECTION} --include=${include}
                        --output=${work}/${name}.${SECTION} ${PROGRAM}
                RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "help2man ${PROGRAM}: ${err}")
endif()
execute_process(COMMAND gzip -9nf ${work}/${name}.${SECTION} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "gzip ${work}/${name}.${SECTION}")
endif()
file(RENAME ${work}/${name}.${SECTION}.gz ${OUT})
