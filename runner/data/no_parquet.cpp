// Built in place of parquet.cpp when CMake found no pyarrow wheel (runner/data/CMakeLists.txt): every
// parquet input is refused, naming the file and saying why.
#include "runner/data/parquet.h"

#include "runner/data/errors.h"

namespace l3lab::data {

struct ParquetTextFile::Impl {};

bool parquet_supported() { return false; }

ParquetTextFile::ParquetTextFile(const std::string& path, const std::string&) {
    throw DataError(path, "this l3lab was built without parquet input: CMake found no pyarrow wheel (its Arrow C++ "
                          "libraries) with the build's Python; run tools/bootstrap.sh and build again");
}

ParquetTextFile::~ParquetTextFile() = default;

int ParquetTextFile::row_groups() const { return 0; }

int64_t ParquetTextFile::rows() const { return 0; }

std::vector<std::string> ParquetTextFile::read_row_group(int) const { return {}; }

}  // namespace l3lab::data
