// The dispatcher: usage, version, and one subcommand per file beside this one.
#include "cli/cli.hpp"

#include "cli/flags.hpp"

#include <cstdio>
#include <exception>
#include <span>
#include <string>
#include <string_view>

namespace apilb::cli {
namespace {

constexpr std::string_view kUsage = R"(usage:
  apiserver-lb run [--config FILE] [--listen ADDR]... [--target ADDR]... [--first-master ADDR]
                   [--admin ADDR] [--log-level LEVEL]
  apiserver-lb check-config [--config FILE]
  apiserver-lb targets list|add ADDR|remove ADDR|drain ADDR|set ADDR... [--file FILE]
  apiserver-lb status [--admin ADDR]               # targets table from the admin API's /status
  apiserver-lb check-san --server HOST:PORT --address HOST[:PORT] [--ca FILE]
  apiserver-lb version

Flags override the config file (default /etc/apiserver-lb/config.yaml, optional for `run`).
Addresses are host:port, IPv6 as [::1]:6443; a target without a port means :6443.
)";

int dispatch(std::string_view command, std::span<char*> args) {
  if (command == "run") return run(args);
  if (command == "check-config") return check_config(args);
  if (command == "targets") return targets(args);
  if (command == "status") return status(args);
  if (command == "check-san") return check_san(args);
  if (command == "version" || command == "--version") {
    std::printf("apiserver-lb %s\n", APILB_VERSION);
    return 0;
  }
  if (command == "help" || command == "--help" || command == "-h") {
    std::fputs(kUsage.data(), stdout);
    return 0;
  }
  throw UsageError{"unknown command \"" + std::string(command) + "\"", kUsage};
}

}  // namespace

std::string_view usage() { return kUsage; }

int run_cli(int argc, char** argv) {
  const std::span<char*> args(argv, static_cast<std::size_t>(argc));
  if (args.size() < 2) {
    std::fputs(kUsage.data(), stderr);
    return 2;
  }
  try {
    return dispatch(args[1], args.subspan(2));
  } catch (const UsageError& e) {
    std::fprintf(stderr, "apiserver-lb: %s\n%s", e.message.c_str(), std::string(e.usage).c_str());
    return 2;
  } catch (const Failure& e) {
    std::fprintf(stderr, "apiserver-lb: %s\n", e.message.c_str());
    return 1;
  } catch (const std::exception& e) {  // std::bad_alloc, a filesystem_error
    std::fprintf(stderr, "apiserver-lb: %s\n", e.what());
    return 1;
  }
}

}  // namespace apilb::cli
