#include "runner/cli/cli.h"

#include <boost/program_options.hpp>

#include "runner/cli/commands.h"
#include "runner/config/errors.h"
#include "runner/dist/launch_env.h"
#include "runner/version.h"

namespace po = boost::program_options;

namespace l3lab::cli {

static void print_help(std::ostream& out) {
    out << "l3lab " << version::kVersion
        << " - experiment runner for nanochat-style GPT pretraining with L3 layers\n\n"
           "usage: l3lab <command> [arguments] [--help]\n"
           "       l3lab --version\n\n"
           "commands:\n";
    size_t width = 0;
    for (const auto& c : commands()) width = std::max(width, std::string(c.name).size());
    for (const auto& c : commands())
        out << "  " << c.name << std::string(width - std::string(c.name).size() + 3, ' ') << c.summary << "\n";
    out << "\nExit codes: 0 success, 1 runtime failure, 2 usage or config error, 3 interrupted after a checkpoint.\n"
           "Run 'l3lab <command> --help' for a command's options.\n";
}

// In a data-parallel launch every rank prints its own errors: "[rank R] " tells them apart.
static std::string rank_prefix() {
    try {
        const dist::LaunchEnv env = dist::read_launch_env();
        return env.distributed() ? "[rank " + std::to_string(env.rank) + "] " : "";
    } catch (const std::exception&) {
        return "";  // an inconsistent launcher environment is itself the error being reported
    }
}

int run(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
    try {
        if (args.empty()) {
            print_help(err);
            return kUsageOrConfigError;
        }
        const std::string& first = args.front();
        if (first == "--help" || first == "-h" || first == "help") {
            print_help(out);
            return kOk;
        }
        if (first == "--version" || first == "-V") {
            out << version::describe();
            return kOk;
        }
        for (const auto& c : commands()) {
            if (first != c.name) continue;
            std::vector<std::string> rest(args.begin() + 1, args.end());
            try {
                return c.run(rest, out, err);
            } catch (const UsageError& e) {
                err << "l3lab " << c.name << ": " << e.what() << "\nusage: l3lab " << c.name << " " << c.usage
                    << "\n(see 'l3lab " << c.name << " --help')\n";
                return kUsageOrConfigError;
            } catch (const po::error& e) {
                err << "l3lab " << c.name << ": " << e.what() << "\nusage: l3lab " << c.name << " " << c.usage
                    << "\n(see 'l3lab " << c.name << " --help')\n";
                return kUsageOrConfigError;
            }
        }
        err << "l3lab: unknown command '" << first << "'\n\n";
        print_help(err);
        return kUsageOrConfigError;
    } catch (const config::ConfigException& e) {
        const auto& errors = e.errors();
        const std::string rank = rank_prefix();
        for (const auto& error : errors) err << rank << error.str() << "\n";
        err << rank << errors.size() << (errors.size() == 1 ? " error" : " errors") << " in the configuration; nothing was run.\n";
        return kUsageOrConfigError;
    } catch (const std::exception& e) {
        err << rank_prefix() << "l3lab: error: " << e.what() << "\n";
        return kRuntimeFailure;
    }
}

}  // namespace l3lab::cli
