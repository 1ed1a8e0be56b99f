// Text documents from parquet files (nanochat's base_data/ shards: a `text` column, many row groups),
// read with Apache Arrow's C++ Parquet reader. Arrow's headers stay inside parquet.cpp.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace l3lab::data {

// False in a build without Arrow (no pyarrow wheel at configure time: no_parquet.cpp).
bool parquet_supported();

class ParquetTextFile {
public:
    // Opens `path` and finds the string column `column`. Throws DataError naming the file when it is not
    // a parquet file (truncated, corrupt), lacks the column (the message lists those it has) or the
    // column does not hold strings.
    ParquetTextFile(const std::string& path, const std::string& column);
    ~ParquetTextFile();
    ParquetTextFile(const ParquetTextFile&) = delete;
    ParquetTextFile& operator=(const ParquetTextFile&) = delete;

    int row_groups() const;
    int64_t rows() const;
    // The texts of row group `g`, in order. Throws DataError naming the file, row group and row for a
    // null text or text that is not valid UTF-8 (with its byte offset), and for unreadable data.
    std::vector<std::string> read_row_group(int g) const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace l3lab::data
