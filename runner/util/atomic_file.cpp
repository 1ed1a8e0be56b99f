#include "runner/util/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "runner/util/stop.h"

namespace l3lab::util {

static std::runtime_error failure(const std::string& path, const std::string& what) {
    return std::runtime_error(path + ": " + what + ": " + std::strerror(errno));
}

void fsync_directory(const std::string& dir) {
    int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) throw failure(dir, "cannot open directory");
    const int rc = ::fsync(fd);
    ::close(fd);
    if (rc != 0) throw failure(dir, "cannot fsync directory");
}

void write_file_atomic(const std::string& path, std::string_view content) {
    write_file_atomic(path, std::vector<std::string_view>{content});
}

void write_file_atomic(const std::string& path, const std::vector<std::string_view>& pieces) {
    const CriticalSection whole;  // a second stop signal waits for the rename: no temporary is left behind
    const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw failure(tmp, "cannot create");
    for (std::string_view content : pieces) {
        size_t done = 0;
        while (done < content.size()) {
            ssize_t n = ::write(fd, content.data() + done, content.size() - done);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                auto error = failure(tmp, "write failed");
                ::close(fd);
                ::unlink(tmp.c_str());
                throw error;
            }
            done += static_cast<size_t>(n);
        }
    }
    if (::fsync(fd) != 0 || ::close(fd) != 0) {
        auto error = failure(tmp, "fsync failed");
        ::unlink(tmp.c_str());
        throw error;
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        auto error = failure(path, "rename failed");
        ::unlink(tmp.c_str());
        throw error;
    }
    fsync_directory(std::filesystem::path(path).parent_path().string());
}

}  // namespace l3lab::util
