#include "cli/app.h"

#include <cstdio>
#include <exception>

namespace bitvit::cli {

void configure(CLI::App & app) {
    app.option_defaults()->always_capture_default();
    app.set_version_flag("--version", std::string("bitvit ") + BITVIT_VERSION);
    app.require_subcommand(1);
}

int run_app(CLI::App & app, const std::vector<Command> & commands, int argc, char ** argv, const char * program) {
    if (argc > 1 && argv[1][0] != '-') {
        bool known = false;
        std::string names;
        for (const auto & c : commands) {
            known = known || c.app->get_name() == argv[1];
            names += (names.empty() ? "" : ", ") + c.app->get_name();
        }
        if (!known) {
            std::fprintf(stderr, "%s: error: unknown command '%s' (commands: %s; %s --help)\n", program, argv[1], names.c_str(), program);
            return 2;
        }
    }
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError & e) {
        return app.exit(e);
    }
    try {
        for (const auto & c : commands) {
            if (*c.app) return c.run();
        }
    } catch (const std::exception & e) {
        std::fprintf(stderr, "%s: error: %s\n", program, e.what());
        return 1;
    }
    return 0;
}

}  // namespace bitvit::cli
