// l3lab: parse the command, dispatch, exit. Everything else lives in the l3lab_runner library.
#include <iostream>
#include <string>
#include <vector>

#include "runner/cli/cli.h"

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    return l3lab::cli::run(args, std::cout, std::cerr);
}
