# `kiln generate` carries its guest and its default model inside the kiln
# binary, so it works from any folder without downloads: the LLM guest
# (guests/llm -> llm.wasm) and the files of the default model folder.
# The default model is models/tiny (tools/train_tiny.py); until that exists
# the tiny reference model tests/data/models/mha-tied stands in.
include(${CMAKE_SOURCE_DIR}/cmake/embed_blobs.cmake)
if(TARGET kiln)
  kiln_embed_blobs(kiln ${CMAKE_BINARY_DIR}/kiln_llm_guest.c kiln_llm_guest
                   ${KILN_GUEST_DIR}/llm.wasm)
  add_dependencies(kiln guest_llm)
  set(KILN_DEFAULT_MODEL_DIR ${CMAKE_SOURCE_DIR}/models/tiny)
  if(NOT EXISTS ${KILN_DEFAULT_MODEL_DIR}/config.json)
    set(KILN_DEFAULT_MODEL_DIR ${CMAKE_SOURCE_DIR}/tests/data/models/mha-tied)
  endif()
  set(KILN_DEFAULT_MODEL_FILES)
  foreach(f config.json generation_config.json tokenizer.json model.safetensors)
    if(EXISTS ${KILN_DEFAULT_MODEL_DIR}/${f})
      list(APPEND KILN_DEFAULT_MODEL_FILES ${KILN_DEFAULT_MODEL_DIR}/${f})
    endif()
  endforeach()
  get_filename_component(KILN_DEFAULT_MODEL_NAME ${KILN_DEFAULT_MODEL_DIR} NAME)
  kiln_embed_blobs(kiln ${CMAKE_BINARY_DIR}/kiln_llm_model.c kiln_llm_model
                   ${KILN_DEFAULT_MODEL_FILES})
  target_compile_definitions(kiln PRIVATE
    KILN_DEFAULT_MODEL_NAME="${KILN_DEFAULT_MODEL_NAME}")
endif()
# Re-run the configure step when models/ changes (models/tiny appearing).
if(EXISTS ${CMAKE_SOURCE_DIR}/models)
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/models)
endif()
