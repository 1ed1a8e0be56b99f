// A table as HDF5: one group holding one 1-D dataset per column (float64, int64 or variable-length UTF-8
// strings), in column order (creation order is tracked), plus string attributes on the group. Read with
// h5py (`{k: f["cells"][k][()] for k in f["cells"]}`) or pandas. Used by `l3lab sweep collect`.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace l3lab::metrics {

struct TableColumn {
    std::string name;
    std::variant<std::vector<double>, std::vector<int64_t>, std::vector<std::string>> values;
};

// Writes `path` whole (a temporary sibling renamed over it: readers see the old file or the new one).
// Throws MetricsError.
void write_table(const std::filesystem::path& path, const std::string& group, const std::vector<TableColumn>& columns,
                 const std::vector<std::pair<std::string, std::string>>& attributes);

}  // namespace l3lab::metrics
