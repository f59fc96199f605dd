// What both command-line programs share: every option's default shown in --help, --version, an
// unknown command named with the list of known ones, and one error format. Each subcommand is
// registered by a function that binds its flags and returns the action to run.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace bitvit::cli {

struct Command {
    CLI::App * app;
    std::function<int()> run;
};

// Shows defaults in every option's help and adds --version.
void configure(CLI::App & app);

// Parses argv, runs the chosen command and reports errors as "<program>: error: <message>", exit 1.
// An unknown command is named with the known ones (exit 2), as are CLI11's own parse errors.
int run_app(CLI::App & app, const std::vector<Command> & commands, int argc, char ** argv, const char * program);

}  // namespace bitvit::cli
