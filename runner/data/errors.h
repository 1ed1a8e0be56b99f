// Data errors: a bad input file, shard, manifest or tokenizer. Each names the file and, where it helps,
// the line or byte offset. DataError is a config::ConfigException, so a command that meets one before
// its work starts exits with code 2 (PRODUCT.md §2) without any extra handling.
#pragma once

#include <cstdint>
#include <string>

#include "runner/config/errors.h"

namespace l3lab::data {

class DataError : public config::ConfigException {
public:
    // `file: message`
    DataError(const std::string& file, const std::string& message);
    // `file:line: message` (line is 1-based)
    DataError(const std::string& file, int line, const std::string& message);

    // `file: byte offset 1,024: message`
    static DataError at_offset(const std::string& file, uint64_t offset, const std::string& message);
};

}  // namespace l3lab::data
