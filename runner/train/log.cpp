#include "runner/train/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <iostream>
#include <memory>

namespace l3lab::train {

static std::shared_ptr<spdlog::logger>& logger() {
    static std::shared_ptr<spdlog::logger> instance;
    return instance;
}

void open_log(const std::string& run_dir) {
    auto console = std::make_shared<spdlog::sinks::stdout_sink_mt>();
    console->set_pattern("%v");
    auto file = std::make_shared<spdlog::sinks::basic_file_sink_mt>(
        (std::filesystem::path(run_dir) / "train.log").string(), /*truncate=*/false);
    file->set_pattern("[%Y-%m-%d %H:%M:%S.%e] %v");
    logger() = std::make_shared<spdlog::logger>("train", spdlog::sinks_init_list{console, file});
    logger()->flush_on(spdlog::level::trace);
}

void close_log() {
    if (logger()) logger()->flush();
    logger().reset();
}

static int g_log_rank = 0;
static bool g_data_parallel = false;

void set_log_rank(int rank, int world_size) {
    g_log_rank = rank;
    g_data_parallel = world_size > 1;
}

void log_line(const std::string& line) {
    if (g_log_rank > 0) {
        if (line.rfind("error", 0) == 0) std::cerr << "[rank " << g_log_rank << "] " << line << std::endl;
        return;
    }
    if (logger()) logger()->info(line);
    else std::cout << line << std::endl;
}

void log_warning(const std::string& line) { log_line("warning: " + line); }

void log_error(const std::string& line) {
    if (g_log_rank > 0) {
        std::cerr << "[rank " << g_log_rank << "] " << line << std::endl;
        return;
    }
    log_line(g_data_parallel ? "[rank 0] " + line : line);
}

}  // namespace l3lab::train
