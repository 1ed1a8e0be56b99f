#include "runner/data/errors.h"

#include "runner/util/format.h"

namespace l3lab::data {

DataError::DataError(const std::string& file, const std::string& message)
    : config::ConfigException({config::ConfigError{config::Location{file, 0, 0}, "", message}}) {}

DataError::DataError(const std::string& file, int line, const std::string& message)
    : config::ConfigException({config::ConfigError{config::Location{file, line, 0}, "", message}}) {}

DataError DataError::at_offset(const std::string& file, uint64_t offset, const std::string& message) {
    return DataError(file, "byte offset " + util::group_digits(static_cast<int64_t>(offset)) + ": " + message);
}

}  // namespace l3lab::data
