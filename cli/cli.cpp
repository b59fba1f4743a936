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

// Also the man page's text: help2man makes apiserver-lb(8) from it (packaging/CMakeLists.txt), so
// keep its shape: "Usage:"/"or:" lines, then a paragraph, then sections of "  NAME  text" lines.
constexpr std::string_view kUsage =
    R"(Usage: apiserver-lb run [--config FILE] [--listen ADDR]... [--target ADDR]... [--first-master ADDR] [--admin ADDR] [--log-level LEVEL]
  or:  apiserver-lb check-config [--config FILE]
  or:  apiserver-lb targets list|add ADDR|remove ADDR|drain ADDR|set ADDR... [--file FILE]
  or:  apiserver-lb status [--admin ADDR]
  or:  apiserver-lb check-san --server HOST:PORT --address HOST[:PORT] [--ca FILE]
  or:  apiserver-lb upgrade [--config FILE] [--socket PATH] [--binary PATH]
  or:  apiserver-lb version
One stable host:port in front of every master's kube-apiserver: a TCP relay with TLS untouched,
active health checks, a live target feed and a read-only admin API.

Commands:
  run                    relay clients to healthy targets; SIGHUP reloads, SIGTERM drains and exits
  check-config           validate a config file: exit 0, or 1 with file:line: field: why
  targets                list or edit the targets file atomically (add, remove, drain, set)
  status                 the targets table from the admin API's /status: exit 0 ready, 1 not
  check-san              whether an apiserver's certificate names the balancer's address
  upgrade                start the installed binary and hand it the listening sockets: no client
                         connection is refused or cut; the old process drains and exits 0
  version                print the version

Options:
  --config FILE          config file (default /etc/apiserver-lb/config.yaml, optional for run)
  --listen ADDR          address to accept clients on; repeat for more (run)
  --target ADDR          an apiserver; repeat for more (run)
  --first-master ADDR    the target to use while none is configured (run)
  --admin ADDR           admin API address, "" for none (run); the one to ask (status)
  --log-level LEVEL      trace, debug, info, warn, error, critical or off (run)
  --file FILE            the targets file (targets; default: the config's targets_file)
  --server HOST:PORT     the apiserver whose certificate to read (check-san)
  --address HOST[:PORT]  the balancer's address the certificate must name (check-san)
  --ca FILE              verify the apiserver's certificate against this CA (check-san)
  --socket PATH          the running process's upgrade socket (upgrade; default: upgrade.socket)
  --binary PATH          the binary to start (upgrade; default: the one running, as installed now)

Flags override the config file. Addresses are host:port, IPv6 as [::1]:6443; a target without a
port means :6443.
)";

int dispatch(std::string_view command, std::span<char*> args) {
  if (command == "run") return run(args);
  if (command == "check-config") return check_config(args);
  if (command == "targets") return targets(args);
  if (command == "status") return status(args);
  if (command == "check-san") return check_san(args);
  if (command == "upgrade") return upgrade(args);
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
