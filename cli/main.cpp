#include "cli/cli.hpp"

int main(int argc, char** argv) { return apilb::cli::run_cli(argc, argv); }
