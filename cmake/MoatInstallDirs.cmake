# Install directories relative to one another, so that an installed tree works
# wherever it is moved: binaries find libmoat through an $ORIGIN RUNPATH,
# libmoat finds moatd and moat-enclave-host from its own directory, and the
# pkg-config files find the prefix from ${pcfiledir}.
function(moat_relative_dir out from to)
  file(RELATIVE_PATH rel "${from}" "${to}")
  if(rel STREQUAL "")
    set(rel ".")
  endif()
  set(${out} "${rel}" PARENT_SCOPE)
endfunction()

moat_relative_dir(MOAT_BINDIR_TO_LIBDIR ${CMAKE_INSTALL_FULL_BINDIR} ${CMAKE_INSTALL_FULL_LIBDIR})
moat_relative_dir(MOAT_LIBEXECDIR_TO_LIBDIR ${CMAKE_INSTALL_FULL_LIBEXECDIR} ${CMAKE_INSTALL_FULL_LIBDIR})
moat_relative_dir(MOAT_LIBDIR_TO_LIBEXECDIR ${CMAKE_INSTALL_FULL_LIBDIR} ${CMAKE_INSTALL_FULL_LIBEXECDIR})
moat_relative_dir(MOAT_LIBDIR_TO_BINDIR ${CMAKE_INSTALL_FULL_LIBDIR} ${CMAKE_INSTALL_FULL_BINDIR})
moat_relative_dir(MOAT_PCDIR_TO_PREFIX ${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig ${CMAKE_INSTALL_PREFIX})
