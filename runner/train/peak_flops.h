// Peak dense bf16 FLOP/s by accelerator name, for MFU (the reference's table, nanochat common.py).
#pragma once

#include <string>

namespace l3lab::train {

// 0 when unknown (a CPU, an unlisted GPU): MFU is then reported as 0, as the reference does on CPU.
double peak_flops_for(const std::string& device_name);

}  // namespace l3lab::train
