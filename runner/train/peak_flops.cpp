#include "runner/train/peak_flops.h"

#include <algorithm>
#include <cctype>
#include <utility>
#include <vector>

namespace l3lab::train {

double peak_flops_for(const std::string& device_name) {
    std::string name = device_name;
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    // More specific patterns first; every pattern word must occur in the name.
    static const std::vector<std::pair<std::vector<std::string>, double>> table = {
        {{"gb200"}, 2.5e15},       {{"grace blackwell"}, 2.5e15}, {{"b200"}, 2.25e15},    {{"b100"}, 1.8e15},
        {{"h200", "nvl"}, 836e12}, {{"h200", "pcie"}, 836e12},    {{"h200"}, 989e12},     {{"h100", "nvl"}, 835e12},
        {{"h100", "pcie"}, 756e12}, {{"h100"}, 989e12},           {{"h800", "nvl"}, 989e12}, {{"h800"}, 756e12},
        {{"a100"}, 312e12},        {{"a800"}, 312e12},            {{"a40"}, 149.7e12},    {{"a30"}, 165e12},
        {{"l40s"}, 362e12},        {{"l40-s"}, 362e12},           {{"l40 s"}, 362e12},    {{"l4"}, 121e12},
        {{"mi355"}, 2.5e15},       {{"mi325"}, 1.3074e15},        {{"mi300x"}, 1.3074e15}, {{"mi300a"}, 980.6e12},
        {{"mi250x"}, 383e12},      {{"mi250"}, 362.1e12},         {{"5090"}, 209.5e12},   {{"4090"}, 165.2e12},
        {{"3090"}, 71e12},
    };
    for (const auto& [words, flops] : table)
        if (std::all_of(words.begin(), words.end(), [&](const std::string& w) { return name.find(w) != std::string::npos; }))
            return flops;
    return 0.0;
}

}  // namespace l3lab::train
