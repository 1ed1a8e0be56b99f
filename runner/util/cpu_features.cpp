#include "runner/util/cpu_features.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace l3lab::util {

bool cpu_has_bf16(std::string* flags) {
    const char* path = std::getenv("L3LAB_CPUINFO");
    std::ifstream in(path && *path ? path : "/proc/cpuinfo");
    std::string line, found;
    while (std::getline(in, line)) {
        if (line.rfind("flags", 0) != 0) continue;  // "flags\t\t: fpu vme ..." (the first CPU's is enough)
        std::istringstream words(line.substr(line.find(':') + 1));
        for (std::string w; words >> w;)
            if (w == "avx512_bf16" || w == "amx_bf16") found += (found.empty() ? "" : " ") + w;
        break;
    }
    if (flags) *flags = found;
    return !found.empty();
}

std::string cpu_bf16_problem() {
    if (cpu_has_bf16()) return "";
    return "bf16 on the CPU needs AVX512-BF16 or AMX (cpuinfo flags avx512_bf16, amx_bf16), and this CPU has neither "
           "(oneDNN would emulate bfloat16, slower than float32); use precision: auto (float32 on the CPU)";
}

}  // namespace l3lab::util
