# Settings every executable that links libtorch needs:
#  - libstdc++ first in the dynamic lookup order: the torch wheel's libtorch.so and libtorch_cpu.so
#    export their own (statically linked) std::filesystem symbols, and when they are found first,
#    std::filesystem::remove_all() called from our code jumps to a null pointer.
#  - reuse of l3lab_torch_modules' precompiled header, which needs its code model (-fPIC, not -fPIE).
function(l3lab_torch_executable target)
  target_link_options(${target} PRIVATE "LINKER:--no-as-needed" "-lstdc++")
  set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE OFF)
  target_compile_options(${target} PRIVATE -fPIC)
  target_precompile_headers(${target} REUSE_FROM l3lab_torch_modules)
endfunction()
