# kiln_add_guest(NAME SOURCES... [FLAGS ...] [LDFLAGS ...])
# Builds NAME.wasm from C with clang --target=wasm32-wasi against Debian's
# wasi-libc, into ${CMAKE_BINARY_DIR}/guests.
set(KILN_GUEST_DIR ${CMAKE_BINARY_DIR}/guests)
file(MAKE_DIRECTORY ${KILN_GUEST_DIR})
function(kiln_add_guest name)
  cmake_parse_arguments(G "" "" "SOURCES;FLAGS;LDFLAGS" ${ARGN})
  set(out ${KILN_GUEST_DIR}/${name}.wasm)
  set(srcs)
  foreach(s ${G_SOURCES})
    list(APPEND srcs ${CMAKE_CURRENT_SOURCE_DIR}/${s})
  endforeach()
  add_custom_command(OUTPUT ${out}
    COMMAND ${WASM_CLANG} --target=wasm32-wasi --sysroot=/usr -O2
            -I${CMAKE_SOURCE_DIR}/sdk ${G_FLAGS} ${srcs} ${G_LDFLAGS} -o ${out}
    DEPENDS ${srcs}
    COMMENT "Building guest ${name}.wasm")
  add_custom_target(guest_${name} ALL DEPENDS ${out})
endfunction()
# kiln_add_wat(NAME FILE.wat): text-format guests (traps, imports).
function(kiln_add_wat name file)
  set(out ${KILN_GUEST_DIR}/${name}.wasm)
  add_custom_command(OUTPUT ${out}
    COMMAND ${WAT2WASM} --enable-multi-memory ${CMAKE_CURRENT_SOURCE_DIR}/${file} -o ${out}
    DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/${file}
    COMMENT "Assembling guest ${name}.wasm")
  add_custom_target(guest_${name} ALL DEPENDS ${out})
endfunction()
