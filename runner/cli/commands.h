// One function per command. Each parses its own options and returns an exit code; errors that are
// the user's (bad options, bad config) throw and are turned into exit code 2 by cli::run.
#pragma once

#include <boost/program_options/options_description.hpp>
#include <boost/program_options/variables_map.hpp>

#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace l3lab::cli {

struct Command {
    const char* name;
    const char* usage;    // arguments after the command name
    const char* summary;  // one line for `l3lab --help`
    int (*run)(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
};

// The implemented commands, in the order `l3lab --help` lists them.
const std::vector<Command>& commands();

int cmd_config(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
int cmd_plan(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
int cmd_train(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
int cmd_resume(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
int cmd_reproduce(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
int cmd_eval(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
int cmd_sample(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
int cmd_export(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
int cmd_data(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
int cmd_sweep(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

// Parses a command's `options` (--help is added) and its positional arguments. Returns false after
// printing "usage: l3lab <usage>", `about` and the options when --help is given.
bool parse_command(const std::vector<std::string>& args, boost::program_options::options_description options,
                   const std::string& usage, const std::string& about, boost::program_options::variables_map& vm,
                   std::vector<std::string>& positionals, std::ostream& out);

// A usage mistake: printed with the command's usage line, exit code 2.
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

}  // namespace l3lab::cli
