// What the CPU can do, from the kernel's /proc/cpuinfo (torch-free: the checks that run before libtorch
// loads use it).
#pragma once

#include <string>

namespace l3lab::util {

// Whether the CPU has bfloat16 matrix instructions that oneDNN uses for bfloat16 matmuls: AVX512-BF16
// (flag avx512_bf16) or AMX (amx_bf16). `flags` gets the matching flags found ("" when none).
// $L3LAB_CPUINFO names another file to read instead of /proc/cpuinfo (tests).
bool cpu_has_bf16(std::string* flags = nullptr);

// "" when cpu_has_bf16(); else why `precision: bf16` cannot train on this CPU.
std::string cpu_bf16_problem();

}  // namespace l3lab::util
