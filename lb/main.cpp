#include "lb/cli.hpp"

int main(int argc, char** argv) { return apilb::lb::run_cli(argc, argv); }
