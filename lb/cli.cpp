#include "lb/cli.hpp"

#include "config/config.hpp"
#include "lb/admin.hpp"
#include "lb/check_san.hpp"
#include "lb/controller.hpp"
#include "lb/logging.hpp"
#include "lb/targets_command.hpp"

#include <spdlog/spdlog.h>

#include <cstdio>
#include <exception>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace apilb::lb {
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

struct UsageError {
  std::string message;
};

// Walks `--flag value` and `--flag=value` arguments.
class Flags {
 public:
  explicit Flags(std::span<char*> args) : args_(args) {}

  // The next flag name, or nullopt at the end.
  std::optional<std::string_view> next() {
    if (pos_ >= args_.size()) return std::nullopt;
    std::string_view arg = args_[pos_++];
    if (!arg.starts_with("--")) throw UsageError{"unexpected argument \"" + std::string(arg) + "\""};
    inline_value_.reset();
    if (const auto eq = arg.find('='); eq != std::string_view::npos) {
      inline_value_ = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    }
    flag_ = arg;
    return arg;
  }
  std::string_view value() {
    if (inline_value_) return *std::exchange(inline_value_, std::nullopt);
    if (pos_ >= args_.size()) throw UsageError{std::string(flag_) + " needs a value"};
    return args_[pos_++];
  }
  // A target: a name or an IP, port 6443 unless given.
  config::Address target() {
    const std::string_view text = value();
    std::string why;
    return checked(text, config::parse_address(text, &why), why);
  }
  // A local address to bind: an IP literal and a port.
  config::Address local(std::string_view text) {
    std::string why;
    return checked(text, config::parse_listen_address(text, &why), why);
  }
 private:
  config::Address checked(std::string_view text, std::optional<config::Address> a,
                          const std::string& why) const {
    if (!a) throw UsageError{std::string(flag_) + ": \"" + std::string(text) + "\": " + why};
    return *a;
  }

  std::span<char*> args_;
  std::size_t pos_ = 0;
  std::string_view flag_;
  std::optional<std::string_view> inline_value_;
};

// The file named by --config must exist; the default one is used only when it does.
config::Result<config::Config> load(const std::optional<std::string>& path) {
  if (path) return config::load_config(*path);
  if (std::filesystem::exists(config::kDefaultConfigPath))
    return config::load_config(std::string(config::kDefaultConfigPath));
  return config::Config{};
}

int check_config(Flags flags) {
  std::optional<std::string> path;
  while (auto f = flags.next()) {
    if (*f == "--config") path = std::string(flags.value());
    else throw UsageError{"unknown flag " + std::string(*f)};
  }
  const std::string file = path.value_or(std::string(config::kDefaultConfigPath));
  auto parsed = config::load_config(file);
  if (parsed) parsed = config::finalize(std::move(*parsed), {}, file);
  if (!parsed) {
    std::fprintf(stderr, "%s\n", parsed.error().message().c_str());
    return 1;
  }
  std::printf("%s: valid\n", file.c_str());
  return 0;
}

int run(Flags flags) {
  std::optional<std::string> path;
  config::Overrides overrides;
  while (auto f = flags.next()) {
    if (*f == "--config") {
      path = std::string(flags.value());
    } else if (*f == "--listen") {
      overrides.listen.push_back(flags.local(flags.value()));
    } else if (*f == "--target") {
      overrides.targets.push_back(flags.target());
    } else if (*f == "--first-master") {
      overrides.first_master = flags.target();
    } else if (*f == "--admin") {
      // An empty value disables the admin server.
      const std::string_view v = flags.value();
      overrides.admin = v.empty() ? std::optional<config::Address>{}
                                  : std::optional(flags.local(v));
    } else if (*f == "--log-level") {
      const std::string_view v = flags.value();
      overrides.log_level = config::parse_log_level(v);
      if (!overrides.log_level) throw UsageError{"--log-level: \"" + std::string(v) + "\" is not a level"};
    } else {
      throw UsageError{"unknown flag " + std::string(*f)};
    }
  }
  const std::string file = path.value_or(std::string(config::kDefaultConfigPath));
  auto parsed = load(path);
  if (parsed) parsed = config::finalize(std::move(*parsed), overrides, file);
  if (!parsed) {
    std::fprintf(stderr, "apiserver-lb: %s\n", parsed.error().message().c_str());
    return 1;
  }
  setup_logging(parsed->log);
  try {
    // SIGHUP reads the same file with the same flags again.
    Controller controller(std::move(*parsed), [path, overrides, file] {
      auto again = load(path);
      if (again) again = config::finalize(std::move(*again), overrides, file);
      return again;
    });
    return controller.run();
  } catch (const std::exception& e) {
    spdlog::critical("cannot start: {}", e.what());
    return 1;
  }
}

}  // namespace

int run_cli(int argc, char** argv) {
  const std::span<char*> args(argv, static_cast<std::size_t>(argc));
  if (args.size() < 2) {
    std::fputs(kUsage.data(), stderr);
    return 2;
  }
  const std::string_view command = args[1];
  try {
    if (command == "run") return run(Flags(args.subspan(2)));
    if (command == "check-config") return check_config(Flags(args.subspan(2)));
    if (command == "targets") return targets_command(args.subspan(2));
    if (command == "status") return status_command(args.subspan(2));
    if (command == "check-san") return check_san_command(args.subspan(2));
    if (command == "version" || command == "--version") {
      std::printf("apiserver-lb %s\n", APILB_VERSION);
      return 0;
    }
    if (command == "help" || command == "--help" || command == "-h") {
      std::fputs(kUsage.data(), stdout);
      return 0;
    }
    throw UsageError{"unknown command \"" + std::string(command) + "\""};
  } catch (const UsageError& e) {
    std::fprintf(stderr, "apiserver-lb: %s\n%s", e.message.c_str(), kUsage.data());
    return 2;
  }
}

}  // namespace apilb::lb
